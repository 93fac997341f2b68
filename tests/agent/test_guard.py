"""The guard: what is enforced in each sign-in state, and the denial queue."""

from __future__ import annotations

import threading

import pytest

from regward.agent.guard import DenialQueue, DenialReport, Enforcement, Guard
from regward.policy import Action, Policy

POLICY = Policy.from_dict(
    {
        "organization": "acme",
        "revision": 7,
        "enabled": True,
        "registries": [{"address": "ghcr.io", "repositories": ["acme/*"]}],
    }
)


def test_unmanaged_machine_allows_everything() -> None:
    guard = Guard(Enforcement(mode="unmanaged"))
    assert guard.decide(Action.PULL, "evil.example/x").allowed
    assert guard.decide_host("evil.example", 443).allowed
    assert len(guard.denials) == 0


def test_policy_decides_and_denials_are_queued() -> None:
    guard = Guard(Enforcement(mode="local", policy=POLICY, organization="acme"))
    assert guard.decide(Action.PULL, "ghcr.io/acme/api:1").allowed
    refused = guard.decide(Action.PULL, "ghcr.io/other/api:1")
    assert not refused.allowed
    assert refused.revision == 7
    assert guard.decide_host("ghcr.io", 443).allowed
    assert not guard.decide_host("evil.example", 443).allowed
    reports = guard.denials.drain()
    assert [r.action for r in reports] == ["pull", "connect"]
    assert reports[0].target == "ghcr.io/other/api:1"
    assert reports[0].registry == "ghcr.io"


def test_registry_json_without_sign_in_refuses_everything() -> None:
    guard = Guard(Enforcement(mode="unmanaged", required_orgs=("acme", "globex")))
    for decision in (
        guard.decide(Action.PULL, "ghcr.io/acme/api"),
        guard.decide(Action.PUSH, "ghcr.io/acme/api"),
        guard.decide_host("ghcr.io", 443),
    ):
        assert not decision.allowed
        assert decision.message("http://dash") == (
            "Sign-in to organization 'acme' or 'globex' is required on this machine: every pull "
            "and push is refused until you run `regward login --server URL --org acme`."
        )


def test_registry_json_with_another_organization_refuses() -> None:
    enforcement = Enforcement(
        mode="signed-in", policy=POLICY, organization="acme", required_orgs=("globex",)
    )
    decision = Guard(enforcement).decide(Action.PULL, "ghcr.io/acme/api")
    assert not decision.allowed
    assert "(signed in to 'acme')" in decision.reason


def test_registry_json_satisfied_by_the_signed_in_organization() -> None:
    enforcement = Enforcement(
        mode="signed-in", policy=POLICY, organization="acme", required_orgs=("globex", "acme")
    )
    assert Guard(enforcement).decide(Action.PULL, "ghcr.io/acme/api").allowed


@pytest.mark.parametrize("mode", ["signed-in", "local"])
def test_signed_in_without_a_verified_policy_fails_closed(mode: str) -> None:
    guard = Guard(Enforcement(mode=mode, organization="acme"))  # type: ignore[arg-type]
    decision = guard.decide(Action.PULL, "ghcr.io/acme/api")
    assert not decision.allowed
    assert "No verified policy of organization 'acme'" in decision.message()
    assert not guard.decide_host("ghcr.io", 443).allowed


def test_an_unparseable_reference_is_refused_naming_it() -> None:
    guard = Guard(Enforcement(mode="local", policy=POLICY, organization="acme"))
    decision = guard.decide(Action.PULL, "UPPER/Case::bad")
    assert not decision.allowed
    assert "UPPER/Case::bad" in decision.message()


def test_update_swaps_the_snapshot_for_the_next_call() -> None:
    guard = Guard(Enforcement(mode="unmanaged"))
    guard.update(Enforcement(mode="local", policy=POLICY, organization="acme"))
    assert not guard.decide(Action.PULL, "evil.example/x").allowed


