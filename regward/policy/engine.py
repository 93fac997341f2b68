"""Decisions: may this image be pulled or pushed, may this host be reached?

`evaluate(policy, action, reference)` answers for the AuthZ plugin and `regward check`;
`evaluate_host(policy, host, port)` for the egress proxy, which sees only where a connection
goes. Both use lookup tables built once per policy, keyed by `host:port`, so a decision costs a
few dictionary lookups (one for an exact host, one per label for a wildcard, one per component
for repository rules), whatever the size of the allowlist.

Rules (docs/owners.md, "Policies"): off allows everything. On, the most specific address
that covers the host and port decides (an exact host over a wildcard, a longer domain over a
shorter, an explicit port over none), so a broader address never overrides an entry that
narrows a host to some repositories. Among that address's entries the most specific repository
pattern decides (exact over prefix, longer prefix over shorter, `*` the same as none); no
pattern matching means denied. Among equally specific entries a switched-off one wins, else the
action must be one any of them allows. The proxy may reach a host whose most specific address
has an entry switched on, or a catalog or extra host of an allowed entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from regward.errors import InvalidAddress
from regward.policy.address import DEFAULT_PORTS, Address, join_host_port, normalize_host
from regward.policy.catalog import bundle_for, well_known_registry
from regward.policy.document import Action, Policy, RegistryEntry, RepositoryPattern
from regward.policy.reference import ImageReference

HTTPS_PORT = 443


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one question, with the reason a person can read."""

    allowed: bool
    reason: str
    entry: RegistryEntry | None
    revision: int
    organization: str

    def message(self, dashboard_url: str | None = None) -> str:
        """The reason, plus where to ask for a change when the dashboard address is known."""
        if self.allowed or not dashboard_url:
            return self.reason
        return f"{self.reason} Allowed registries: {dashboard_url}"


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What some entries of one address decide, worked out once.

    Flat on purpose: an allowed decision touches this object and the reason text, nothing more.
    """

    entries: tuple[RegistryEntry, ...]
    switched_off: RegistryEntry | None
    pull: RegistryEntry | None
    pull_described: str
    push: RegistryEntry | None
    push_described: str

    @classmethod
    def of(cls, entries: tuple[RegistryEntry, ...]) -> _Verdict:
        switched_off = next((e for e in entries if not e.allowed), None)
        pull = next((e for e in entries if Action.PULL in e.actions), None)
        push = next((e for e in entries if Action.PUSH in e.actions), None)
        pull_described = _describe(pull) if pull else ""
        return cls(
            entries, switched_off, pull, pull_described, push, _describe(push) if push else ""
        )

    def verdict(self, repository: str) -> _Verdict | None:
        """No entry of this address names repositories: the verdict is the same for all."""
        return self


class _Patterns(dict[str, _Verdict]):
    """The verdicts of an address whose entries name repositories, by pattern.

    Keys are `a/b` for the exact pattern, `a/b/` for `a/b/*`, and `` for `*` or no repositories,
    so a repository's candidates are itself, then its prefixes up to each `/`, longest first.
    """

    __slots__ = ("entries",)

    def __init__(self, entries: tuple[RegistryEntry, ...], verdicts: dict[str, _Verdict]) -> None:
        super().__init__(verdicts)
        self.entries = entries

    def verdict(self, repository: str) -> _Verdict | None:
        """The verdict of the most specific pattern matching `repository`, or None."""
        found = self.get(repository)  # exact keys never end in '/', so only exact ones
        end = len(repository)
        while found is None and end > 0:
            end = repository.rfind("/", 0, end)
            found = self.get(repository[: end + 1])  # a prefix, or '' when end is -1
        return found


def _rules(entries: tuple[RegistryEntry, ...]) -> _Verdict | _Patterns:
    """What the entries of one address decide, per repository pattern when any names some."""
    grouped: dict[str, tuple[RegistryEntry, ...]] = {}
    for entry in entries:
        for key in [_pattern_key(p) for p in entry.repositories] or [""]:
            grouped[key] = (*grouped.get(key, ()), entry)
    if list(grouped) == [""]:
        return _Verdict.of(entries)
    return _Patterns(entries, {key: _Verdict.of(group) for key, group in grouped.items()})


def _pattern_key(pattern: RepositoryPattern) -> str:
    text = "/".join(pattern.components)
    return text + "/" if pattern.prefix and text else text


class _HostIndex:
    """Addresses keyed by `host:port`, exact hosts and wildcard domains (the part after `*.`).

    An address without a port is filed under each default port unless an address naming that
    port (more specific) has the key, so one lookup finds the deciding address.
    """

    def __init__(self, pairs: Iterable[tuple[Address, RegistryEntry]]) -> None:
        self.exact: dict[str, _Verdict | _Patterns] = {}
        self.wildcard: dict[str, _Verdict | _Patterns] = {}
        self.wildcard_labels: set[int] = set()
        """Label counts of the wildcard domains: only parents of these lengths are looked up."""
        by_address: dict[Address, tuple[RegistryEntry, ...]] = {}
        for address, entry in pairs:
            by_address[address] = (*by_address.get(address, ()), entry)
        # Addresses with a port last: for their port they override the same host without one.
        for address in sorted(by_address, key=lambda a: a.port is not None):
            rules = _rules(by_address[address])
            table = self.wildcard if address.wildcard else self.exact
            if address.wildcard:
                self.wildcard_labels.add(address.host.count(".") + 1)
            for port in (address.port,) if address.port is not None else DEFAULT_PORTS:
                table[f"{address.host}:{port}"] = rules

    def find(self, host: str, port: int) -> _Verdict | _Patterns | None:
        """The most specific address covering `host:port`: exact host, else longest domain."""
        rules = self.exact.get(f"{host}:{port}")
        if rules is not None or not self.wildcard:
            return rules
        labels = host.count(".") + 1
        dot = host.find(".")
        while dot != -1:  # every proper parent domain, longest first, by whole labels
            labels -= 1
            if labels in self.wildcard_labels:
                rules = self.wildcard.get(f"{host[dot + 1 :]}:{port}")
                if rules is not None:
                    return rules
            dot = host.find(".", dot + 1)
        return None


@dataclass
class _Compiled:
    entries: _HostIndex
    bundles: _HostIndex


def _compile(policy: Policy) -> _Compiled:
    compiled: _Compiled | None = policy._compiled
    if compiled is not None:
        return compiled
    bundles: list[tuple[Address, RegistryEntry]] = []
    for entry in policy.registries:
        if entry.allowed:
            found = bundle_for(entry.address)
            hosts = (*(found[1] if found else ()), *entry.extra_hosts)
            bundles.extend((host, entry) for host in hosts)
    compiled = _Compiled(
        _HostIndex((entry.address, entry) for entry in policy.registries), _HostIndex(bundles)
    )
    object.__setattr__(policy, "_compiled", compiled)  # a cache on a frozen value
    return compiled


def evaluate(policy: Policy, action: Action, reference: ImageReference) -> Decision:
    """May `action` be done on `reference` under `policy`?"""
    registry = reference.registry
    if not policy.enabled:
        return registry_access_off(policy)
    port = reference.port if reference.port is not None else HTTPS_PORT
    # The most specific address alone decides; a broader one never overrides its narrowing.
    rules = _compile(policy).entries.find(reference.host, port)
    if rules is None:
        return _deny(policy, f"Access to registry {registry}", "add it to the allowed registries")
    verdict = rules.verdict(reference.repository)
    target = f"{registry}/{reference.repository}"
    if verdict is None:  # the address's entries name other repositories: they decided
        return _deny(
            policy, f"{action.title()} of {target}", "allow this repository", rules.entries[0]
        )
    if verdict.switched_off is not None:
        return _deny(
            policy,
            f"Access to registry {registry}",
            "switch it on in the allowed registries",
            verdict.switched_off,
        )
    if action is Action.PULL:
        permitting, described = verdict.pull, verdict.pull_described
    else:
        permitting, described = verdict.push, verdict.push_described
    if permitting is None:
        return _deny(
            policy, f"{action.title()} to {target}", f"allow {action} for it", verdict.entries[0]
        )
    reason = f"{action.title()} of {target} is allowed by the entry {described}"
    return _decision(policy, True, reason, permitting)


def evaluate_host(policy: Policy, host: str, port: int) -> Decision:
    """May a connection to `host:port` be made? The egress proxy's question."""
    if not policy.enabled:
        return registry_access_off(policy)
    try:
        host = normalize_host(host)
    except InvalidAddress:
        return _deny(policy, f"Access to host {host!r}", "add it to the allowed registries")
    target = join_host_port(host, port)
    compiled = _compile(policy)
    rules = compiled.entries.find(host, port)
    if rules is not None:
        allowed = next((e for e in rules.entries if e.allowed), None)
        if allowed is None:
            return _deny(
                policy,
                f"Access to {target}",
                "switch it on in the allowed registries",
                rules.entries[0],
            )
        return _allow_host(policy, target, allowed)
    rules = compiled.bundles.find(host, port)
    if rules is not None:
        return _allow_host(policy, target, rules.entries[0])
    return _deny(policy, f"Access to {target}", "add it to the allowed registries")


