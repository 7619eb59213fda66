"""One site as the bridge publishes it over edge-sync/1: objects, cursor, changes.

Mapped objects come in as candidates (an object, or None for "not in the
site"); `SiteState.stage` turns them into the changes a gateway will apply:
- each object is checked with the gateway's own validation (`edge.site.syncdoc`),
  so a gateway never refuses what the bridge serves; an object that fails
  keeps its last good version, and the refusal is recorded with its path;
- references must resolve inside the site as it will be: a booking whose
  member left, or a member whose company is gone, leaves the site too
  (and is listed as refused, saying which reference is missing);
- one card belongs to one holder: a card another holder already has is left
  off the newcomer, with a refusal;
- an object whose JSON text is unchanged makes no change at all.

Changes come out in an order a gateway can apply one by one: upserts from the
site down to bookings, then deletions from bookings up. Nothing here does I/O;
the engine commits what `stage` returns and then calls `commit`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.site.syncdoc import KINDS, DocError, GuestDoc, MemberDoc, References, validate_object

log = logging.getLogger("bridge.site")

Key = tuple[str, str]  # (kind, id)
KIND_ORDER = tuple(KINDS)
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def path_of(key: Key) -> str:
    kind, oid = key
    return f"{KINDS[kind][0]}[{oid}]" if kind != "site" else "site"


@dataclass(frozen=True)
class Refusal:
    """Why an object is not (or not as mapped) in the site, for `status`."""

    key: Key
    path: str
    reason: str
    source: str  # the platform record it came from ("coworkers 123"), or ""

    def text(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        return f"{self.path}: {self.reason}{where}"


@dataclass
class Staged:
    """What one batch changes: the change list and the new texts (None: deleted)."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    texts: dict[Key, str | None] = field(default_factory=dict)
    refusals: dict[Key, Refusal] = field(default_factory=dict)  # new or still standing
    cleared: set[Key] = field(default_factory=set)  # refusals that no longer stand
    entries: dict[Key, Any] = field(default_factory=dict)  # the new entries, for commit


@dataclass
class _Entry:
    text: str
    refs: tuple[Key, ...]
    cards: tuple[str, ...]


def _refs(kind: str, doc: Any, path: str) -> tuple[Key, ...]:
    out: list[Key] = []
    for _, ref_kind, ref in References.of(doc, path):
        if ref_kind == "holder":
            out.append(("holder", ref))
        else:
            out.append((ref_kind, ref))
    return tuple(out)


def _cards(doc: Any) -> tuple[str, ...]:
    if isinstance(doc, MemberDoc | GuestDoc):
        return tuple(c.key() for c in doc.credentials if c.type == "card")
    return ()