def test_host_decisions_are_kept_per_enforcement_and_every_refusal_is_reported() -> None:
    other = Policy.from_dict({**POLICY.to_dict(), "revision": 8, "registries": []})
    guard = Guard(Enforcement(mode="local", policy=POLICY, organization="acme"))
    first = guard.decide_host("ghcr.io", 443)
    assert first.allowed and guard.decide_host("ghcr.io", 443) is first  # kept
    guard.update(Enforcement(mode="local", policy=other, organization="acme"))
    refused = [guard.decide_host("ghcr.io", 443) for _ in range(3)]
    assert not refused[0].allowed and refused[0].revision == 8
    assert [r.revision for r in guard.denials.drain()] == [8, 8, 8]
    guard.update(Enforcement(mode="signed-in", organization="acme"))  # nothing verified
    assert not guard.decide_host("ghcr.io", 443).allowed


def test_watchers_hear_of_every_update_and_one_failing_stops_nothing() -> None:
    guard = Guard(Enforcement(mode="unmanaged"))
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("watcher exploded")

    guard.watch(broken)
    guard.watch(lambda: heard.append(guard.enforcement.mode))
    guard.update(Enforcement(mode="local", policy=POLICY, organization="acme"))
    guard.update(Enforcement(mode="unmanaged"))
    assert heard == ["local", "unmanaged"]


def report(n: int) -> DenialReport:
    return DenialReport(float(n), "pull", f"r/{n}", "r", "acme", 1, "no", "authz")


def test_denial_queue_is_bounded_and_counts_what_it_drops() -> None:
    queue = DenialQueue(maxlen=3)
    for n in range(5):
        queue.put(report(n))
    assert queue.dropped == 2
    assert [r.target for r in queue.drain()] == ["r/2", "r/3", "r/4"]
    assert queue.drain() == []


def test_requeue_keeps_order_and_the_bound() -> None:
    queue = DenialQueue(maxlen=3)
    batch = [report(0), report(1)]
    queue.put(report(2))
    queue.requeue(batch)
    assert [r.target for r in queue.drain()] == ["r/0", "r/1", "r/2"]
    queue.put(report(3))
    queue.put(report(4))
    queue.put(report(5))
    queue.requeue([report(9)])
    assert queue.dropped == 1
    assert len(queue) == 3


def test_denial_queue_is_safe_across_threads() -> None:
    queue = DenialQueue(maxlen=100_000)

    def producer() -> None:
        for n in range(5000):
            queue.put(report(n))

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for thread in threads:
        thread.start()
    drained = 0
    while any(t.is_alive() for t in threads) or len(queue):
        drained += len(queue.drain())
    for thread in threads:
        thread.join()
    drained += len(queue.drain())
    assert drained == 20_000


def test_unreadable_requests_are_refused_only_where_something_is_restricted() -> None:
    unmanaged = Guard(Enforcement(mode="unmanaged"))
    assert unmanaged.unreadable("its body is missing").allowed
    assert unmanaged.decide(Action.PULL, "Not A Reference").allowed
    off = Policy.from_dict({**POLICY.to_dict(), "enabled": False})
    switched_off = Guard(Enforcement(mode="local", policy=off, organization="acme"))
    assert switched_off.unreadable("its body is missing").allowed
    assert switched_off.decide(Action.PULL, "Not A Reference").allowed
    # One wording of "off", the policy core's, whatever the guard was asked.
    off_reason = "Registry access management is off for organization 'acme'"
    for decision in (
        switched_off.unreadable("x"),
        switched_off.decide(Action.PULL, "Not A Reference"),
        switched_off.decide(Action.PULL, "ghcr.io/a/b"),
        switched_off.decide_host("ghcr.io", 443),
    ):
        assert decision.reason.startswith(off_reason), decision.reason
    enforced = Guard(Enforcement(mode="local", policy=POLICY, organization="acme"))
    refused = enforced.unreadable("its body is missing")
    assert not refused.allowed
    assert refused.message() == "Regward refused this request because its body is missing."
    required = Guard(Enforcement(mode="unmanaged", required_orgs=("acme",)))
    assert "Sign-in to organization 'acme'" in required.unreadable("x").message()
