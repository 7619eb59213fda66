"""The fuzz campaign's CI form: every harness under libFuzzer (atheris) for
100,000 executions or 60 s, whichever comes first, from the committed seed
corpus; no finding may come up. One test per harness, so that pytest-xdist
spreads them over the workers. The long form is `python -m faults.fuzz`
(faults/fuzz/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.fuzz.__main__ import run_harness
from faults.fuzz.harness import HARNESSES

EXECS = 100_000
SECONDS = 60


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HARNESSES))
def test_fuzz_smoke(name: str, tmp_path: Path) -> None:
    out = run_harness(name, EXECS, SECONDS, tmp_path / "findings")
    print(out.result_line, f"({out.seconds:.1f} s, CPU {out.cpu_seconds:.1f} s, {out.rate:.0f}/s)")
    shown = "\n".join(f"{p}: {p.read_bytes()[:200]!r}" for p in out.findings)
    assert not out.findings, f"{out.result_line}\n{shown}\n{out.log[-6000:]}"
    # Bounded either way: all the executions, or the time ran out.
    assert out.execs >= EXECS or out.seconds >= SECONDS, out.log[-3000:]


def test_workers_share_the_executions_and_the_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    out = run_harness("door_commands", 3001, SECONDS, tmp_path / "findings", corpus, workers=2)
    assert out.returncode == 0, out.log[-3000:]
    assert not out.findings, out.log[-3000:]
    assert out.execs == 3001, out.log[-3000:]  # 1,501 and 1,500
    assert out.log.count("Done 150") == 2, out.log[-3000:]
    assert any(corpus.iterdir()), "what the workers found is kept in the shared corpus"
    with pytest.raises(ValueError, match="workers"):
        run_harness("door_commands", 10, SECONDS, tmp_path / "findings", workers=0)
