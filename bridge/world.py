"""A platform's records as the bridge last read them, in memory, with indexes.

Records are kept as the platform sent them (JSON objects), by entity and id.
A platform module declares which fields to index (`CoworkerId` of contracts,
`member` of OfficeRnD memberships, ...); a list-valued field is indexed by each
element. The engine is the only writer, from one task, so no locking.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

Record = dict[str, Any]


def _index_values(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for v in value:
            if isinstance(v, str | int) and not isinstance(v, bool):
                yield str(v)
    elif isinstance(value, str | int) and not isinstance(value, bool):
        yield str(value)


class World:
    def __init__(self, indexes: Mapping[str, Iterable[str]]) -> None:
        self._records: dict[str, dict[str, Record]] = {}
        self._fields = {entity: tuple(fields) for entity, fields in indexes.items()}
        self._index: dict[tuple[str, str], dict[str, set[str]]] = {
            (entity, f): {} for entity, fields in self._fields.items() for f in fields
        }

    def get(self, entity: str, rid: str) -> Record | None:
        return self._records.get(entity, {}).get(rid)

    def all(self, entity: str) -> Iterable[Record]:
        return self._records.get(entity, {}).values()

    def ids(self, entity: str) -> set[str]:
        return set(self._records.get(entity, {}))

    def count(self, entity: str) -> int:
        return len(self._records.get(entity, {}))

    def by(self, entity: str, field: str, value: object) -> list[Record]:
        """Records of `entity` whose indexed `field` is (or lists) `value`."""
        ids = self._index[(entity, field)].get(str(value), ())
        table = self._records.get(entity, {})
        return [table[i] for i in sorted(ids) if i in table]

    def put(self, entity: str, rid: str, record: Record) -> Record | None:
        table = self._records.setdefault(entity, {})
        old = table.get(rid)
        if old is not None:
            self._unindex(entity, rid, old)
        table[rid] = record
        for f in self._fields.get(entity, ()):
            for v in _index_values(record.get(f)):
                self._index[(entity, f)].setdefault(v, set()).add(rid)
        return old

    def remove(self, entity: str, rid: str) -> Record | None:
        old = self._records.get(entity, {}).pop(rid, None)
        if old is not None:
            self._unindex(entity, rid, old)
        return old

    def _unindex(self, entity: str, rid: str, record: Record) -> None:
        for f in self._fields.get(entity, ()):
            index = self._index[(entity, f)]
            for v in _index_values(record.get(f)):
                ids = index.get(v)
                if ids is not None:
                    ids.discard(rid)
                    if not ids:
                        del index[v]
