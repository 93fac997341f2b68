"""Decisions: may this image be pulled or pushed, may this host be reached?

`evaluate(policy, action, reference)` answers for the AuthZ plugin and `regward check`;
`evaluate_host(policy, host, port)` for the egress proxy, which sees only where a connection
goes. Both use lookup tables built once per policy, so a decision costs a few dictionary
lookups (one per label of the host and per component of the repository), whatever the size of
the allowlist.

Rules (PRODUCT.md, "Policy semantics"): off allows everything. On, the most specific address
that covers the host and port decides (an exact host over a wildcard, a longer domain over a
shorter, an explicit port over none), so a broader address never overrides an entry that
narrows a host to some repositories. Among that address's entries the most specific repository
pattern decides (exact over prefix, longer prefix over shorter, any pattern over none); no
pattern matching means denied. Among equally specific entries a switched-off one wins, else the
action must be one any of them allows. The proxy may reach a host whose most specific address
has an entry switched on, or a catalog or extra host of an allowed entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from regward.errors import InvalidAddress
from regward.policy.address import DEFAULT_PORTS, Address, normalize_host
from regward.policy.catalog import bundle_for
from regward.policy.document import Action, Policy, RegistryEntry
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
class _Entry:
    """What a decision needs of an entry, in one object (fewer memory touches per decision)."""

    entry: RegistryEntry
    allowed: bool
    actions: frozenset[Action]
    """One of three shared sets, so it is always in cache."""
    described: str


_ACTION_SETS = {
    s: s for s in (frozenset(Action), frozenset({Action.PULL}), frozenset({Action.PUSH}))
}


@dataclass(slots=True)
class _Rules:
    """Every entry that shares one address, indexed by repository pattern."""

    address: Address
    port: int | None = field(init=False)
    specificity: tuple[int, int, int] = field(init=False)
    exact: dict[tuple[str, ...], tuple[_Entry, ...]] = field(default_factory=dict)
    prefix: dict[tuple[str, ...], tuple[_Entry, ...]] = field(default_factory=dict)
    everything: tuple[_Entry, ...] | None = None
    """The entries, when none of them names repositories."""

    def __post_init__(self) -> None:
        self.port = self.address.port
        self.specificity = self.address.specificity

    def covers(self, port: int) -> bool:
        return port == self.port if self.port is not None else port in DEFAULT_PORTS

    def add(self, entry: RegistryEntry) -> None:
        # Tuples, not lists: their items are inline, one memory touch fewer per decision.
        record = _Entry(entry, entry.allowed, _ACTION_SETS[entry.actions], _describe(entry))
        if not entry.repositories:
            self.prefix[()] = (*self.prefix.get((), ()), record)
        for pattern in entry.repositories:
            table = self.prefix if pattern.prefix else self.exact
            table[pattern.components] = (*table.get(pattern.components, ()), record)
        only_everything = not self.exact and list(self.prefix) == [()]
        self.everything = self.prefix[()] if only_everything else None

    def best(self, repository: str) -> tuple[_Entry, ...] | None:
        """The entries of the most specific pattern that matches `repository`, or None."""
        if self.everything is not None:  # the common case: no repository rules at this address
            return self.everything
        parts = tuple(repository.split("/"))
        entries = self.exact.get(parts)
        if entries:
            return entries
        for depth in range(len(parts) - 1, -1, -1):
            entries = self.prefix.get(parts[:depth])
            if entries:
                return entries
        return None

    def entries(self) -> Iterable[RegistryEntry]:
        for table in (self.exact, self.prefix):
            for records in table.values():
                yield from (record.entry for record in records)


class _HostIndex:
    """Address patterns by exact host and by wildcard domain (the part after `*.`)."""

    def __init__(self) -> None:
        self.exact: dict[str, tuple[_Rules, ...]] = {}
        self.wildcard: dict[str, tuple[_Rules, ...]] = {}
        self.wildcard_labels: set[int] = set()
        """Label counts of the wildcard domains: only parents of these lengths are looked up."""

    def rules_for(self, address: Address) -> _Rules:
        table = self.wildcard if address.wildcard else self.exact
        if address.wildcard:
            self.wildcard_labels.add(address.host.count(".") + 1)
        candidates = table.get(address.host, ())
        for rules in candidates:
            if rules.address == address:
                return rules
        rules = _Rules(address)
        table[address.host] = (*candidates, rules)
        return rules

    def matching(self, host: str, port: int) -> list[_Rules]:
        """The most specific kind of pattern covering `host:port`: exact hosts, else wildcards."""
        found = [r for r in self.exact.get(host, ()) if r.covers(port)]
        if found:
            return found  # an exact host is more specific than any wildcard
        if self.wildcard:
            labels = host.count(".") + 1
            dot = host.find(".")
            while dot != -1:  # every proper parent domain, by whole labels
                labels -= 1
                if labels in self.wildcard_labels:
                    parent = self.wildcard.get(host[dot + 1 :], ())
                    found.extend(r for r in parent if r.covers(port))
                dot = host.find(".", dot + 1)
        return found


@dataclass
class _Compiled:
    entries: _HostIndex
    bundles: _HostIndex


def _compile(policy: Policy) -> _Compiled:
    compiled: _Compiled | None = policy._compiled
    if compiled is not None:
        return compiled
    entries, bundles = _HostIndex(), _HostIndex()
    for entry in policy.registries:
        entries.rules_for(entry.address).add(entry)
        if entry.allowed:
            found = bundle_for(entry.address)
            for host in (*(found[1] if found else ()), *entry.extra_hosts):
                bundles.rules_for(host).add(entry)
    compiled = _Compiled(entries, bundles)
    object.__setattr__(policy, "_compiled", compiled)  # a cache on a frozen value
    return compiled


def evaluate(policy: Policy, action: Action, reference: ImageReference) -> Decision:
    """May `action` be done on `reference` under `policy`?"""
    registry = reference.registry
    if not policy.enabled:
        return _off(policy)
    port = reference.port if reference.port is not None else HTTPS_PORT
    matching = _compile(policy).entries.matching(reference.host, port)
    if not matching:
        return _deny(policy, f"Access to registry {registry}", "add it to the allowed registries")
    # The most specific address alone decides; a broader one never overrides its narrowing.
    rules = matching[0] if len(matching) == 1 else max(matching, key=_by_specificity)
    best = rules.best(reference.repository)
    target = f"{registry}/{reference.repository}"
    if best is None:
        return _deny(policy, f"{action.title()} of {target}", "allow this repository")
    switched_off = next((e for e in best if not e.allowed), None)
    if switched_off is not None:
        return _deny(
            policy,
            f"Access to registry {registry}",
            "switch it on in the allowed registries",
            switched_off.entry,
        )
    permitting = next((e for e in best if action in e.actions), None)
    if permitting is None:
        return _deny(
            policy, f"{action.title()} to {target}", f"allow {action} for it", best[0].entry
        )
    reason = f"{action.title()} of {target} is allowed by the entry {permitting.described}"
    return _decision(policy, True, reason, permitting.entry)


def evaluate_host(policy: Policy, host: str, port: int) -> Decision:
    """May a connection to `host:port` be made? The egress proxy's question."""
    if not policy.enabled:
        return _off(policy)
    try:
        host = normalize_host(host)
    except InvalidAddress:
        return _deny(policy, f"Access to host {host!r}", "add it to the allowed registries")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    compiled = _compile(policy)
    direct = compiled.entries.matching(host, port)
    if direct:
        top = max(rules.specificity for rules in direct)
        entries = [e for r in direct if r.specificity == top for e in r.entries()]
        allowed = next((e for e in entries if e.allowed), None)
        if allowed is None:
            return _deny(
                policy, f"Access to {target}", "switch it on in the allowed registries", entries[0]
            )
        return _allow_host(policy, target, allowed)
    for rules in compiled.bundles.matching(host, port):
        for entry in rules.entries():
            return _allow_host(policy, target, entry)
    return _deny(policy, f"Access to {target}", "add it to the allowed registries")


