"""Snapshot import: validate while streaming, stage a new generation, flip atomically.

The document is read and validated in a worker thread; rows are handed to the
store's writer in batches, and the thread waits for each batch to commit, so
memory stays bounded whatever the document's size. Nothing becomes visible
until `commit_generation`; a refused document leaves only a partial new
generation, which is deleted at once (or at the next start, after a crash).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edge.store import Rows, SqlOp, Store
from edge.syncdoc import DocError, SnapshotHeader, _Doc, read_snapshot_file

log = logging.getLogger("edge.import")

BATCH_ROWS = 2000


class ImportRefused(Exception):
    """The document was refused; the message names the path of the first problem."""


@dataclass
class StagedImport:
    gen: int
    header: SnapshotHeader
    members: int
    guests: int
    credentials: int
    seconds: float


async def stage_snapshot(store: Store, path: Path, site_id: str) -> StagedImport:
    """Validate `path` and write it as a new generation beside the current one."""
    loop = asyncio.get_running_loop()
    gen = await store.generation() + 1
    counts = {"member": 0, "guest": 0, "credentials": 0}
    started = time.monotonic()

    def run() -> SnapshotHeader:
        rows = Rows.new(gen)

        def flush() -> None:
            nonlocal rows
            ops: list[SqlOp] = rows.ops()
            rows = Rows.new(gen)
            if ops:
                # Back-pressure: wait until this batch is committed.
                asyncio.run_coroutine_threadsafe(store.write(ops), loop).result()

        def on_object(kind: str, obj: _Doc, _path: str) -> None:
            if kind == "site" and obj.id != site_id:  # type: ignore[attr-defined]
                raise DocError(
                    "site.id",
                    f"this gateway serves site {site_id!r}, not {obj.id!r}",  # type: ignore[attr-defined]
                )
            rows.add(kind, obj)
            if kind in ("member", "guest"):
                counts[kind] += 1
                counts["credentials"] += len(obj.credentials)  # type: ignore[attr-defined]
            if len(rows) >= BATCH_ROWS:
                flush()

        header = read_snapshot_file(str(path), on_object)
        flush()
        return header

    try:
        header = await asyncio.to_thread(run)
    except DocError as exc:
        await store.drop_generation(gen)
        raise ImportRefused(str(exc)) from None
    except BaseException:
        await store.drop_generation(gen)
        raise
    return StagedImport(
        gen=gen,
        header=header,
        members=counts["member"],
        guests=counts["guest"],
        credentials=counts["credentials"],
        seconds=time.monotonic() - started,
    )


def commit_ops(staged: StagedImport) -> list[SqlOp]:
    """The one transaction that makes the staged generation current."""
    h = staged.header
    values = {
        "gen": str(staged.gen),
        "cursor": h.cursor,
        "generated_at": h.generated_at.isoformat() if h.generated_at else None,
        "imported_at": str(time.time()),
        "site_id": h.site.id,
    }
    return [
        (
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (k, v),
        )
        for k, v in values.items()
    ]
