"""Every input a fuzz harness found (tests/fuzz_findings/<harness>/), replayed
through that harness: the parser must now refuse it with one of its documented
errors, or accept it. A file `<input>.expect` beside an input names the words
the refusal must contain (the error says what is wrong). faults/fuzz/README.md
says how a finding becomes one of these files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from faults.fuzz.harness import HARNESSES, Harness, check, load

FINDINGS = Path(__file__).parent / "fuzz_findings"
CASES = sorted(p for p in FINDINGS.glob("*/*") if p.is_file() and p.suffix != ".expect")


def _harness(name: str) -> Harness:
    harness = load(name)
    if harness.prepare is not None:
        harness.prepare()
    return harness


def test_findings_are_filed_under_harnesses() -> None:
    assert CASES, "no findings to replay"
    for folder in FINDINGS.iterdir():
        assert folder.name in HARNESSES, f"{folder}: no harness of that name"


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_finding_is_fixed(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    harness = _harness(path.parent.name)
    data = path.read_bytes()
    expect = path.with_name(path.name + ".expect")
    with caplog.at_level(logging.CRITICAL):
        if not expect.exists():
            check(harness, data)
            return
        with pytest.raises(harness.expected) as refused:
            harness.run(data)
    assert expect.read_text().strip() in str(refused.value)


def test_change_of_unhashable_kind_is_refused_by_path() -> None:
    """A change whose `kind` is a list or an object is refused on its own, by its
    path, and the valid change beside it still applies."""
    from edge.site.changes import check_batch
    from faults.fuzz.harnesses.changes import _index

    page = json.loads((FINDINGS / "changes" / "unhashable_kind").read_text())
    ix = _index()
    member = json.loads(
        (Path(__file__).parents[1] / "faults/fuzz/corpus/snapshot/example.json").read_text()
    )["members"][0]
    changes = [*page["changes"], {"op": "upsert", "kind": "member", "data": member}]
    batch = check_batch(ix, changes)
    assert [(r.path, "unknown kind" in r.error) for r in batch.refused] == [
        ("changes[0].kind", True),
        ("changes[1].kind", True),
    ]
    assert list(batch.final) == [("member", member["id"])]