def _by_specificity(rules: _Rules) -> tuple[int, int, int]:
    return rules.specificity


def _allow_host(policy: Policy, target: str, entry: RegistryEntry) -> Decision:
    reason = f"Access to {target} is allowed for the entry {_describe(entry)}"
    return _decision(policy, True, reason, entry)


def _deny(policy: Policy, subject: str, fix: str, entry: RegistryEntry | None = None) -> Decision:
    org = policy.organization
    reason = f"{subject} is restricted by your organization '{org}' (policy revision "
    reason += f"{policy.revision}). Ask an owner of '{org}' to {fix}."
    return Decision(False, reason, entry, policy.revision, org)


def _off(policy: Policy) -> Decision:
    org, revision = policy.organization, policy.revision
    reason = f"Registry access management is off for organization '{org}' (policy revision "
    reason += f"{revision}): every registry is allowed."
    return Decision(True, reason, None, revision, org)


def _decision(policy: Policy, allowed: bool, subject: str, entry: RegistryEntry) -> Decision:
    """A decision whose reason is `subject` followed by the organization and revision."""
    org, revision = policy.organization, policy.revision
    reason = f"{subject} of organization '{org}' (policy revision {revision})."
    return Decision(allowed, reason, entry, revision, org)


def _describe(entry: RegistryEntry) -> str:
    text = str(entry.address)
    if entry.repositories:
        text += f" (repositories {', '.join(str(p) for p in entry.repositories)})"
    return text
