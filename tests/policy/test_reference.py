"""Image references: normalization cases from distribution/reference, errors, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.errors import InvalidReference
from regward.policy import ImageReference

D64 = "sha256:" + "a" * 64

NORMALIZED = [
    ("ubuntu", "docker.io/library/ubuntu:latest"),
    ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
    ("library/debian", "docker.io/library/debian:latest"),
    ("docker/docker", "docker.io/docker/docker:latest"),
    ("docker.io/debian", "docker.io/library/debian:latest"),
    ("docker.io/docker/docker:v1", "docker.io/docker/docker:v1"),
    ("index.docker.io/debian", "docker.io/library/debian:latest"),
    ("index.docker.io/library/debian", "docker.io/library/debian:latest"),
    ("registry-1.docker.io/library/debian", "docker.io/library/debian:latest"),
    ("localhost/debian", "localhost/debian:latest"),
    ("localhost:5000/library/debian", "localhost:5000/library/debian:latest"),
    ("example.com/debian", "example.com/debian:latest"),
    ("example.com:5000/a/b/c:t", "example.com:5000/a/b/c:t"),
    ("myregistry/image", "docker.io/myregistry/image:latest"),  # Desktop 4.8.0's pitfall
    ("GHCR.IO/acme/app", "ghcr.io/acme/app:latest"),
    ("Registry/app", "registry/app:latest"),  # uppercase first component: a domain
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest"),
    ("[0:0::1]:5000/x", "[::1]:5000/x:latest"),
    (f"busybox@{D64}", f"docker.io/library/busybox@{D64}"),
    (f"busybox:latest@{D64}", f"docker.io/library/busybox@{D64}"),
    ("a__b/c-d.e---f:T_1.x-y", "docker.io/a__b/c-d.e---f:T_1.x-y"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALIZED)
def test_normalization(text: str, expected: str) -> None:
    assert str(ImageReference.parse(text)) == expected


def test_fields() -> None:
    ref = ImageReference.parse("ghcr.io:443/acme/app:1.0")
    assert (ref.host, ref.port, ref.repository, ref.tag, ref.digest) == (
        "ghcr.io",
        443,
        "acme/app",
        "1.0",
        None,
    )
    assert ref.registry == "ghcr.io:443"
    assert ref.name == "ghcr.io:443/acme/app"
    assert ImageReference.parse("ubuntu").registry == "docker.io"


INVALID = [
    ("", "invalid reference format"),
    (":justtag", "invalid reference format"),
    (f"@{D64}", "invalid reference format"),
    ("Uppercase:tag", "repository name (library/Uppercase) must be lowercase"),
    ("docker.io/Docker", "must be lowercase"),
    ("ghcr.io/Acme/app", "repository name (Acme/app) must be lowercase"),
    ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("ubuntu:", "invalid reference format"),
    ("ubuntu:-bad", "invalid reference format"),
    ("ubuntu:" + "t" * 129, "invalid reference format"),
    ("repo@sha256:ffff", "invalid reference format"),
    ("repo@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("repo@sha256:" + "A" * 64, "invalid checksum digest"),
    ("repo@sha256:" + "a" * 63, "invalid checksum digest"),
    ("ghcr.io./acme/app", "invalid reference format"),
    ("gh\u0441r.io/acme/app", "invalid reference format"),  # a Cyrillic look-alike
    ("host:99999/x", "port"),
    ("[::1/x", "invalid reference format"),
    ("[zz::1]:5000/x", "invalid reference format"),
    ("a/" + "b" * 250, "must not be more than 255 characters"),
    ("a//b", "invalid reference format"),
    ("a/b/", "invalid reference format"),
    ("-a/b", "invalid reference format"),
    (" ubuntu", "invalid reference format"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_references_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message.replace("(", r"\(").replace(")", r"\)")):
        ImageReference.parse(text)


component = st.from_regex(r"[a-z0-9]{1,5}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,4}){0,2}", fullmatch=True)
domain = st.one_of(
    st.just(""),
    st.sampled_from(["localhost/", "Ghcr.IO/", "reg.example:5000/", "10.0.0.1:80/", "[::1]:5000/"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}\.[a-z]{2,3}/", fullmatch=True),
)
tag = st.one_of(st.just(""), st.from_regex(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True))
digest = st.one_of(st.just(""), st.from_regex(r"@sha256:[a-f0-9]{64}", fullmatch=True))
references = st.builds(
    lambda d, path, t, g: d + "/".join(path) + t + g,
    domain,
    st.lists(component, min_size=1, max_size=4),
    tag,
    digest,
)


@given(references)
def test_normalization_is_idempotent(text: str) -> None:
    try:
        ref = ImageReference.parse(text)
    except InvalidReference:
        return  # e.g. a 64-hex single component, or a name over 255 characters
    assert ImageReference.parse(str(ref)) == ref
    assert ref.tag is None or ref.digest is None


@given(st.text(max_size=300))
def test_parse_raises_only_our_error(text: str) -> None:
    try:
        ref = ImageReference.parse(text)
    except InvalidReference as error:
        assert str(error)
    else:
        assert ImageReference.parse(str(ref)) == ref
