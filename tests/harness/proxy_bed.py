"""TLS registries with the harness's own CA, on top of a `Bed` (for the proxy's e2e tests).

BuildKit only talks TLS to registries and verifies certificates for real only off loopback, so
these registries listen on 10.234.N.x:443 inside the namespace, with a certificate from a CA
made here and trusted through /etc/docker/certs.d/HOST (dockerd must start after that exists).

    pki = Pki.create(bed.directory / "pki")
    add_tls_registry(bed, pki, "tls-ok", "tls-ok.rwpx.test", index=4)
    bed.push("https://tls-ok.rwpx.test", "demo/hello", "v1", cafile=pki.ca_file)
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.bed import Bed


@dataclass
class Pki:
    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regward test CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        pki = cls(directory, key, cert)
        pki.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pki

    def issue(self, hostname: str) -> tuple[Path, Path]:
        """A server certificate for `hostname`; (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{hostname}.crt", self.directory / f"{hostname}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file


def add_tls_registry(bed: Bed, pki: Pki, name: str, hostname: str, index: int) -> str:
    """A docker-registry for `hostname` on 10.234.N.index:443 with a certificate from `pki`,
    trusted by dockerd through certs.d and holding demo/hello:v1. Returns its address."""
    address = bed.add_ip(index)
    bed.add_host(hostname, address)
    bed.start_registry(name, f"{address}:443", tls=pki.issue(hostname))
    bed.trust_ca(hostname, pki.ca_file)
    bed.push(f"https://{hostname}", "demo/hello", "v1", cafile=pki.ca_file)
    return address
