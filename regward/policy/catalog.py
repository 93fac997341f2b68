"""Well-known registries and the other hosts a pull from them needs (token realm, blob CDN).

The egress proxy lets a connection through to one of these hosts only because an allowed entry
of the policy names the registry; nobody allows `production.cloudflare.docker.com` by itself.
Hosts that serve every tenant are never bundled: an ECR entry brings its region's layer bucket,
not `s3.amazonaws.com`; gcr.io's `storage.googleapis.com`, GitLab's token realm `gitlab.com`
(the whole forge), registry.k8s.io's regional
Artifact Registry mirrors and an ACR registry's storage account must be listed as extra hosts,
knowingly (`regward policy lint` names the shared ones). Sources:
../shared/reference/docker-ram.md §2.2 and the registries' own firewall documentation.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from regward.policy.address import Address


@dataclass(frozen=True, slots=True)
class Bundle:
    name: str
    address: re.Pattern[str]
    """Matches an entry's address (`*.` prefix for wildcards, no port); groups fill templates."""
    hosts: tuple[str, ...]


def _bundle(name: str, address: str, *hosts: str) -> Bundle:
    return Bundle(name, re.compile(address), hosts)


CATALOG: tuple[Bundle, ...] = (
    _bundle(
        "Docker Hub",
        r"docker\.io",
        "registry-1.docker.io",
        "index.docker.io",
        "auth.docker.io",
        "production.cloudflare.docker.com",
        "production.cloudfront.docker.com",
        "docker-images-prod.6aa30f8b08e16409b46e0173d6de2f56.r2.cloudflarestorage.com",
    ),
    _bundle("GitHub Container Registry", r"ghcr\.io", "pkg-containers.githubusercontent.com"),
    _bundle(
        "Quay and Red Hat",
        r"quay\.io|registry\.redhat\.io|registry\.access\.redhat\.com",
        "cdn.quay.io",
        "cdn01.quay.io",
        "cdn02.quay.io",
        "cdn03.quay.io",
    ),
    # gcr.io serves blobs from storage.googleapis.com, every tenant's buckets: not bundled.
    _bundle("Google Container Registry", r"(?:(?:us|eu|asia|mirror)\.)?gcr\.io"),
    # Artifact Registry serves tokens and blob downloads from the registry host itself.
    _bundle("Google Artifact Registry", r"(?:\*\.)?[a-z0-9-]+-docker\.pkg\.dev"),
    _bundle(
        "Amazon ECR",
        r"(?:\*|[0-9]{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com",
        "api.ecr.{region}.amazonaws.com",
        "prod-{region}-starport-layer-bucket.s3.{region}.amazonaws.com",
    ),
    _bundle("Amazon ECR Public", r"public\.ecr\.aws"),
    # Data endpoints serve blobs only with a token from their own login server.
    _bundle("Azure Container Registry", r"(?:\*|[a-z0-9]+)\.azurecr\.io", "*.data.azurecr.io"),
    # GitLab's token realm is gitlab.com, the whole forge (git push included): not bundled.
    _bundle("GitLab", r"registry\.gitlab\.com", "cdn.registry.gitlab-static.net"),
    _bundle("Microsoft Artifact Registry", r"mcr\.microsoft\.com", "*.data.mcr.microsoft.com"),
    # registry.k8s.io redirects to regional Artifact Registry and S3 mirrors that serve every
    # tenant (us-west1-docker.pkg.dev, ...): not bundled; list the mirrors you use as extra hosts.
    _bundle("Kubernetes", r"registry\.k8s\.io"),
)


def bundle_for(address: Address) -> tuple[Bundle, tuple[Address, ...]] | None:
    """The catalog bundle of a registry address and its hosts, or None for a custom registry."""
    if address.port is not None:
        return None
    text = ("*." if address.wildcard else "") + address.host
    for bundle in CATALOG:
        match = bundle.address.fullmatch(text)
        if match:
            hosts = tuple(Address.parse(h.format(**match.groupdict())) for h in bundle.hosts)
            return bundle, hosts
    return None


@functools.lru_cache(maxsize=4096)
def well_known_registry(host: str) -> bool:
    """Is the normalized `host` a registry of the catalog, or a host one of them needs?"""
    return any(
        bundle.address.fullmatch(host)
        or any(address.matches(host, 443) for address in _fixed_hosts(bundle))
        for bundle in CATALOG
    )


@functools.cache
def _fixed_hosts(bundle: Bundle) -> tuple[Address, ...]:
    """A bundle's hosts that need no filling from a registry's address."""
    return tuple(Address.parse(host) for host in bundle.hosts if "{" not in host)
