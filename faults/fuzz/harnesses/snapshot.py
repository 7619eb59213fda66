"""`edge-sync/1` snapshot documents, through both readers the importer uses: the
fast one (`edge.site.fastdoc.read_snapshot_fast`, which refuses by `Declined`)
and the detailed one (`edge.site.syncdoc.read_snapshot`, which refuses by
`DocError`). The fast reader promises to decline whatever the detailed one
would refuse, so a document the fast reader accepts and the detailed one
refuses is a finding too."""

from __future__ import annotations

import io

from edge.site.fastdoc import Declined, read_snapshot_fast
from edge.site.store import Rows
from edge.site.syncdoc import DocError, _Doc, _Yielding, read_snapshot
from faults.fuzz.harness import Finding, Harness


def _object(kind: str, obj: _Doc, path: str) -> None:
    pass


def _rows(rows: Rows) -> None:
    pass


def run(data: bytes) -> None:
    try:
        read_snapshot_fast(data, 1, _object, _rows, 1000)
        fast_accepted = True
    except Declined:
        fast_accepted = False
    try:
        read_snapshot(lambda: _Yielding(io.BytesIO(data)), _object)
    except DocError as exc:
        if fast_accepted:
            raise Finding(f"the fast reader accepted what the detailed one refuses: {exc}") from exc
        raise


HARNESS = Harness("snapshot", run, (DocError,), max_len=16384)
