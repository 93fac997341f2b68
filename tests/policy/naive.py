"""A naive, obviously correct evaluator: a linear scan over every entry.

The tests compare the indexed engine with it on random policies; bench/match.py measures the
engine against it. It restates the rules of regward.policy.engine in the plainest form.
"""

from __future__ import annotations

from regward.policy import Action, ImageReference, Policy, RegistryEntry
from regward.policy.catalog import bundle_for


def naive_evaluate(policy: Policy, action: Action, reference: ImageReference) -> bool:
    if not policy.enabled:
        return True
    port = reference.port if reference.port is not None else 443
    covering = [e for e in policy.registries if e.address.matches(reference.host, port)]
    if not covering:
        return False
    top = max(e.address.specificity for e in covering)
    best_key = None
    best: list[RegistryEntry] = []
    for entry in covering:
        if entry.address.specificity != top:
            continue
        for pattern in entry.repositories or [None]:
            if pattern is None:
                repo_key = (0, 0)
            elif pattern.matches(reference.repository):
                repo_key = pattern.specificity
            else:
                continue
            if best_key is None or repo_key > best_key:
                best_key, best = repo_key, [entry]
            elif repo_key == best_key:
                best.append(entry)
    if not best or any(not e.allowed for e in best):
        return False
    return any(action in e.actions for e in best)


def naive_evaluate_host(policy: Policy, host: str, port: int) -> bool:
    """May the proxy connect to `host:port` (a normalized host)?"""
    if not policy.enabled:
        return True
    covering = [e for e in policy.registries if e.address.matches(host, port)]
    if covering:
        top = max(e.address.specificity for e in covering)
        return any(e.allowed for e in covering if e.address.specificity == top)
    for entry in policy.registries:
        found = bundle_for(entry.address) if entry.allowed else None
        hosts = (*(found[1] if found else ()), *entry.extra_hosts)
        if entry.allowed and any(h.matches(host, port) for h in hosts):
            return True
    return False
