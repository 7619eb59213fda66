"""The bridge's read engine with a small stateful fake platform: what a
complete, a partial and a failed read may delete, malformed records, held
sweeps, and the backoff of a read that keeps failing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from bridge.config import SiteSection, parse_config
from bridge.engine import PlatformSync
from bridge.http import PlatformHttp
from bridge.platforms.base import (
    Built,
    Entity,
    Key,
    Mapper,
    Platform,
    ReadError,
    RecordError,
    Write,
    parse_instant,
)
from bridge.store import BridgeStore
from bridge.world import Record, World
from tests.conftest import run_async

CONFIG = """
[platforms.fake]
type = "nexudus"
username = "ops@example.com"
backoff_min_s = 10
backoff_max_s = 100
[sites.s]
platform = "fake"
locations = ["1"]
"""


class FakeMapper(Mapper):
    def __init__(self, world: World) -> None:
        self.w = world

    def keys(self) -> set[Key]:
        return {("member", f"m-{i}") for i in self.w.ids("people")}

    def affected(self, entity: str, old: Record | None, new: Record | None) -> set[Key]:
        return {("member", f"m-{r['id']}") for r in (old, new) if r is not None}

    def build(self, key: Key, now: float) -> Built:
        rec = self.w.get("people", key[1][2:])
        if rec is None:
            return Built(None)
        obj = {
            "id": key[1],
            "name": rec["name"],
            "kind": "member",
            "billing": {"status": "ok", "grace_until": None},
        }
        return Built(obj, f"people {rec['id']}")


class FakePlatform(Platform):
    entities = (Entity("people", "Person"),)
    indexes: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.people: dict[str, Record] = {}
        self.hidden: set[str] = set()  # left out of list pages (a shifted offset)
        self.fail_on_page: int | None = None
        self.reads_one = 0

    def put(self, rid: str, name: object) -> None:
        stamp = datetime.now(UTC).isoformat()
        self.people[rid] = {"id": rid, "name": name, "updated": stamp}

    async def read(
        self, entity: Entity, since: datetime | None, world: World
    ) -> AsyncIterator[list[Record]]:
        listed = [r for i, r in sorted(self.people.items()) if i not in self.hidden]
        for page, start in enumerate(range(0, max(len(listed), 1), 2), start=1):
            if page == self.fail_on_page:
                raise ReadError(f"page {page}: 503 three times")
            yield [dict(r) for r in listed[start : start + 2]]

    async def read_one(self, entity: str, rid: str) -> Record | None:
        self.reads_one += 1
        rec = self.people.get(rid)
        return dict(rec) if rec is not None else None

    def record_id(self, entity: str, record: Record) -> str:
        return str(record["id"])

    def modified_at(self, entity: str, record: Record) -> datetime | None:
        return parse_instant(record["updated"])

    def check(self, entity: str, record: Record) -> None:
        if not isinstance(record.get("name"), str):
            raise RecordError("name", f"expected text, got {record.get('name')!r}")

    def mapper(
        self, world: World, site_id: str, site: SiteSection, pin_key: bytes | None
    ) -> Mapper:
        return FakeMapper(world)

    def person_ref(self, holder: str) -> str | None:
        return None

    async def write(self, w: Write, site: SiteSection, world: World) -> str:
        raise NotImplementedError

    async def find(self, w: Write, site: SiteSection, world: World) -> str | None:
        raise NotImplementedError


class Rig:
    def __init__(self, tmp_path: Path, people: int = 12) -> None:
        cfg = parse_config(CONFIG)
        self.cfg = cfg.platforms["fake"]
        self.store = BridgeStore(tmp_path / "bridge.db")
        http = PlatformHttp("fake", requests_per_s=100, timeout_s=1)
        self.platform = FakePlatform("fake", self.cfg, http, self.store, tmp_path)
        for i in range(people):
            self.platform.put(str(i), f"Person {i}")
        self.sync = PlatformSync(
            "fake", self.cfg, self.platform, dict(cfg.sites), self.store, tmp_path
        )
        self.changes: list[dict[str, Any]] = []
        self.sync.listeners.append(lambda site, changes: self.changes.extend(changes))

    async def start(self) -> None:
        await self.store.start()
        await self.sync.load()
        await self.sync._initial()
        await self.sync._build_site(self.sync.sites["s"])

    def members(self) -> set[str]:
        return {k[1] for k in self.sync.sites["s"].state.keys("member")}

    async def sweep(self, allow_deletes: bool = False) -> None:
        self.sync._allow_deletes = allow_deletes
        try:
            await self.sync._read_whole(self.platform.entity("people"))
        finally:
            self.sync._allow_deletes = False


def test_a_record_missing_from_a_complete_read_is_deleted_only_once_confirmed(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        r = Rig(tmp_path)
        await r.start()
        try:
            assert len(r.members()) == 12
            r.platform.hidden = {"3"}  # skipped by the paging, still on the platform
            del r.platform.people["5"]  # really gone
            await r.sweep()
            assert "m-3" in r.members()
            assert "m-5" not in r.members()
            assert r.platform.reads_one == 2
            assert [c for c in r.changes if c["op"] == "delete"] == [
                {"op": "delete", "kind": "member", "id": "m-5"}
            ]
        finally:
            await r.store.stop()

    run_async(go())


def test_a_read_that_fails_part_way_deletes_nothing_and_backs_off(tmp_path: Path) -> None:
    async def go() -> None:
        r = Rig(tmp_path)
        await r.start()
        try:
            for rid in ("7", "8", "9"):
                del r.platform.people[rid]
            r.platform.fail_on_page = 3
            e = r.platform.entity("people")
            try:
                await r.sync._read_whole(e)
            except ReadError as exc:
                await r.sync._failed(e, exc)
            assert len(r.members()) == 12
            state = r.sync.reads["people"]
            assert state.error == "page 3: 503 three times"
            # Not again at once: after backoff_min_s doubled.
            assert r.sync._due_at(e) >= r.sync.clock() + 19
            view = r.sync.view()["entities"]["people"]
            assert view["error"] == "page 3: 503 three times"
        finally:
            await r.store.stop()

    run_async(go())


def test_a_malformed_record_keeps_its_last_good_version(tmp_path: Path) -> None:
    async def go() -> None:
        r = Rig(tmp_path)
        await r.start()
        try:
            r.platform.put("2", 42)
            r.platform.put("4", "Person Four")
            await r.sweep()
            state = r.sync.sites["s"].state
            assert json.loads(state.text(("member", "m-2")) or "{}")["name"] == "Person 2"
            assert json.loads(state.text(("member", "m-4")) or "{}")["name"] == "Person Four"
            assert r.sync.bad[("people", "2")][:2] == ("name", "expected text, got 42")
            # Stored, so a restart still shows it.
            rows = await r.store.fetchall("SELECT entity, id, field FROM bad_records")
            assert [tuple(row) for row in rows] == [("people", "2", "name")]
            r.platform.put("2", "Person Two")
            await r.sweep()
            assert ("people", "2") not in r.sync.bad
            assert json.loads(state.text(("member", "m-2")) or "{}")["name"] == "Person Two"
        finally:
            await r.store.stop()

    run_async(go())


def test_a_sweep_that_would_delete_too_much_is_held_until_allowed(tmp_path: Path) -> None:
    async def go() -> None:
        r = Rig(tmp_path)
        await r.start()
        try:
            for rid in ("0", "1", "2", "3"):
                del r.platform.people[rid]
            await r.sweep()
            held = r.sync.reads["people"].held
            assert held is not None
            assert "would delete 4 of 12 people" in held
            assert len(r.members()) == 12
            await r.sweep(allow_deletes=True)
            assert len(r.members()) == 8
            assert r.sync.reads["people"].held is None
        finally:
            await r.store.stop()

    run_async(go())


def test_the_site_and_its_cursor_survive_a_restart(tmp_path: Path) -> None:
    async def go() -> None:
        r = Rig(tmp_path)
        await r.start()
        seq = r.sync.sites["s"].state.seq
        await r.store.stop()
        again = Rig(tmp_path)
        await again.store.start()
        try:
            await again.sync.load()
            rt = again.sync.sites["s"]
            assert again.sync.initial_done is not None
            assert rt.ready_at is not None
            assert rt.state.seq == seq
            assert len(again.members()) == 12
        finally:
            await again.store.stop()

    run_async(go())
