"""Pages of changes from the cloud (`GET /changes`): the body as the cloud client
reads it (`edge.sync.cloud.decode_json` and `check_changes_page`, refusals are
`CloudError`), then every change checked against the example site's index as
`apply_changes` checks it (`edge.site.changes.check_batch`: a bad change is
refused on its own, a bad page is `DocError`) and turned into the rows that
would be written (`batch_ops`, `refused_ops`)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from edge.site.changes import batch_ops, check_batch, refused_ops
from edge.site.importer import commit_ops, stage_snapshot
from edge.site.index import load_index
from edge.site.model import SiteIndex
from edge.site.store import Store
from edge.site.syncdoc import DocError
from edge.sync.cloud import CloudError, check_changes_page, decode_json
from faults.fuzz.harness import CORPUS, Harness, scratch

# The example site's snapshot, from the snapshot harness's seeds.
EXAMPLE = CORPUS / "snapshot" / "example.json"


async def _import(state_dir: Path) -> SiteIndex:
    """Import through the real path (stream, validate, stage, flip, load)."""
    store = Store(state_dir / "gateway.db")
    await store.start()
    try:
        staged = await stage_snapshot(store, EXAMPLE, "mitte")
        await store.write(commit_ops(staged))
    finally:
        await store.stop()
    return load_index(state_dir / "gateway.db", staged.gen)


@functools.cache
def _index() -> SiteIndex:
    state_dir = scratch() / "changes-index"
    state_dir.mkdir(exist_ok=True)
    return asyncio.run(_import(state_dir))


def run(data: bytes) -> None:
    body = decode_json(data, "changes")
    check_changes_page(body, "changes")
    ix = _index()
    batch = check_batch(ix, body["changes"])
    batch_ops(batch, ix.generation)
    refused_ops(batch.refused, 0.0, "fuzz")


def prepare() -> None:
    _index()


HARNESS = Harness("changes", run, (CloudError, DocError), max_len=8192, prepare=prepare)
