"""Lint: entries that are risky (they open more than a registry) or dead (they never decide).

risky  a shared cloud-storage or CDN domain (`amazonaws.com`, `blob.core.windows.net`, ...)
       as an address or extra host: it admits every tenant's buckets, an exfiltration path;
       a wildcard over a public suffix (`*.com`, `*.co.uk`)
dead   an entry whose address and repositories another entry already lists, so it never
       decides; extra hosts that the entry's own address or its catalog bundle already cover
whole  registry access switched off, or switched on with nothing allowed
"""

from __future__ import annotations

from dataclasses import dataclass

from regward.policy.address import Address
from regward.policy.catalog import bundle_for
from regward.policy.document import Policy, RegistryEntry, RepositoryPattern

SHARED_DOMAINS = (
    "amazonaws.com",
    "s3.amazonaws.com",
    "blob.core.windows.net",
    "storage.googleapis.com",
    "googleapis.com",
    "cloudfront.net",
    "githubusercontent.com",
    "r2.cloudflarestorage.com",
    "azureedge.net",
    "appspot.com",
)
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "gov", "ac", "edu"})


@dataclass(frozen=True, slots=True)
class LintWarning:
    entry: int
    """The entry's number in the policy (from 1), or 0 for a warning about the whole policy:
    several entries may share an address."""
    address: str
    """The entry's address, or "" for a warning about the whole policy."""
    message: str

    def __str__(self) -> str:
        return f"{self.address}: {self.message}" if self.address else self.message


def lint(policy: Policy) -> list[LintWarning]:
    warnings: list[LintWarning] = []
    if not policy.enabled:
        warnings.append(LintWarning(0, "", "registry access is off: every registry is allowed"))
    elif not any(entry.allowed for entry in policy.registries):
        warnings.append(
            LintWarning(0, "", "registry access is on with no allowed entry: nothing can be pulled")
        )
    seen: dict[tuple[Address, RepositoryPattern], int] = {}
    for number, entry in enumerate(policy.registries, start=1):
        name = str(entry.address)
        for host in (entry.address, *entry.extra_hosts):
            warning = _risk(host)
            if warning:
                warnings.append(LintWarning(number, name, warning))
        patterns = entry.repositories or (RepositoryPattern((), prefix=True),)
        earlier = [seen.get((entry.address, p)) for p in patterns]
        if all(earlier):
            numbers = ", ".join(f"#{n}" for n in sorted({n for n in earlier if n}))
            warnings.append(
                LintWarning(
                    number,
                    name,
                    f"entry #{number} never decides: entry {numbers} lists the same address "
                    "and repositories",
                )
            )
        for pattern in patterns:
            seen.setdefault((entry.address, pattern), number)
        warnings.extend(_redundant_extra_hosts(number, entry))
    warnings.extend(_narrower_takes_actions(policy.registries))
    return warnings


def _narrower_takes_actions(entries: tuple[RegistryEntry, ...]) -> list[LintWarning]:
    """An entry for some repositories decides for them alone, so what it leaves out of the
    actions of the host's entry for every repository is refused there: often a surprise."""
    found = []
    for broad_number, broad in enumerate(entries, start=1):
        if broad.repositories or not broad.allowed:
            continue
        for number, narrow in enumerate(entries, start=1):
            lost = broad.actions - narrow.actions
            if narrow.address == broad.address and narrow.repositories and narrow.allowed and lost:
                patterns = ", ".join(str(p) for p in narrow.repositories)
                found.append(
                    LintWarning(
                        number,
                        str(narrow.address),
                        f"entry #{number} decides for {patterns}: {'/'.join(sorted(lost))} "
                        f"there is refused, though entry #{broad_number} allows it elsewhere "
                        "on this registry",
                    )
                )
    return found


def _risk(host: Address) -> str | None:
    if _public_suffix_wildcard(host):
        return f"{host} is a wildcard over a public suffix: it admits any registry"
    shared = _shared_domain(host)
    if shared:
        return (
            f"{host} covers the shared domain {shared}: every tenant's storage, not just this "
            "registry's; list the exact host (e.g. the registry's bucket)"
        )
    return None


def _shared_domain(address: Address) -> str | None:
    for domain in SHARED_DOMAINS:
        if address.host == domain or (address.wildcard and domain.endswith("." + address.host)):
            return domain
    return None


def _public_suffix_wildcard(address: Address) -> bool:
    labels = address.host.split(".")
    return address.wildcard and (
        len(labels) == 1
        or (len(labels) == 2 and labels[0] in _SECOND_LEVEL and len(labels[1]) == 2)
    )


def _redundant_extra_hosts(number: int, entry: RegistryEntry) -> list[LintWarning]:
    found = bundle_for(entry.address)
    covered = (entry.address, *(found[1] if found else ()))
    return [
        LintWarning(
            number,
            str(entry.address),
            f"extra host {host} is already covered by the entry or its catalog hosts",
        )
        for host in entry.extra_hosts
        if any(c.matches(host.host, host.port or 443) for c in covered) and not host.wildcard
    ]
