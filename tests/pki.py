"""Certificates made by the tests (openssl), for TLS to loopback servers."""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_NAME = "provider.test"  # also on the server certificate: a name a test proxy resolves


def make_pki(where: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 (and SERVER_NAME) and a client certificate."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    for name, cn in (("server", "127.0.0.1"), ("client", "box1")):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        (where / f"{name}.ext").write_text(
            f"subjectAltName=IP:{cn},DNS:{SERVER_NAME}\n" if name == "server" else ""
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            "-extfile",
            f"{name}.ext",
        )
