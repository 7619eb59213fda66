"""Snapshot import: validate, stage a new generation, flip atomically.

The heavy part (parsing, validating and writing 100,000 members) runs in a
child process (`python -m edge.site.importer`), niced, with its own database
connection: in a thread it would compete with the event loop for the
interpreter, and decisions would wait behind it. The child writes the new
generation beside the current one in small transactions; nothing becomes
visible until the daemon commits `commit_ops`. A refused document leaves only
a partial generation, which is deleted at once (or at the next start, after
a crash of either process).

The child reads with the fast reader (`edge.site.fastdoc`: the whole file in
memory, members decoded by msgspec; about 120 MB at 100,000 members) and,
for a document it declines, with the detailed one (`edge.site.syncdoc`:
streamed, in bounded memory), which accepts it or words the refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from edge.site.sqlite import SqlOp, connect_sync
from edge.site.store import GENERATION_TABLES, Rows, Store, drop_batch_sql
from edge.site.syncdoc import DocError, _Doc, read_snapshot_file

log = logging.getLogger("edge.import")

BATCH_ROWS = 2000
NICENESS = 5


class ImportRefused(Exception):
    """The document was refused; the message names the path of the first problem."""


@dataclass
class StagedImport:
    gen: int
    cursor: str
    generated_at: datetime | None
    site: str
    members: int
    guests: int
    credentials: int
    seconds: float


async def stage_snapshot(store: Store, path: Path, site_id: str) -> StagedImport:
    """Validate `path` and write it as a new generation beside the current one."""
    gen = await store.generation() + 1
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge.site.importer",
        "--db",
        str(store.path),
        "--gen",
        str(gen),
        "--site",
        site_id,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.drop_generation(gen)
        raise
    try:
        report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {}
    if proc.returncode != 0 or not report.get("ok"):
        await store.drop_generation(gen)
        if "problem" in report:
            raise ImportRefused(report["problem"])
        raise RuntimeError(
            f"the import process failed (exit {proc.returncode}): "
            f"{err.decode(errors='replace').strip()[-2000:]}"
        )
    if "declined" in report:
        # A valid document the fast reader could not vouch for: correct, only slower.
        log.info(
            "import: read by the detailed reader (the fast one declined: %s)",
            report["declined"][:200],
        )
    generated = report["generated_at"]
    return StagedImport(
        gen=gen,
        cursor=report["cursor"],
        generated_at=datetime.fromisoformat(generated) if generated else None,
        site=report["site"],
        members=report["members"],
        guests=report["guests"],
        credentials=report["credentials"],
        seconds=time.monotonic() - started,
    )


def commit_ops(staged: StagedImport) -> list[SqlOp]:
    """The one transaction that makes the staged generation current."""
    values = {
        "gen": str(staged.gen),
        "cursor": staged.cursor,
        "generated_at": staged.generated_at.isoformat() if staged.generated_at else None,
        "imported_at": str(time.time()),
        "site_id": staged.site,
    }
    return [
        (
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (k, v),
        )
        for k, v in values.items()
    ]


# --- the child process --------------------------------------------------------------


def stage_into(conn: sqlite3.Connection, path: Path, gen: int, site_id: str) -> dict[str, Any]:
    """Validate the document and write its rows as generation `gen` (in this process).

    The fast reader first (`edge.site.fastdoc`); a document it declines is read
    again by the detailed one, which accepts it after all or refuses it with the
    path of its problem, worded as it always was.
    """
    # Here, not at the top: the daemon imports this module, only the child reads.
    from edge.site.fastdoc import Declined

    try:
        return _stage_fast(conn, path, gen, site_id)
    except Declined as exc:
        declined = str(exc)
    # What the fast reader wrote goes; the detailed reader writes the generation anew.
    delete_generation(conn, gen)
    report = _stage_detailed(conn, path, gen, site_id)
    report["declined"] = declined
    return report


def _check_site(site_id: str, kind: str, obj: _Doc) -> None:
    if kind == "site" and obj.id != site_id:  # type: ignore[attr-defined]
        raise DocError(
            "site.id",
            f"this gateway serves site {site_id!r}, not {obj.id!r}",  # type: ignore[attr-defined]
        )


def _write(conn: sqlite3.Connection, rows: Rows) -> None:
    ops = rows.ops()
    if not ops:
        return
    with conn:  # one short transaction per batch: the daemon's writer gets its turns
        for sql, params in ops:
            conn.executemany(sql, params)


def _stage_fast(conn: sqlite3.Connection, path: Path, gen: int, site_id: str) -> dict[str, Any]:
    from edge.site.fastdoc import Declined, read_snapshot_fast

    objects = Rows.new(gen)

    def on_object(kind: str, obj: _Doc, _path: str) -> None:
        _check_site(site_id, kind, obj)
        objects.add(kind, obj)

    try:
        snap = read_snapshot_fast(
            path.read_bytes(), gen, on_object, partial(_write, conn), BATCH_ROWS
        )
        _write(conn, objects)
    except Declined:
        raise
    except Exception as exc:  # whatever stops it, the detailed reader decides
        raise Declined(f"{type(exc).__name__}: {exc}") from exc
    header = snap.header
    return {
        "ok": True,
        "reader": "fast",
        "cursor": header.cursor,
        "generated_at": header.generated_at.isoformat() if header.generated_at else None,
        "site": header.site.id,
        "members": snap.members,
        "guests": snap.guests,
        "credentials": snap.credentials,
    }


def _stage_detailed(conn: sqlite3.Connection, path: Path, gen: int, site_id: str) -> dict[str, Any]:
    counts = {"member": 0, "guest": 0, "credentials": 0}
    rows = Rows.new(gen)

    def flush() -> None:
        nonlocal rows
        batch, rows = rows, Rows.new(gen)
        _write(conn, batch)

    def on_object(kind: str, obj: _Doc, _path: str) -> None:
        _check_site(site_id, kind, obj)
        rows.add(kind, obj)
        if kind in ("member", "guest"):
            counts[kind] += 1
            counts["credentials"] += len(obj.credentials)  # type: ignore[attr-defined]
        if len(rows) >= BATCH_ROWS:
            flush()

    header = read_snapshot_file(str(path), on_object)
    flush()
    return {
        "ok": True,
        "reader": "detailed",
        "cursor": header.cursor,
        "generated_at": header.generated_at.isoformat() if header.generated_at else None,
        "site": header.site.id,
        "members": counts["member"],
        "guests": counts["guest"],
        "credentials": counts["credentials"],
    }


def delete_generation(conn: sqlite3.Connection, gen: int, batch: int = 5000) -> None:
    """Delete what was written of generation `gen`, in short transactions."""
    for table in GENERATION_TABLES:
        while True:
            with conn:
                deleted = conn.execute(drop_batch_sql(table), (gen, gen, batch)).rowcount
            if deleted < batch:
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.site.importer", description="Stage a snapshot as a new generation."
    )
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--gen", type=int, required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)  # decisions come first, on any number of cores
    conn = connect_sync(args.db)
    # Staged rows need no fsync of their own: the daemon's commit that makes
    # them current runs with synchronous=FULL and fsyncs the WAL they are in.
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        report = stage_into(conn, args.file, args.gen, args.site)
    except DocError as exc:
        report = {"ok": False, "problem": str(exc)}
    except OSError as exc:
        report = {"ok": False, "problem": f"(document): cannot read: {exc}"}
    finally:
        conn.close()
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
