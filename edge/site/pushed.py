"""What a pushed change replaced, until a pull puts it back in cursor order.

A push applies changes at once, outside the cursor's order: it can arrive after
a pull already applied a newer change to the same object (the pull ran first,
or the push was delivered late). The pull that follows a push starts at the
cursor, which is past that newer change, so it does not bring it again.

So a push keeps, durably and in the transaction that applies it, the rows each
object had before it (`push_undo`, the first push's rows win). A pull page that
carries the object supersedes them: its change is in cursor order. A pull that
started after the push and read the changes to the end without carrying the
object proves the push brought nothing newer than the cursor: the object gets
its rows back (`restore_ops`), unless they are already what the push left.

Objects are keyed as stored: a member's or guest's rows are one `holder`, any
other kind its own (`kind`, `id`) in `objects`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from edge.site.changes import HOLDER_KINDS, HOLDER_TABLES, Batch, clear_ops
from edge.site.sqlite import Many, SqliteStore, SqlOp

Key = tuple[str, str]


def key_of(kind: str, oid: str) -> Key:
    return ("holder", oid) if kind in HOLDER_KINDS else (kind, oid)


def touched(batch: Batch) -> set[Key]:
    """Every stored object the batch writes, a card's former holder included."""
    keys = {key_of(kind, oid) for kind, oid in batch.final}
    keys |= {("holder", holder) for holder, _, _ in batch.moved_cards}
    return keys


async def rows_of(store: SqliteStore, gen: int, key: Key) -> str:
    """The object's rows in generation `gen`, as JSON ({table: [row, ...]})."""
    kind, oid = key
    out: dict[str, list[list[Any]]] = {}
    if kind == "holder":
        out["holders"] = [
            list(r)
            for r in await store.fetchall(
                "SELECT * FROM holders WHERE gen = ? AND id = ?", (gen, oid)
            )
        ]
        for table in HOLDER_TABLES[1:]:
            out[table] = [
                list(r)
                for r in await store.fetchall(
                    f"SELECT * FROM {table} WHERE gen = ? AND holder = ?",  # noqa: S608
                    (gen, oid),
                )
            ]
    else:
        out["objects"] = [
            list(r)
            for r in await store.fetchall(
                "SELECT * FROM objects WHERE gen = ? AND kind = ? AND id = ?", (gen, kind, oid)
            )
        ]
    return json.dumps(out, separators=(",", ":"))


def kept_ops(gen: int, saved: dict[Key, str]) -> list[SqlOp]:
    """Keep each object's rows from before the push, unless an earlier push kept them."""
    if not saved:
        return []
    return [
        (
            "INSERT OR IGNORE INTO push_undo (gen, kind, id, rows) VALUES (?, ?, ?, ?)",
            Many((gen, kind, oid, rows) for (kind, oid), rows in saved.items()),
        )
    ]


def superseded_ops(gen: int, keys: Iterable[Key]) -> list[SqlOp]:
    """A pull page carried these objects: what pushes kept for them is moot."""
    rows = [(gen, kind, oid) for kind, oid in keys]
    if not rows:
        return []
    return [("DELETE FROM push_undo WHERE gen = ? AND kind = ? AND id = ?", Many(rows))]


async def restore_ops(store: SqliteStore, gen: int, key: Key, rows: str) -> list[SqlOp]:
    """Put the object's kept rows back in place of what pushes left.

    A card another holder holds by now stays with it: one card belongs to at
    most one holder.
    """
    kind, oid = key
    saved: dict[str, list[list[Any]]] = json.loads(rows)
    if kind == "holder":
        ops = clear_ops(gen, [oid], [])
        creds = saved.get("credentials", [])  # rows (gen, holder, id, key, active)
        if creds:
            marks = ",".join("?" * len(creds))
            taken = {
                k
                for (k,) in await store.fetchall(
                    f"SELECT key FROM credentials WHERE gen = ? AND holder != ? "  # noqa: S608
                    f"AND key IN ({marks})",
                    (gen, oid, *(r[3] for r in creds)),
                )
            }
            saved["credentials"] = [r for r in creds if r[3] not in taken]
    else:
        ops = clear_ops(gen, [], [key])
    for table, table_rows in saved.items():
        if table_rows:
            marks = ",".join("?" * len(table_rows[0]))
            ops.append((f"INSERT INTO {table} VALUES ({marks})", Many(table_rows)))  # noqa: S608
    ops.append(("DELETE FROM push_undo WHERE gen = ? AND kind = ? AND id = ?", (gen, kind, oid)))
    return ops
