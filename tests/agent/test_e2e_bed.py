"""The shared bed itself: a TLS registry with its own CA is verified for real, and teardown
leaves nothing behind. (The proxy's tests rely on both.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness.bed import Bed, unavailable_reason

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


def test_tls_registry_is_verified_against_the_beds_ca_and_teardown_is_clean() -> None:
    bed = Bed.create("t")
    try:
        address = bed.add_ip(5)
        bed.add_host("secure.registry.test", address)
        ca, cert, key = bed.make_certificate("secure.registry.test")
        bed.start_registry("secure", f"{address}:443", tls=(cert, key))
        bed.push("https://secure.registry.test", "demo/tls", "v1", cafile=ca)
        bed.start_dockerd()
        image = "secure.registry.test/demo/tls:v1"
        untrusted = bed.docker("pull", image)
        assert untrusted.returncode != 0
        assert "x509" in untrusted.stderr or "certificate" in untrusted.stderr
        bed.trust_ca("secure.registry.test", ca)
        trusted = bed.docker("pull", image)
        assert trusted.returncode == 0, trusted.stderr
        assert not Path("/etc/docker/certs.d/secure.registry.test").exists()  # host untouched
        name, directory = bed.name, bed.directory
    finally:
        bed.close()
    assert name not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    assert f"{name}-h" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert not directory.exists()
    assert not Path("/etc/netns", name).exists()
    with open("/proc/self/mounts") as mounts:
        assert str(directory) not in mounts.read()
