"""The browser-test set-up works: Debian's Chromium, driven by Playwright, opens
the daemon's pages over its self-signed TLS. (CPU throttling, for tablet-class
hardware, is used and its effect printed by bench/panels.py: speed is measured
there, not in tests.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.test_web import free_port, metric, web_config

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_metrics_page_opens_in_chromium(
    daemon_factory: Any, example_doc: dict[str, Any], tmp_path: Path, page: Page
) -> None:
    port = free_port()
    d = daemon_factory(web_config(port)).start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(example_doc))
    d.ctl("import", str(snapshot))

    response = page.goto(f"https://127.0.0.1:{port}/metrics")
    assert response is not None
    assert response.status == 200
    text = page.inner_text("body")
    assert "edge_holders" in text
    assert metric(text, "edge_holders") == 13
