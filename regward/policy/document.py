"""The policy document: an organization's registry allowlist, as files, API bodies and revisions.

File format (JSON, or YAML for `.yaml`/`.yml` files; read by regward.policy.files):

    organization: acme             # lowercase name
    revision: 12                   # optional; 0 for a file written by hand
    enabled: true                  # false allows everything
    registries:
      - address: docker.io         # see regward.policy.address
        nickname: Docker Hub       # optional; visible characters (regward.policy.text)
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, cast

from regward.errors import InvalidAddress, InvalidPolicy, RegwardError, quote
from regward.policy.address import Address
from regward.policy.reference import PATH_COMPONENT
from regward.policy.text import refuse_invisible

_T = TypeVar("_T")
_F = TypeVar("_F")
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
    def from_dict(cls, data: object, where: str = "", *, stored: bool = False) -> RegistryEntry:
        """Parse one entry; errors carry the field (under `where`, e.g. `registries[2]`) and
        the value. The first error is raised. `stored`: see `Policy.from_dict`."""
        return cast(RegistryEntry, cls._parse(data, where, _Problems(collect=False, stored=stored)))

    @classmethod
    def _parse(cls, data: object, where: str, problems: _Problems) -> RegistryEntry | None:
        """The entry, or None with every error of its fields in `problems`."""
        if not isinstance(data, Mapping):
            problems.add(
                InvalidPolicy(
                    f"expected a mapping with 'address', got {quote(data)}",
                    field=where or None,
                    value=data,
                )
            )
            return None
        before = len(problems.found)
        for key in sorted(str(k) for k in data if k not in ENTRY_KEYS):
            problems.add(
                InvalidPolicy(
                    f"unknown field {quote(key)} (known: {', '.join(sorted(ENTRY_KEYS))})",
                    field=where or None,
                    value=key,
                )
            )
        address = problems.check(lambda: _entry_address(data, where), None)
        nickname = problems.check(
            lambda: _nickname(data.get("nickname"), where, stored=problems.stored), ""
        )
        allowed = problems.check(
            lambda: _boolean(data.get("allowed", True), where, "allowed"), True
        )
        hub = address == DOCKER_HUB_ADDRESS
        repositories = problems.check(
            lambda: _repositories(data.get("repositories"), _at(where, "repositories"), hub), ()
        )
        actions = problems.check(
            lambda: _actions(data.get("actions", list(Action)), _at(where, "actions")), ALL_ACTIONS
        )
        extra_hosts = problems.check(
            lambda: _addresses(data.get("extra_hosts"), _at(where, "extra_hosts")), ()
        )
        if address is None or len(problems.found) > before:
            return None
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
    def from_dict(cls, data: object, *, stored: bool = False) -> Policy:
        """Parse a policy document; raise InvalidPolicy naming the field and value of the first
        error (`problems` gives every one).

        New text (a file, an API body, a form) may not hold characters that are not shown as
        they are (regward.policy.text). A document `stored` before that rule (a signed
        revision, a saved draft) loads with its text unchanged: nothing stored is lost, and
        pages show such text escaped."""
        return cast(Policy, cls._parse(data, _Problems(collect=False, stored=stored)))

    @classmethod
    def problems(cls, data: object, *, stored: bool = False) -> list[InvalidPolicy]:
        """Every error in a policy document, in document order (none: it parses)."""
        problems = _Problems(collect=True, stored=stored)
        cls._parse(data, problems)
        return problems.found

    @classmethod
    def _parse(cls, data: object, problems: _Problems) -> Policy | None:
        if not isinstance(data, Mapping):
            problems.add(
                InvalidPolicy(f"policy must be a mapping with 'organization', got {quote(data)}")
            )
            return None
        for key in sorted(str(k) for k in data if k not in _POLICY_KEYS):
            problems.add(
                InvalidPolicy(
                    f"unknown field {key!r} (known: {', '.join(sorted(_POLICY_KEYS))})",
                    value=key,
                )
            )
        organization = problems.check(lambda: _organization(data.get("organization")), "")
        revision = problems.check(lambda: _revision(data.get("revision", 0)), 0)
        enabled = problems.check(lambda: _boolean(data.get("enabled", True), "", "enabled"), True)
        registries = problems.check(lambda: _entries_list(data.get("registries", [])), [])
        entries = [
            RegistryEntry._parse(entry, f"registries[{i}]", problems)
            for i, entry in enumerate(registries)
        ]
        if problems.found:
            return None
        return cls(
            organization=organization,
            revision=revision,
            enabled=enabled,
            registries=tuple(e for e in entries if e is not None),
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


class _Problems:
    """The errors of one parse: raised at once (`collect=False`), or gathered."""

    def __init__(self, *, collect: bool, stored: bool) -> None:
        self.collect = collect
        self.stored = stored
        self.found: list[InvalidPolicy] = []

    def add(self, error: InvalidPolicy) -> None:
        if not self.collect:
            raise error
        self.found.append(error)

    def check(self, parse: Callable[[], _T], fallback: _F) -> _T | _F:
        """`parse()`, or (its error noted) `fallback` so the other fields are still checked."""
        try:
            return parse()
        except InvalidPolicy as error:
            self.add(error)
            return fallback


def _organization(value: object) -> str:
    if not isinstance(value, str) or not _ORGANIZATION.fullmatch(value):
        raise InvalidPolicy(
            f"{quote(value)} must be a lowercase name of letters, digits, "
            "'-' and '_' (2-64 characters)",
            field="organization",
            value=value,
        )
    return value


def _revision(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPolicy(
            f"{quote(value)} must be a whole number >= 0", field="revision", value=value
        )
    return value


def _boolean(value: object, where: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidPolicy(
            f"{quote(value)} must be true or false", field=_at(where, name), value=value
        )
    return value


def _entries_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise InvalidPolicy(
            f"{quote(value)} must be a list of entries", field="registries", value=value
        )
    return value


def _entry_address(data: Mapping[Any, Any], where: str) -> Address:
    if "address" not in data:
        raise InvalidPolicy("missing 'address'", field=where or None)
    try:
        address = Address.parse(data["address"])
    except InvalidAddress as error:
        raise _within(error, _at(where, "address")) from None
    return DOCKER_HUB_ADDRESS if address in _HUB_ALIASES else address


def _nickname(value: object, where: str, *, stored: bool) -> str:
    nickname = value or ""
    if not isinstance(nickname, str) or len(nickname) > MAX_NICKNAME_LENGTH:
        raise InvalidPolicy(
            f"{quote(nickname)} must be text of at most {MAX_NICKNAME_LENGTH} characters",
            field=_at(where, "nickname"),
            value=nickname,
        )
    if not stored:
        refuse_invisible(nickname, _at(where, "nickname"), InvalidPolicy)
    return nickname


def _repositories(value: object, where: str, hub: bool) -> tuple[RepositoryPattern, ...]:
    patterns = _string_list(value, where)
    try:
        return tuple(RepositoryPattern.parse(p, docker_hub=hub) for p in patterns)
    except InvalidPolicy as error:
        raise _within(error, where) from None


def _actions(value: object, where: str) -> frozenset[Action]:
    names = _string_list(value, where)
    try:
        actions = frozenset(Action(name) for name in names)
    except ValueError:
        raise InvalidPolicy(
            f"{quote(names)} may only contain 'pull' and 'push'", field=where, value=names
        ) from None
    if not actions:
        raise InvalidPolicy(
            "empty; list 'pull' and/or 'push', or set allowed: false", field=where, value=names
        )
    return actions


def _addresses(value: object, where: str) -> tuple[Address, ...]:
    try:
        return tuple(Address.parse(h) for h in _string_list(value, where))
    except InvalidAddress as error:
        raise _within(error, where) from None


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
