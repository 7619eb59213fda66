"""OSDP conformance (issue 15, item 5): one test per case of
faults/osdp_conformance, each citing its requirement. The long form is
`python -m faults.osdp_conformance` (faults/osdp_conformance/README.md).

Plus the gateway's side of Annex D.8: a key file holding the public default
key is refused outside install mode, as the daemon reports it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from drivers.osdp import SCBK_D
from edge.secrets import write_secret
from faults.osdp_conformance.cases import CASES, Case
from hwsim.site import SimDoor, SimSite, SiteThread
from tests.conftest import run_async


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(case: Case) -> None:
    run_async(case.run())


def test_gateway_refuses_a_key_file_holding_scbk_d(tmp_path: Path, daemon_factory: Any) -> None:
    """SIA OSDP 2.2 Annex D.8: SCBK-D is for install mode only. A reader's key file
    holding it is a fault that names the file; the reader is never used, in clear
    or not, and the door's other reader goes on."""
    (tmp_path / "site").mkdir()
    site = SimSite(tmp_path / "site", [SimDoor("front", "osdp", "osdp", exit_button=False)])
    with SiteThread(site):
        daemon = daemon_factory('[site]\nid = "mitte"\n' + site.config())
        site.provision(daemon.state_dir)
        write_secret(daemon.state_dir, "osdp-front-in", SCBK_D.hex().encode())
        daemon.start()

        def readers() -> dict[str, dict[str, Any]]:
            return {r["name"]: r for r in daemon.ctl_json("status")["readers"]}

        deadline = time.monotonic() + 15
        while readers()["front-out"]["state"] != "online (secure channel)":
            assert time.monotonic() < deadline, readers()
            time.sleep(0.05)
        front_in = readers()["front-in"]
        assert front_in["state"] == "offline"
        assert "holds the default key SCBK-D (install mode only)" in front_in["fault"]
        assert "osdp-front-in" in front_in["fault"]
        daemon.stop()
