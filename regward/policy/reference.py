"""Image references, parsed and normalized exactly as Docker's `distribution/reference` does.

Grammar (from distribution/reference):

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain '/'] path-component ['/' path-component]*
    domain           := host [':' port-number]
    host             := domain-name | '[' IPv6address ']'
    path-component   := [a-z0-9]+ ([_.]|__|[-]+ [a-z0-9]+)*
    tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest           := algorithm ':' hex

Normalization: the first component is a registry only when it is `localhost`, contains `.` or
`:`, or has an uppercase letter; otherwise the image is on Docker Hub (`docker.io`), and a
single-component Hub name gets `library/`. `index.docker.io` and `registry-1.docker.io` are Docker
Hub. A missing tag is `latest`; a tag next to a digest is dropped (the digest is what is pulled).

    ubuntu                          -> docker.io/library/ubuntu:latest
    ghcr.io/acme/app:1.0            -> ghcr.io/acme/app:1.0
    localhost:5000/x@sha256:<64hex> -> localhost:5000/x@sha256:<64hex>
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from regward.errors import InvalidReference
from regward.policy.address import join_host_port

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
NAME_TOTAL_LENGTH_MAX = 255

PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{PATH_COMPONENT}(?:/{PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_DOMAIN_ONLY = re.compile(rf"(?P<host>{_HOST})(?::(?P<port>[0-9]+))?")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
# go-digest's registered algorithms and the exact encoded form each accepts.
_DIGEST_ENCODINGS = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha384": re.compile(r"[a-f0-9]{96}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalized image reference; build it with `ImageReference.parse`."""

    host: str
    """Registry host, lowercased; `docker.io` for Docker Hub; IPv6 without brackets."""
    port: int | None
    repository: str
    """Path inside the registry, e.g. `library/ubuntu`."""
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """Parse and normalize `text` as `docker pull TEXT` would; raise InvalidReference."""
        if not isinstance(text, str):
            raise InvalidReference(f"invalid reference format: {text!r} is not a string")
        if _IDENTIFIER.fullmatch(text):
            raise InvalidReference(
                f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
            )
        domain, remainder = _split_docker_domain(text)
        remote = remainder.split(":", 1)[0].split("@", 1)[0]
        if remote.lower() != remote:
            raise InvalidReference(
                f"invalid reference format: repository name ({remote}) must be lowercase"
            )
        full = f"{domain}/{remainder}"
        match = _REFERENCE.fullmatch(full)
        if match is None:
            raise InvalidReference(f"invalid reference format: {text!r}")
        if len(match["name"]) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidReference(
                f"invalid reference format: repository name {text!r} must not be more than "
                f"{NAME_TOTAL_LENGTH_MAX} characters"
            )
        digest = match["digest"]
        if digest is not None:
            _check_digest(digest)
        host, port = split_registry(domain)
        repository = match["name"][len(domain) + 1 :]
        tag = None if digest else (match["tag"] or "latest")
        return cls(host=host, port=port, repository=repository, tag=tag, digest=digest)

    @property
    def registry(self) -> str:
        """`host[:port]`, with brackets around an IPv6 host: how the registry is named."""
        return join_host_port(self.host, self.port)

    @property
    def name(self) -> str:
        """The repository with its registry, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"


def split_registry(domain: str) -> tuple[str, int | None]:
    """Split a reference's domain part into (lowercased host, port), with Hub aliases folded."""
    match = _DOMAIN_ONLY.fullmatch(domain)
    if match is None:
        raise InvalidReference(f"invalid reference format: registry {domain!r}")
    host = match["host"].lower()
    if host.startswith("["):
        host = _normalize_ipv6(host[1:-1], domain)
    port = None
    if match["port"] is not None:
        port = int(match["port"])
        if not 0 < port < 65536:
            raise InvalidReference(f"invalid reference format: port of {domain!r} out of range")
    if host in _HUB_ALIASES and port is None:
        host = DOCKER_HUB
    return host, port


def _split_docker_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DOCKER_HUB, name
    else:
        domain, remainder = first, rest
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def _check_digest(digest: str) -> None:
    algorithm, _, encoded = digest.partition(":")
    pattern = _DIGEST_ENCODINGS.get(algorithm)
    if pattern is None:
        raise InvalidReference(f"invalid reference format: unsupported digest algorithm {digest!r}")
    if not pattern.fullmatch(encoded):
        raise InvalidReference(f"invalid reference format: invalid checksum digest {digest!r}")


def _normalize_ipv6(text: str, domain: str) -> str:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise InvalidReference(
            f"invalid reference format: {domain!r} is not a valid IPv6 address"
        ) from None
