"""Disk and I/O faults in the real daemon (issue 15, item 3): the CI form of
`python -m faults.iofault` (faults/iofault/README.md).

The daemon runs under libfiu's `fiu-run -x`; `fiu-ctrl` makes pwrite fail with
ENOSPC and EIO, fsync/fdatasync and open with EIO, window after window, while
cards are presented at the admin socket and badged at a simulated OSDP
reader, with uploads to the cloud simulator in flight. About 15 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.iofault.campaign import FAULTS, available, run_campaign

pytestmark = pytest.mark.skipif(
    not available(), reason="fiu-run/fiu-ctrl missing (scripts/bootstrap installs fiu-utils)"
)


def test_disk_faults_keep_doors_deciding_and_nothing_unwritten_counts(tmp_path: Path) -> None:
    faults = 2 * len(FAULTS)  # every kind twice, half of them with an upload in flight
    result = run_campaign(faults, tmp_path, seed=15)
    assert result.violations == [], "\n".join(result.violations)
    assert result.faults == faults
    # The faults did strike: writes were refused, logged once per window and
    # recovered, and uploads answered while the disk failed were sent again.
    struck = sum(f.hits_commits for f in FAULTS) * 2
    assert result.not_recorded >= struck
    assert result.failing_lines == result.recovered_lines == struck
    assert result.resent > 0
    assert result.recorded > result.faults  # each window's recovery, at least
