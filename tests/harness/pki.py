"""Certificates for test and bench registries: a CA made once per directory and server
certificates it signs, with openssl."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


def make_certificate(pki: Path, *hostnames: str, ip: str | None = None) -> tuple[Path, Path, Path]:
    """A CA (made once in `pki`) and a server certificate for `hostnames` (and `ip`):
    (ca.crt, server.crt, server.key)."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = pki / "ca.key", pki / "ca.crt"
    if not ca_crt.exists():
        _openssl(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=rwag test CA",
                "-keyout",
                str(ca_key),
                "-out",
                str(ca_crt),
            ]
        )
    name = hostnames[0]
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    ext = pki / f"{name}.ext"
    alt = [f"DNS:{host}" for host in hostnames] + ([f"IP:{ip}"] if ip else [])
    ext.write_text(f"subjectAltName={','.join(alt)}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        [
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ]
    )
    _openssl(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(crt),
        ]
    )
    return ca_crt, crt, key


def _openssl(argv: Sequence[str]) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
