"""The policy document: an organization's registry allowlist, as files, API bodies and revisions.

File format (JSON, or YAML for `.yaml`/`.yml` files):

    organization: acme             # lowercase name
    revision: 12                   # optional; 0 for a file written by hand
    enabled: true                  # false allows everything
    registries:
      - address: docker.io         # see regward.policy.address
        nickname: Docker Hub       # optional
        allowed: true              # optional; false keeps the entry listed but switched off
        repositories: ["acme/*"]   # optional; default every repository
        actions: [pull]            # optional; pull, push; default both
        extra_hosts: [cdn.example] # optional; more hosts the proxy may reach for this registry

Repository patterns match at path-component boundaries: `acme/*` is every repository under
`acme/` (not `acme` itself, never `acmeevil/x`), `library/nginx` exactly that one, `*` all. On
Docker Hub a one-component name means an official image: `nginx` is `library/nginx`.

`Policy.canonical_json()` is the signed form: sorted keys, no whitespace, UTF-8, every field
written out, so equal policies have equal bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import yaml

from regward.errors import InvalidAddress, InvalidPolicy, RegwardError, quote
from regward.policy.address import Address
from regward.policy.reference import PATH_COMPONENT

_T = TypeVar("_T")
MAX_NICKNAME_LENGTH = 100
_ORGANIZATION = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?")
_PATH_COMPONENT = re.compile(PATH_COMPONENT)
DOCKER_HUB_ADDRESS = Address("docker.io", None)
# Docker Hub's API and index hosts name the same registry as docker.io.
_HUB_ALIASES = frozenset({Address("index.docker.io", None), Address("registry-1.docker.io", None)})
ENTRY_KEYS = frozenset({"address", "nickname", "allowed", "repositories", "actions", "extra_hosts"})
_POLICY_KEYS = frozenset({"organization", "revision", "enabled", "registries"})


class Action(StrEnum):
    PULL = "pull"
    PUSH = "push"


ALL_ACTIONS = frozenset(Action)


@dataclass(frozen=True, slots=True)
class RepositoryPattern:
    """Literal `components`, then (when `prefix`, as in `acme/*`) any deeper path; `*` is ()."""

    components: tuple[str, ...]
    prefix: bool

    @classmethod
    def parse(cls, text: str, *, docker_hub: bool) -> RepositoryPattern:
        if not isinstance(text, str) or not text:
            raise InvalidPolicy(
                f"repository pattern {quote(text)} must be a non-empty string", value=text
            )
        if text == "*":
            return cls((), prefix=True)
        body, prefix = (text[:-2], True) if text.endswith("/*") else (text, False)
        components = tuple(body.split("/"))
        if not all(_PATH_COMPONENT.fullmatch(c) for c in components):
            raise InvalidPolicy(
                f"repository pattern {quote(text)}: use lowercase path components separated by "
                "'/', optionally ending in '/*', e.g. 'acme/*' or 'library/nginx'",
                value=text,
            )
        if docker_hub and not prefix and len(components) == 1:
            components = ("library", *components)
        return cls(components, prefix)

    def matches(self, repository: str) -> bool:
        parts = tuple(repository.split("/"))
        if self.prefix:
            return len(parts) > len(self.components) and parts[: len(self.components)] == (
                self.components
            )
        return parts == self.components

    @property
    def specificity(self) -> tuple[int, int]:
        return (len(self.components), 0 if self.prefix else 1)

    def __str__(self) -> str:
        if self.prefix:
            return "/".join((*self.components, "*"))
        return "/".join(self.components)


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One allowlist entry; build it with `RegistryEntry.from_dict`."""

    address: Address
    nickname: str = ""
    allowed: bool = True
    repositories: tuple[RepositoryPattern, ...] = ()
    actions: frozenset[Action] = ALL_ACTIONS
    extra_hosts: tuple[Address, ...] = ()

    @classmethod
    def from_dict(cls, data: object, where: str = "") -> RegistryEntry:
        """Parse one entry; errors carry the field (under `where`, e.g. `registries[2]`) and
        the value."""
        if not isinstance(data, Mapping):
            raise InvalidPolicy(
                f"expected a mapping with 'address', got {quote(data)}",
                field=where or None,
                value=data,
            )
        unknown = sorted(str(k) for k in data if k not in ENTRY_KEYS)
        if unknown:
            raise InvalidPolicy(
                f"unknown field {quote(unknown[0])} (known: {', '.join(sorted(ENTRY_KEYS))})",
                field=where or None,
                value=unknown[0],
            )
        if "address" not in data:
            raise InvalidPolicy("missing 'address'", field=where or None)
        try:
            address = Address.parse(data["address"])
        except InvalidAddress as error:
            raise _within(error, _at(where, "address")) from None
        if address in _HUB_ALIASES:
            address = DOCKER_HUB_ADDRESS
        nickname = data.get("nickname") or ""
        if not isinstance(nickname, str) or len(nickname) > MAX_NICKNAME_LENGTH:
            raise InvalidPolicy(
                f"{quote(nickname)} must be text of at most {MAX_NICKNAME_LENGTH} characters",
                field=_at(where, "nickname"),
                value=nickname,
            )
        allowed = data.get("allowed", True)
        if not isinstance(allowed, bool):
            raise InvalidPolicy(
                f"{quote(allowed)} must be true or false",
                field=_at(where, "allowed"),
                value=allowed,
            )
        hub = address == DOCKER_HUB_ADDRESS
        patterns = _string_list(data.get("repositories"), _at(where, "repositories"))
        try:
            repositories = tuple(RepositoryPattern.parse(p, docker_hub=hub) for p in patterns)
        except InvalidPolicy as error:
            raise _within(error, _at(where, "repositories")) from None
        action_names = _string_list(data.get("actions", list(Action)), _at(where, "actions"))
        try:
            actions = frozenset(Action(name) for name in action_names)
        except ValueError:
            raise InvalidPolicy(
                f"{quote(action_names)} may only contain 'pull' and 'push'",
                field=_at(where, "actions"),
                value=action_names,
            ) from None
        if not actions:
            raise InvalidPolicy(
                "empty; list 'pull' and/or 'push', or set allowed: false",
                field=_at(where, "actions"),
                value=action_names,
            )
        try:
            extra_hosts = tuple(
                Address.parse(h)
                for h in _string_list(data.get("extra_hosts"), _at(where, "extra_hosts"))
            )
        except InvalidAddress as error:
            raise _within(error, _at(where, "extra_hosts")) from None
        return cls(
            address=address,
            nickname=nickname,
            allowed=allowed,
            repositories=_unique(repositories),
            actions=actions,
            extra_hosts=_unique(extra_hosts),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "nickname": self.nickname,
            "allowed": self.allowed,
            "repositories": [str(p) for p in self.repositories],
            "actions": sorted(action.value for action in self.actions),
            "extra_hosts": [str(h) for h in self.extra_hosts],
        }


