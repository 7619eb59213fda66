"""The web server's certificate: the operator's files, or one made here.

At first start without `cert_file`/`key_file`, a self-signed certificate
(ECDSA P-256, ten years) is written to `<state_dir>/web/cert.pem` with its key
in `key.pem` (mode 0600). Browsers and tablets pin it by its SHA-256
fingerprint, which `edgectl status` shows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.atomicfile import make_directory, write_atomic
from edge.config import Config

log = logging.getLogger("edge.web")

VALID_DAYS = 3650


def cert_paths(config: Config, state_dir: Path) -> tuple[Path, Path]:
    """(certificate, key): the operator's files, or the self-signed pair's."""
    web = config.web
    if web.cert_file is not None and web.key_file is not None:
        return web.cert_file, web.key_file
    return state_dir / "web" / "cert.pem", state_dir / "web" / "key.pem"


def ensure_self_signed(config: Config, state_dir: Path) -> None:
    """Make the self-signed pair unless it exists (or the operator gave files)."""
    if config.web.cert_file is not None:
        return
    cert_path, key_path = cert_paths(config, state_dir)
    if cert_path.exists() and key_path.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"edge {config.site.id}/{config.gateway.id}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-gateway (self-signed)"),
        ]
    )
    alt: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName(socket.gethostname()),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        host = ipaddress.ip_address(config.web.host)
    except ValueError:
        pass
    else:
        if not host.is_unspecified and not host.is_loopback:
            alt.append(x509.IPAddress(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # What strict verifiers (OpenSSL's X509_STRICT, as urllib3 2 uses) ask of a
        # certificate that is its own trust anchor.
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    make_directory(cert_path.parent, 0o700)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key first: a cut in between leaves no certificate, so the next start
    # makes a new pair rather than serving a certificate without its key.
    write_atomic(key_path, key_bytes, 0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("web: made a self-signed certificate, SHA-256 %s", fingerprint(cert_path))


def fingerprint(cert_path: Path) -> str | None:
    """The certificate's SHA-256 fingerprint as colon-separated hex, or None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return None
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def server_context(config: Config, state_dir: Path) -> ssl.SSLContext:
    cert_path, key_path = cert_paths(config, state_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
