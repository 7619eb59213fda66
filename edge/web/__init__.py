"""The web server inside the daemon, on its event loop: `/metrics` for
Prometheus, behind TLS (a self-signed certificate by default).
"""
