"""OSDP conformance (issue 15, item 5): one test per case of
faults/osdp_conformance, each citing its requirement. The long form is
`python -m faults.osdp_conformance` (faults/osdp_conformance/README.md)."""

from __future__ import annotations

import pytest

from faults.osdp_conformance.cases import CASES, Case
from tests.conftest import run_async


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(case: Case) -> None:
    run_async(case.run())