def registry_host(policy: Policy, host: str, port: int) -> bool:
    """Is `host:port` a registry as far as the policy knows? Covered by an entry (allowed or
    not), a catalog or extra host of an allowed entry, or a well-known registry of the catalog
    (`ghcr.io`, `quay.io`, ...). The transparent listener refuses such a host when the policy
    does; other hosts it refuses only once they show they are registries."""
    try:
        host = normalize_host(host)
    except InvalidAddress:
        return False
    compiled = _compile(policy)
    if compiled.entries.find(host, port) is not None or compiled.bundles.find(host, port):
        return True
    return well_known_registry(host)


def _allow_host(policy: Policy, target: str, entry: RegistryEntry) -> Decision:
    reason = f"Access to {target} is allowed for the entry {_describe(entry)}"
    return _decision(policy, True, reason, entry)


def _deny(policy: Policy, subject: str, fix: str, entry: RegistryEntry | None = None) -> Decision:
    org = policy.organization
    reason = f"{subject} is restricted by your organization '{org}' ({_source(policy)}). "
    reason += f"Ask an owner of '{org}' to {fix}."
    return Decision(False, reason, entry, policy.revision, org)


def registry_access_off(policy: Policy) -> Decision:
    """The decision for anything while Registry Access is off: allowed, worded here only."""
    org, revision = policy.organization, policy.revision
    reason = f"Registry access management is off for organization '{org}' ({_source(policy)}): "
    reason += "every registry is allowed."
    return Decision(True, reason, None, revision, org)


def _decision(policy: Policy, allowed: bool, subject: str, entry: RegistryEntry) -> Decision:
    """A decision whose reason is `subject` followed by the organization and revision."""
    org, revision = policy.organization, policy.revision
    reason = f"{subject} of organization '{org}' ({_source(policy)})."
    return Decision(allowed, reason, entry, revision, org)


def _source(policy: Policy) -> str:
    """Where the decision's rules come from: a published revision, or revision 0, a policy file
    written by hand (`regward check --policy`, `agent run --policy`) that no server published."""
    return f"policy revision {policy.revision}" if policy.revision else "local policy file"


def _describe(entry: RegistryEntry) -> str:
    text = str(entry.address)
    if entry.repositories:
        text += f" (repositories {', '.join(str(p) for p in entry.repositories)})"
    return text
