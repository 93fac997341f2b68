"""The agent's single point of decision: which policy is enforced, and the answer to one request.

Every enforcement point of the agent (the AuthZ plugin, the egress proxy) asks the same `Guard`:

    guard.decide(Action.PULL, "ghcr.io/acme/api:1.2")   -> Decision
    guard.decide_host("ghcr.io", 443)                    -> Decision

The guard holds one immutable `Enforcement` snapshot, swapped whole when sync verifies a new
revision, so a decision never sees half an update and never waits for I/O. What it enforces:

    --policy FILE                        that file's policy (offline mode)
    signed in, verified policy cached    the cached revision of the signed-in organization
    signed in, nothing verified yet      nothing passes (fail closed)
    registry.json present, not signed in
      to one of its organizations        nothing passes; the message names the organizations
    neither                              everything passes (no organization manages this machine)

Denials go to a bounded `DenialQueue` that sync drains in batches; a full queue drops the oldest
report and counts it, so reporting never slows or blocks a decision.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from regward.errors import InvalidReference
from regward.policy import (
    Action,
    Decision,
    ImageReference,
    Policy,
    evaluate,
    evaluate_host,
    registry_access_off,
)
from regward.policy.address import join_host_port

log = logging.getLogger("regward.agent")

Mode = Literal["local", "signed-in", "unmanaged"]


@dataclass(frozen=True)
class Refusal(Decision):
    """A decision made before any policy could be consulted (sign-in required, no verified
    policy, an unreadable request). Its message is its reason, word for word."""

    def message(self, dashboard_url: str | None = None) -> str:
        return self.reason


def refuse(reason: str, organization: str = "", revision: int = 0) -> Refusal:
    """A fail-closed decision whose message is `reason`."""
    return Refusal(
        allowed=False, reason=reason, entry=None, revision=revision, organization=organization
    )


@dataclass(frozen=True)
class Enforcement:
    """What the guard enforces right now; replaced whole, never mutated."""

    mode: Mode
    policy: Policy | None = None
    organization: str | None = None  # the signed-in (or policy file's) organization
    required_orgs: tuple[str, ...] = ()  # from registry.json; empty when the file is absent
    dashboard_url: str | None = None
    source: str = ""  # the policy file's path or the server's URL, for `status`

    @property
    def blocked_reason(self) -> str | None:
        """Why nothing may pass under this snapshot, or None when the policy decides."""
        if self.required_orgs and (
            self.organization is None or self.organization not in self.required_orgs
        ):
            return sign_in_required(self.required_orgs, self.organization)
        if self.mode != "unmanaged" and self.policy is None:
            return (
                f"No verified policy of organization '{self.organization}' is on this machine "
                "yet, so every pull and push is refused. Check `regward status` and the "
                "connection to the Regward server."
            )
        return None


def sign_in_required(orgs: Sequence[str], signed_in: str | None) -> str:
    names = " or ".join(f"'{org}'" for org in orgs)
    first = orgs[0]
    current = f" (signed in to '{signed_in}')" if signed_in else ""
    return (
        f"Sign-in to organization {names} is required on this machine{current}: every pull "
        f"and push is refused until you run `regward login --server URL --org {first}`."
    )


_UNMANAGED = Decision(
    allowed=True,
    reason="no organization manages this machine",
    entry=None,
    revision=0,
    organization="",
)


@dataclass(frozen=True)
class DenialReport:
    """One refused request, as sent to the server's denial reports."""

    time: float
    action: str  # "pull", "push" or "connect"
    target: str  # the normalized reference, or host:port for a connection
    registry: str
    organization: str
    revision: int
    reason: str
    source: str  # "authz", "proxy" or "transparent"
    origin: str = ""  # where a transparent connection came from ("from 172.17.0.2 on docker0")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class DenialQueue:
    """A bounded, thread-safe queue of denial reports; `put` never blocks."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._items: collections.deque[DenialReport] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, report: DenialReport) -> None:
        with self._lock:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(report)

    def drain(self, limit: int = 500) -> list[DenialReport]:
        with self._lock:
            batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
        return batch

    def requeue(self, batch: Sequence[DenialReport]) -> None:
        """Put back a batch that could not be sent, oldest first, without growing past the bound."""
        with self._lock:
            for report in reversed(batch):
                if len(self._items) == self._items.maxlen:
                    self.dropped += 1
                    break
                self._items.appendleft(report)

    def __len__(self) -> int:
        return len(self._items)


HOST_DECISIONS_KEPT = 4096
"""Host decisions cached per enforcement; the cache starts over when full."""


def _host_decision(state: Enforcement, host: str, port: int) -> Decision:
    blocked = state.blocked_reason
    if blocked is not None:
        return refuse(blocked, state.organization or "")
    if state.policy is None:
        return _UNMANAGED
    return evaluate_host(state.policy, host, port)


class Guard:
    """Holds the enforced policy and answers every enforcement point's question."""

    def __init__(self, enforcement: Enforcement, queue: DenialQueue | None = None) -> None:
        self._enforcement = enforcement
        self.denials = queue if queue is not None else DenialQueue()
        self._watchers: list[Callable[[], None]] = []
        # Host decisions of the enforcement they were made under: the proxy asks about the
        # same few registries on every connection, and a decision is a pure function of
        # (enforcement, host, port). One tuple, replaced whole, so a decision cached under an
        # old enforcement is never served under a new one, whichever thread asks.
        self._hosts: tuple[Enforcement, dict[tuple[str, int], Decision]] = (enforcement, {})
        # Told of every decision: (enforcement point, allowed, seconds it took); the metrics.
        self.observer: Callable[[str, bool, float], None] | None = None

    @property
    def enforcement(self) -> Enforcement:
        return self._enforcement

    def update(self, enforcement: Enforcement) -> None:
        """Swap in a new snapshot (a verified revision, a logout), used from the next call;
        then tell the watchers."""
        self._enforcement = enforcement
        for watcher in self._watchers:
            try:
                watcher()
            except Exception:  # the new snapshot is in force whatever a watcher does
                log.exception("a watcher of the enforced policy failed")

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every update (the proxy re-checks its open connections)."""
        self._watchers.append(callback)

    def decide(
        self,
        action: Action,
        reference: ImageReference | str,
        source: str = "authz",
        *,
        record: bool = True,
    ) -> Decision:
        """May `action` be done on `reference`? A reference that cannot be parsed is refused.
        With `record` off a refusal is not reported (its caller reports what it carries out)."""
        started = time.perf_counter()
        decision = self._decide(action, reference, source, record)
        self._observe(source, decision, started)
        return decision

    def decide_host(
        self, host: str, port: int, source: str = "proxy", *, record: bool = True
    ) -> Decision:
        """May a connection to host:port be made (the egress proxy's question)? With `record`
        off a refusal is not reported (the transparent listener reports only the refusals
        it carries out: a host that is no registry passes whatever the policy says)."""
        started = time.perf_counter()
        decision = self._decide_host(host, port, source, record)
        self._observe(source, decision, started)
        return decision

    def _observe(self, source: str, decision: Decision, started: float) -> None:
        if self.observer is not None:
            self.observer(source, decision.allowed, time.perf_counter() - started)

    def observed(self, point: str, allowed: bool, seconds: float) -> None:
        """A decision made elsewhere for this guard (a proxy worker process): counted as if
        made here."""
        if self.observer is not None:
            self.observer(point, allowed, seconds)

    def _decide(
        self, action: Action, reference: ImageReference | str, source: str, record: bool
    ) -> Decision:
        state = self._enforcement
        blocked = state.blocked_reason
        if blocked is not None:
            decision: Decision = refuse(blocked, state.organization or "")
            if record:
                self.report(decision, action.value, str(reference), "", source=source)
            return decision
        if state.policy is None:
            return _UNMANAGED
        if isinstance(reference, str):
            try:
                reference = ImageReference.parse(reference)
            except InvalidReference as error:
                if not state.policy.enabled:
                    return registry_access_off(state.policy)
                decision = refuse(
                    f"Refused {action.value} of '{reference}': {error}",
                    state.organization or "",
                    state.policy.revision,
                )
                if record:
                    self.report(decision, action.value, str(reference), "", source=source)
                return decision
        decision = evaluate(state.policy, action, reference)
        if record and not decision.allowed:
            self.report(decision, action.value, str(reference), reference.registry, source=source)
        return decision

    def _decide_host(self, host: str, port: int, source: str, record: bool) -> Decision:
        state = self._enforcement
        cached = self._hosts
        if cached[0] is not state:
            cached = self._hosts = (state, {})
        decision = cached[1].get((host, port))
        if decision is None:
            decision = _host_decision(state, host, port)
            if len(cached[1]) >= HOST_DECISIONS_KEPT:
                cached[1].clear()
            cached[1][(host, port)] = decision
        if record and not decision.allowed:
            self.report(decision, "connect", join_host_port(host, port), host, source=source)
        return decision

    def decide_local(self, image: str, source: str = "authz") -> Decision:
        """May an image that no registry gave (built, loaded or imported on this machine) be
        used? Yes, unless nothing may pass here (sign-in required, no verified policy)."""
        state = self._enforcement
        blocked = state.blocked_reason
        if blocked is not None:
            decision: Decision = refuse(blocked, state.organization or "")
            self.report(decision, "run", image, "", source=source)
            return decision
        if state.policy is None:
            return _UNMANAGED
        return Decision(
            allowed=True,
            reason=f"the image {image!r} was built or loaded on this machine",
            entry=None,
            revision=state.policy.revision,
            organization=state.policy.organization,
        )

    def unreadable(self, detail: str, source: str = "authz") -> Decision:
        """Refuse a registry request that cannot be read (fail closed), saying what was wrong;
        where nothing is restricted (no organization, or Registry Access off) it passes."""
        started = time.perf_counter()
        decision = self._unreadable(detail, source)
        self._observe(source, decision, started)
        return decision

    def _unreadable(self, detail: str, source: str) -> Decision:
        state = self._enforcement
        blocked = state.blocked_reason
        if blocked is not None:
            decision: Decision = refuse(blocked, state.organization or "")
            self.report(decision, "unknown", "", "", source=source)
            return decision
        if state.policy is None:
            return _UNMANAGED
        if not state.policy.enabled:
            return registry_access_off(state.policy)
        decision = refuse(
            f"Regward refused this request because {detail}.",
            state.organization or "",
            state.policy.revision if state.policy else 0,
        )
        self.report(decision, "unknown", "", "", source=source)
        return decision

    def message(self, decision: Decision) -> str:
        """The denial text shown to the user, with the dashboard address where one is known."""
        return decision.message(self._enforcement.dashboard_url)

    def report(
        self,
        decision: Decision,
        action: str,
        target: str,
        registry: str,
        *,
        source: str,
        origin: str = "",
    ) -> None:
        """Queue the denial report of a refusal carried out (`target`: the reference, or
        host:port for a connection)."""
        self.denials.put(
            DenialReport(
                time=time.time(),
                action=action,
                target=target,
                registry=registry,
                organization=decision.organization,
                revision=decision.revision,
                reason=decision.reason,
                source=source,
                origin=origin,
            )
        )
