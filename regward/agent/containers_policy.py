"""The containers policy (containers-policy.json(5)) that podman, buildah, skopeo and CRI-O obey.

`regward agent run --containers-policy FILE` keeps FILE (usually /etc/containers/policy.json)
in step with what the agent enforces: those tools consult it before they pull an image, with no
proxy and no help from the caller. For every verified revision (and a logout, a new
registry.json) the agent renders the file and replaces it atomically:

    {"default": [{"type": "reject"}],
     "transports": {
       "docker": {"": [{"type": "reject"}],
                  "ghcr.io": [{"type": "insecureAcceptAnything"}],        # an allowed entry
                  "ghcr.io/acme": [{"type": "insecureAcceptAnything"}],   # repositories acme/*
                  "quay.io": [{"type": "reject"}],                         # switched off, push only
                  "*.example.com": [{"type": "insecureAcceptAnything"}]},  # a wildcard
       "containers-storage": {"": [{"type": "insecureAcceptAnything"}]}, ...}}  # local, as before

Scopes come from the entries (a host without a port also as `host:443` and `host:80`, a
repository pattern as the namespace or repository under each, a wildcard as `*.domain`), and
each scope's verdict is the policy core's own decision for a pull of an image in it, so the file
says what `regward check` says. Where the format cannot say it, the file is stricter (a wildcard
narrowed to repositories rejects; a scope that two patterns share is accepted only if both
allow), except where the format is broader (see docs/security.md): a wildcard scope covers every
port; a repository scope covers the repositories below it too; `acme/*` also covers `acme`.

What the file said before the agent first wrote it (or after someone edited it since) is the
base, kept in the agent's state directory: signature requirements (`signedBy`, `sigstoreSigned`,
`signedBaseLayer`) on a scope that stays allowed are kept, and scopes the agent writes inherit
those of the base scope that covered them; other transports (local storage, archives) keep
their base rules. With nothing to enforce (Registry Access off, no organization) the base is
written back as it was. A base that is not valid JSON stops the agent from writing: it logs the
error and leaves the file alone, which the tools then refuse to use (fail closed).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regward.agent.guard import Enforcement
from regward.errors import InvalidReference
from regward.policy import Action, ImageReference, Policy, evaluate
from regward.policy.address import Address
from regward.policy.reference import split_registry

log = logging.getLogger("regward.agent.containers")

DEFAULT_PATH = Path("/etc/containers/policy.json")
ACCEPT: list[dict[str, Any]] = [{"type": "insecureAcceptAnything"}]
REJECT: list[dict[str, Any]] = [{"type": "reject"}]
SIGNATURES = frozenset({"signedBy", "sigstoreSigned", "signedBaseLayer"})
# containers-common's own default: what the tools do when no file says otherwise.
TOOLS_DEFAULT: dict[str, Any] = {"default": ACCEPT}
# Transports that read or write this machine, not a registry: they keep their base rules.
LOCAL_TRANSPORTS = (
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "sif",
    "tarball",
)
PROBE = "regward-probe-unlisted"  # a path no pattern names: what a scope's own rule decides


@dataclass(frozen=True)
class _Scope:
    """A docker-transport scope and the images whose decisions it must agree with."""

    text: str
    probes: tuple[ImageReference, ...]


def render(enforcement: Enforcement, base: dict[str, Any]) -> dict[str, Any]:
    """The containers policy that enforces `enforcement`, keeping what it may of `base`."""
    if enforcement.blocked_reason is None and (
        enforcement.policy is None or not enforcement.policy.enabled
    ):
        return base  # nothing is enforced: the tools behave as before
    base_docker: dict[str, Any] = dict(base.get("transports", {}).get("docker", {}))
    docker: dict[str, Any] = {"": REJECT}
    policy = None if enforcement.blocked_reason else enforcement.policy
    if policy is not None:
        verdicts: dict[str, bool] = {}
        for scope in _scopes(policy):
            allowed = all(evaluate(policy, Action.PULL, p).allowed for p in scope.probes)
            verdicts[scope.text] = verdicts.get(scope.text, True) and allowed
        for text, allowed in sorted(verdicts.items()):
            docker[text] = _inherited(text, base_docker, base) if allowed else REJECT
        for text, requirements in base_docker.items():
            if text not in docker and _signed(requirements) and _allows(policy, text):
                docker[text] = requirements
    transports: dict[str, Any] = {
        name: scopes for name, scopes in base.get("transports", {}).items() if name != "docker"
    }
    for name in LOCAL_TRANSPORTS:
        transports.setdefault(name, {}).setdefault("", base.get("default", ACCEPT))
    transports["docker"] = docker
    return {"default": REJECT, "transports": transports}


def _image(host: str, port: int | None, repository: str) -> ImageReference:
    return ImageReference(host=host, port=port, repository=repository, tag="latest", digest=None)


def _registries(address: Address) -> tuple[tuple[str, int | None], ...]:
    """How references name the registries `address` covers (c/image compares the strings)."""
    host = f"[{address.host}]" if ":" in address.host else address.host
    if address.port is None:
        return ((host, None), (f"{host}:443", 443), (f"{host}:80", 80))
    if address.port == 443:
        return ((f"{host}:443", 443), (host, None))
    return ((f"{host}:{address.port}", address.port),)


def _scopes(policy: Policy) -> Iterator[_Scope]:
    for entry in policy.registries:
        address = entry.address
        if address.wildcard:
            probe = _image(f"{PROBE}.{address.host}", address.port, f"{PROBE}/x")
            yield _Scope(f"*.{address.host}", (probe,))
            continue
        for registry, port in _registries(address):
            yield _Scope(registry, (_image(address.host, port, f"{PROBE}/x"),))
            for pattern in entry.repositories:
                if not pattern.components:  # `*`: the same as no pattern
                    continue
                path = "/".join(pattern.components)
                inside = f"{path}/{PROBE}" if pattern.prefix else path
                yield _Scope(f"{registry}/{path}", (_image(address.host, port, inside),))


def _covering(scope: str) -> Iterator[str]:
    """The scopes c/image would consult for `scope`, most specific first ("" last)."""
    name = scope
    if not scope.startswith("*."):
        while True:
            yield name
            if "/" not in name:
                break
            name = name.rsplit("/", 1)[0]
        name = name.rsplit(":", 1)[0] if not name.endswith("]") else name
        if name.startswith("["):
            yield ""
            return
    else:
        yield name
        name = name[2:]
    while "." in name:
        name = name.split(".", 1)[1]
        yield f"*.{name}"
    yield ""


def _inherited(scope: str, base_docker: dict[str, Any], base: dict[str, Any]) -> Any:
    """The signature requirements the base applied to `scope`, or plain acceptance."""
    for candidate in _covering(scope):
        if candidate in base_docker:
            requirements = base_docker[candidate]
            return requirements if _signed(requirements) else ACCEPT
    default = base.get("default", ACCEPT)
    return default if _signed(default) else ACCEPT


def _signed(requirements: Any) -> bool:
    return isinstance(requirements, list) and any(
        isinstance(item, dict) and item.get("type") in SIGNATURES for item in requirements
    )


def _allows(policy: Policy, scope: str) -> bool:
    """Does the policy allow pulling every image a base scope covers (as far as probes tell)?"""
    try:
        if scope.startswith("*."):
            probes = [_image(f"{PROBE}.{scope[2:]}", None, f"{PROBE}/x")]
        elif "/" not in scope:
            probes = [_image(*split_registry(scope), f"{PROBE}/x")]
        elif "@" in scope or ":" in scope.rsplit("/", 1)[1]:
            probes = [ImageReference.parse(scope)]  # one image
        else:
            probes = [ImageReference.parse(scope), ImageReference.parse(f"{scope}/{PROBE}")]
    except InvalidReference:
        return False
    return all(evaluate(policy, Action.PULL, probe).allowed for probe in probes)


class ContainersPolicy:
    """Keeps one containers-policy.json file in step with the guard's enforcement."""

    def __init__(self, path: Path, state_dir: Path) -> None:
        self.path = path
        self._base_path = state_dir / "containers-policy.base.json"
        self._written_path = state_dir / "containers-policy.written.json"
        self.writes = 0  # files written so far

    def update(self, enforcement: Enforcement) -> None:
        """Render and write the file for `enforcement`; log and leave it alone on a bad base."""
        try:
            base = self._base()
        except ValueError as error:
            log.error(
                "containers policy %s is not valid JSON (%s): not rewritten, so podman, skopeo "
                "and buildah refuse to use it; fix or remove the file",
                self.path,
                error,
            )
            return
        text = json.dumps(render(enforcement, base), indent=2, sort_keys=True) + "\n"
        _replace(self.path, text.encode(), mode=0o644)
        _replace(self._written_path, text.encode(), mode=0o600)
        self.writes += 1

    def _base(self) -> dict[str, Any]:
        """The file as its owner wrote it: the current file unless it is what we wrote last."""
        current = _read(self.path)
        if current is not None and current != _read(self._written_path):
            _replace(self._base_path, current, mode=0o600)
            return _parse(current)
        saved = _read(self._base_path)
        return _parse(saved) if saved is not None else TOOLS_DEFAULT


def _parse(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)  # a ValueError names the position
    if not isinstance(value, dict):
        raise ValueError(f"the top level is {type(value).__name__}, not an object")
    transports = value.get("transports", {})
    if not isinstance(transports, dict) or not all(
        isinstance(scopes, dict) for scopes in transports.values()
    ):
        raise ValueError('"transports" must map each transport to an object of scopes')
    return value


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