class SiteState:
    def __init__(self, site_id: str, seq: int = 0) -> None:
        self.site_id = site_id
        self.seq = seq
        self._entries: dict[Key, _Entry] = {}
        self._referrers: dict[Key, set[Key]] = {}
        self._card_owner: dict[str, str] = {}
        self.refusals: dict[Key, Refusal] = {}

    # --- reading ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def text(self, key: Key) -> str | None:
        entry = self._entries.get(key)
        return entry.text if entry else None

    def keys(self, kind: str | None = None) -> list[Key]:
        return [k for k in self._entries if kind is None or k[0] == kind]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, _ in self._entries:
            out[kind] = out.get(kind, 0) + 1
        return out

    def snapshot_parts(self) -> Iterator[str]:
        """The snapshot's object sections as JSON text pieces (the caller adds the head)."""
        by_kind: dict[str, list[str]] = {kind: [] for kind in KIND_ORDER}
        for (kind, _), entry in self._entries.items():
            by_kind[kind].append(entry.text)
        site = by_kind.pop("site")
        yield ',"site":' + (site[0] if site else "null")
        for kind, texts in by_kind.items():
            yield f',"{KINDS[kind][0]}":[' + ",".join(texts) + "]"

    # --- loading ---------------------------------------------------------------------

    def load(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Published objects from the store: (kind, id, text)."""
        for kind, oid, text in rows:
            key = (kind, oid)
            try:
                doc = validate_object(kind, json.loads(text), path_of(key))
            except (DocError, ValueError) as exc:  # stored by an older bridge, say
                log.warning("site %s: stored %s no longer valid: %s", self.site_id, key, exc)
                doc = None
            refs = _refs(kind, doc, path_of(key)) if doc is not None else ()
            self._set(key, _Entry(text, refs, _cards(doc) if doc is not None else ()))

    # --- staging a batch -----------------------------------------------------------

    def stage(
        self,
        candidates: Mapping[Key, dict[str, Any] | None],
        sources: Mapping[Key, str] | None = None,
        problems: Mapping[Key, list[tuple[str, str]]] | None = None,
    ) -> Staged:
        """The changes that bring the site to `candidates` (keys not named keep
        their objects). `problems` are what the mapper already left out of an
        object (a card it could not read), kept as refusals beside the object."""
        sources = sources or {}
        staged = Staged()
        new: dict[Key, _Entry | None] = {}
        docs: dict[Key, Any] = {}
        for key, obj in candidates.items():
            source = sources.get(key, "")
            for path, reason in (problems or {}).get(key, []):
                staged.refusals[key] = Refusal(key, path, reason, source)
            if obj is None:
                if key in self._entries:
                    new[key] = None
                continue
            try:
                docs[key] = validate_object(key[0], obj, path_of(key))
            except DocError as exc:
                # Refused: the last good version (if any) stays.
                staged.refusals[key] = Refusal(key, exc.path, exc.message, source)
        owners = self._owners_after(candidates, docs)
        for key, doc in docs.items():
            obj = candidates[key]
            assert obj is not None
            entry = self._entry(key, obj, doc, owners, sources.get(key, ""), staged)
            if key not in staged.refusals and key in self.refusals:
                staged.cleared.add(key)
            current = self._entries.get(key)
            if current is None or current.text != entry.text:
                new[key] = entry
        self._settle(new, sources, staged)
        for key, maybe in new.items():
            staged.texts[key] = maybe.text if maybe is not None else None
        upserts = sorted((k for k, e in new.items() if e is not None), key=lambda k: _RANK[k[0]])
        deletes = sorted((k for k, e in new.items() if e is None), key=lambda k: -_RANK[k[0]])
        for key in upserts:
            up = new[key]
            assert up is not None
            staged.changes.append({"op": "upsert", "kind": key[0], "data": json.loads(up.text)})
        for key in deletes:
            staged.changes.append({"op": "delete", "kind": key[0], "id": key[1]})
        staged.entries = new
        return staged

    def _owners_after(
        self, candidates: Mapping[Key, Any], docs: Mapping[Key, Any]
    ) -> dict[str, str]:
        """Card owners once this batch is in: a holder of the batch that drops a card
        (or leaves) frees it for another one of the batch."""
        owners = dict(self._card_owner)
        for key in candidates:
            if key[0] in ("member", "guest"):
                kept = set(_cards(docs[key])) if key in docs else set()
                for card in self._entries[key].cards if key in self._entries else ():
                    if card not in kept and owners.get(card) == key[1]:
                        del owners[card]
        return owners

    def _entry(
        self,
        key: Key,
        obj: dict[str, Any],
        doc: Any,
        owners: dict[str, str],
        source: str,
        staged: Staged,
    ) -> _Entry:
        path = path_of(key)
        cards = _cards(doc)
        taken = [c for c in cards if owners.setdefault(c, key[1]) != key[1]]
        if taken:
            # One card, one holder: the holder who has it keeps it.
            for card in taken:
                staged.refusals[key] = Refusal(
                    key,
                    f"{path}.credentials",
                    f"card {card} already belongs to {owners[card]!r}",
                    source,
                )
            obj = dict(obj)
            obj["credentials"] = [
                c
                for c, ck in zip(obj.get("credentials") or [], _credential_keys(doc), strict=True)
                if ck not in taken
            ]
            doc = validate_object(key[0], obj, path)
            cards = _cards(doc)
        return _Entry(dumps(obj), _refs(key[0], doc, path), cards)

    def _settle(
        self, new: dict[Key, _Entry | None], sources: Mapping[Key, str], staged: Staged
    ) -> None:
        """Drop every object whose references do not resolve in the site as it will be."""

        def present(ref: Key) -> bool:
            if ref[0] == "holder":
                return present(("member", ref[1])) or present(("guest", ref[1]))
            if ref in new:
                return new[ref] is not None
            return ref in self._entries

        check = {k for k, e in new.items() if e is not None}
        for key, entry in new.items():
            if entry is None:
                check |= self._referrers.get(key, set())
                if key[0] in ("member", "guest"):
                    check |= self._referrers.get(("holder", key[1]), set())
        while check:
            key = check.pop()
            entry = new[key] if key in new else self._entries.get(key)
            if entry is None:
                continue
            missing = next((r for r in entry.refs if not present(r)), None)
            if missing is None:
                continue
            label = "member or guest" if missing[0] == "holder" else missing[0].replace("_", " ")
            staged.refusals[key] = Refusal(
                key,
                path_of(key),
                f"{label} {missing[1]!r} is not in the site",
                sources.get(key, ""),
            )
            staged.cleared.discard(key)
            if key in self._entries:
                new[key] = None
                check |= self._referrers.get(key, set())
                check |= self._referrers.get(("holder", key[1]), set())
            else:
                new.pop(key, None)

    def commit(self, staged: Staged) -> None:
        """Make a staged batch current (after it is durable); advances the cursor."""
        for key, entry in staged.entries.items():
            if entry is None:
                self._drop(key)
            else:
                self._set(key, entry)
        for key in staged.cleared:
            self.refusals.pop(key, None)
        self.refusals.update(staged.refusals)
        self.seq += len(staged.changes)

    # --- bookkeeping ----------------------------------------------------------------

    def _set(self, key: Key, entry: _Entry) -> None:
        self._drop(key)
        self._entries[key] = entry
        for ref in entry.refs:
            self._referrers.setdefault(ref, set()).add(key)
        for card in entry.cards:
            self._card_owner[card] = key[1]

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is None:
            return
        for ref in old.refs:
            referrers = self._referrers.get(ref)
            if referrers is not None:
                referrers.discard(key)
                if not referrers:
                    del self._referrers[ref]
        for card in old.cards:
            if self._card_owner.get(card) == key[1]:
                del self._card_owner[card]


def _credential_keys(doc: Any) -> list[str]:
    return [c.key() for c in doc.credentials] if isinstance(doc, MemberDoc | GuestDoc) else []