@dataclass(frozen=True)
class Policy:
    """An organization's registry access policy at one revision."""

    organization: str
    revision: int = 0
    enabled: bool = True
    registries: tuple[RegistryEntry, ...] = ()
    # Lookup tables for evaluate(), built on first use by regward.policy.engine.
    _compiled: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: object) -> Policy:
        """Parse a policy document; raise InvalidPolicy naming the field and value."""
        if not isinstance(data, Mapping):
            raise InvalidPolicy(f"policy must be a mapping with 'organization', got {quote(data)}")
        unknown = sorted(str(k) for k in data if k not in _POLICY_KEYS)
        if unknown:
            raise InvalidPolicy(
                f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_POLICY_KEYS))})"
            )
        organization = data.get("organization")
        if not isinstance(organization, str) or not _ORGANIZATION.fullmatch(organization):
            raise InvalidPolicy(
                f"{quote(organization)} must be a lowercase name of letters, digits, "
                "'-' and '_' (2-64 characters)",
                field="organization",
                value=organization,
            )
        revision = data.get("revision", 0)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
            raise InvalidPolicy(
                f"{quote(revision)} must be a whole number >= 0", field="revision", value=revision
            )
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidPolicy(
                f"{quote(enabled)} must be true or false", field="enabled", value=enabled
            )
        registries = data.get("registries", [])
        if not isinstance(registries, list):
            raise InvalidPolicy(
                f"{quote(registries)} must be a list of entries",
                field="registries",
                value=registries,
            )
        entries = tuple(
            RegistryEntry.from_dict(entry, f"registries[{i}]") for i, entry in enumerate(registries)
        )
        return cls(
            organization=organization, revision=revision, enabled=enabled, registries=entries
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "revision": self.revision,
            "enabled": self.enabled,
            "registries": [entry.to_dict() for entry in self.registries],
        }

    def canonical_json(self) -> bytes:
        return canonical_json(self.to_dict())


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_policy_text(text: str, filename: str) -> Policy:
    """Parse a policy file's text: YAML for `.yaml`/`.yml`, JSON otherwise.

    A signed revision saved from the server's feed (`{"policy": ..., "signature": ...}`) reads as
    its policy, unverified: a local file is trusted as it stands.
    """
    try:
        if filename.endswith((".yaml", ".yml")):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (yaml.YAMLError, ValueError) as error:
        raise InvalidPolicy(
            f"{filename}: not valid {_format(filename)}: {_syntax(error)}"
        ) from None
    if isinstance(data, dict) and set(data) == {"policy", "signature"}:
        data = data["policy"]  # a revision as the feed serves it; verify() checks signatures
    try:
        return Policy.from_dict(data)
    except InvalidPolicy as error:
        raise InvalidPolicy(f"{filename}: {error}") from None


def _syntax(error: Exception) -> str:
    """A syntax error in one line, with the line and column where the file went wrong."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _format(filename: str) -> str:
    return "YAML" if filename.endswith((".yaml", ".yml")) else "JSON"


def _string_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidPolicy(f"{quote(value)} must be a list of strings", field=where, value=value)
    return value


def _within(error: RegwardError, field: str) -> InvalidPolicy:
    """`error` (about an address or a pattern) as the policy's error about `field`."""
    return InvalidPolicy(error.message, field=field, value=error.value)


def _at(where: str, name: str) -> str:
    """The field `name` of the entry at `where` (`registries[2].address`, or `address`)."""
    return f"{where}.{name}" if where else name


def _unique(items: tuple[_T, ...]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))
