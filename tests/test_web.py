"""The web server in the daemon: TLS by default, /metrics, refusals.

The daemon runs as a process; requests go over real TLS on loopback, trusting
only the certificate the daemon made (or was given).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, parse_config

SITE = '[site]\nid = "mitte"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web_config(port: int, extra: str = "") -> str:
    return f'{SITE}[web]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n{extra}'


def trusting(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    return ctx


def get(
    port: int, path: str, ctx: ssl.SSLContext | None, method: str = "GET", body: bytes = b""
) -> tuple[int, str]:
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        conn.request(method, path, body=body or None)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
    m = re.search(pattern, text, re.M)
    assert m, f"{name}{labels} not in:\n{text}"
    return float(m.group(1))


@pytest.fixture
def web_daemon(daemon_factory: Any, example_doc: dict[str, Any], tmp_path: Path) -> Any:
    port = free_port()
    d = daemon_factory(web_config(port)).start()
    snapshot = tmp_path / "site.json"
    snapshot.write_text(json.dumps(example_doc))
    d.ctl("import", str(snapshot))
    d.port = port
    return d


def test_self_signed_certificate_is_made_kept_private_and_shown(web_daemon: Any) -> None:
    cert = web_daemon.state_dir / "web" / "cert.pem"
    key = web_daemon.state_dir / "web" / "key.pem"
    assert cert.exists()
    assert key.stat().st_mode & 0o777 == 0o600
    ctx = trusting(cert)
    with (
        socket.create_connection(("127.0.0.1", web_daemon.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock,
    ):
        der = tls_sock.getpeercert(binary_form=True)
    assert der is not None
    served = hashlib.sha256(der).hexdigest().upper()
    status = web_daemon.ctl_json("status")
    assert status["web"]["url"] == f"https://127.0.0.1:{web_daemon.port}/"
    assert status["web"]["fingerprint"].replace(":", "") == served
    assert status["web"]["fingerprint"] in web_daemon.ctl("status").stdout
    # A client that trusts only the system's roots refuses it, as it should.
    with pytest.raises(ssl.SSLError):
        get(web_daemon.port, "/metrics", ssl.create_default_context())


def test_certificate_survives_a_restart(web_daemon: Any) -> None:
    cert = web_daemon.state_dir / "web" / "cert.pem"
    before = cert.read_bytes()
    web_daemon.stop()
    web_daemon.start()
    assert cert.read_bytes() == before
    assert get(web_daemon.port, "/metrics", trusting(cert))[0] == 200


def test_metrics_count_decisions_and_read_the_gateway(web_daemon: Any) -> None:
    ctx = trusting(web_daemon.state_dir / "web" / "cert.pem")
    status, text = get(web_daemon.port, "/metrics", ctx)
    assert status == 200
    assert metric(text, "edge_holders") == 13
    assert metric(text, "edge_site_generation") == 1
    assert metric(text, "edge_lockdown") == 0
    assert metric(text, "edge_cache_age_seconds") >= 0
    before = metric(text, "edge_outbox_pending")
    assert metric(text, "edge_outbox_oldest_pending_age_seconds") >= 0
    assert 'edge_decisions_total{door="front"' not in text

    for _ in range(2):
        web_daemon.ctl(
            "present", "--door", "front", "--card", "H10301:12:65000", "--json", check=False
        )
    web_daemon.ctl("lockdown", "on", "front")
    _, text = get(web_daemon.port, "/metrics", ctx)
    labels = '{door="front",granted="false",reason="unknown_credential"}'
    assert metric(text, "edge_decisions_total", labels) == 2
    assert metric(text, "edge_decision_seconds_count") == 2
    assert metric(text, "edge_outbox_pending") > before  # the denials and the lockdown
    # A dry run is not a decision taken.
    web_daemon.ctl("decide", "--door", "front", "--card", "H10301:12:65000", check=False)
    _, text = get(web_daemon.port, "/metrics", ctx)
    assert metric(text, "edge_decisions_total", labels) == 2


def test_bad_requests_are_refused_logged_and_change_nothing(web_daemon: Any) -> None:
    ctx = trusting(web_daemon.state_dir / "web" / "cert.pem")
    events = len(web_daemon.ctl_json("events", "--limit", "1000"))
    for path in ("/nothing", "/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/metrics/../x"):
        status, _ = get(web_daemon.port, path, ctx)
        assert status == 404, path
    assert get(web_daemon.port, "/metrics", ctx, method="POST", body=b"x" * 1000)[0] == 405
    assert get(web_daemon.port, "/metrics", ctx, method="DELETE")[0] == 405
    assert "web: GET /nothing from 127.0.0.1 refused: 404" in web_daemon.output()
    assert "web: POST /metrics from 127.0.0.1 refused: 405" in web_daemon.output()
    assert len(web_daemon.ctl_json("events", "--limit", "1000")) == events
    assert web_daemon.ctl_json("status")["ready"]


def test_plain_http_on_loopback_only(daemon_factory: Any) -> None:
    port = free_port()
    d = daemon_factory(web_config(port, "tls = false\n")).start()
    assert get(port, "/metrics", None)[0] == 200
    assert d.ctl_json("status")["web"] == {
        "url": f"http://127.0.0.1:{port}/",
        "fingerprint": None,
    }
    assert not (d.state_dir / "web").exists()

    with pytest.raises(ConfigError) as exc:
        parse_config(f'{SITE}[web]\nenabled = true\nhost = "0.0.0.0"\ntls = false\n')
    assert "web: tls = false is allowed on a loopback address only, not on '0.0.0.0'" in str(
        exc.value
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(f'{SITE}[web]\ncert_file = "/etc/x.crt"\n')
    assert "cert_file and key_file go together" in str(exc.value)


def test_operators_own_certificate(daemon_factory: Any, tmp_path: Path) -> None:
    # A certificate made elsewhere (here by openssl, if the box has it, else by a
    # first daemon) and given as files: the daemon serves it and makes none.
    own = tmp_path / "own"
    own.mkdir()
    if shutil.which("openssl"):
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=edge-test",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(own / "key.pem"),
                "-out",
                str(own / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )
    else:  # pragma: no cover - every CI box has openssl
        pytest.skip("openssl is not installed")
    port = free_port()
    d = daemon_factory(
        web_config(port, f'cert_file = "{own / "cert.pem"}"\nkey_file = "{own / "key.pem"}"\n')
    ).start()
    assert get(port, "/metrics", trusting(own / "cert.pem"))[0] == 200
    assert not (d.state_dir / "web").exists()
    assert d.ctl_json("status")["web"]["fingerprint"]


def test_web_is_off_by_default(daemon_factory: Any) -> None:
    d = daemon_factory().start()
    assert d.ctl_json("status")["web"] is None
    assert "web: listening" not in d.output()


def test_unreadable_key_stops_the_start_with_a_clear_error(
    daemon_factory: Any, tmp_path: Path
) -> None:
    port = free_port()
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    d = daemon_factory(web_config(port, f'cert_file = "{bad}"\nkey_file = "{bad}"\n'))
    d.start(wait=False)
    assert d.proc is not None
    code = d.proc.wait(30)
    assert code != 0
    assert f"web: cannot use the certificate {bad}" in d.output()
    assert "Traceback" not in d.output()
