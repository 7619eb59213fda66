"""The recorder logs an event only once its transaction has committed."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.gateway import Gateway
from tests.conftest import run_async, started_gateway


class OutboxAtLogTime(logging.Handler):
    """For each `edge.events` line, whether its event was in the database file right
    then, read through a connection of its own (what another process would see)."""

    def __init__(self, db_path: Path) -> None:
        super().__init__()
        self.db_path = db_path
        self.seen: list[tuple[int, str, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        with sqlite3.connect(self.db_path) as db:
            rows = db.execute("SELECT body FROM outbox").fetchall()
        db.close()
        line = record.getMessage()
        if "probe-door" not in line:
            return  # the gateway's own events (gateway.started) commit around ours
        self.seen.append((record.levelno, line, any(self.marker in r[0] for r in rows)))

    marker = ""


def _record(tmp_path: Path, extra_ops: list[Any]) -> tuple[list[tuple[int, str, bool]], Any]:
    async def go() -> tuple[list[tuple[int, str, bool]], Any]:
        gw: Gateway = await started_gateway(tmp_path)
        handler = OutboxAtLogTime(gw.site.db_path)
        logger = logging.getLogger("edge.events")
        logger.addHandler(handler)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            ev = gw.recorder.event("door.opened", time.time(), door="probe-door")
            handler.marker = ev["id"]
            outcome: Any
            try:
                outcome = await gw.recorder.record([ev], extra_ops)
            except sqlite3.Error as exc:
                outcome = exc
            return handler.seen, outcome
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            await gw.stop()

    return run_async(go())


def test_an_event_is_logged_after_its_commit(tmp_path: Path) -> None:
    seen, outcome = _record(tmp_path, [])
    assert outcome == 1  # the outbox row
    assert seen == [(logging.INFO, "door.opened door=probe-door", True)]


def test_an_event_whose_commit_fails_is_logged_as_not_recorded(tmp_path: Path) -> None:
    # A statement that fails rolls back its whole batch, the event's outbox row with it.
    seen, outcome = _record(tmp_path, [("INSERT INTO no_such_table VALUES (1)", ())])
    assert isinstance(outcome, sqlite3.OperationalError)
    assert seen == [
        (
            logging.ERROR,
            "door.opened door=probe-door NOT RECORDED (no such table: no_such_table)",
            False,
        )
    ]
