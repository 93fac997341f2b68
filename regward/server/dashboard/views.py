"""What the templates show: service results turned into plain, display-ready values.

No business rules live here; the services decide, this module only words and formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from regward.errors import RegwardError
from regward.policy import ImageReference, LintWarning
from regward.policy.text import shown
from regward.server.models import ActivityEvent, Denial
from regward.server.services import activity
from regward.server.services.devices import DeviceStatus
from regward.server.services.registry_access import Change, repositories_text


@dataclass
class EntryRow:
    address: str
    nickname: str
    allowed: bool
    repositories: list[str]
    actions: list[str]
    extra_hosts: list[str]
    warnings: list[str] = field(default_factory=list)
    pending: str = ""
    """"new" or "changed" when Save & Apply has not yet published this entry as it stands."""

    @property
    def key_repositories(self) -> str:
        """The repositories half of the entry's key, as the forms' hidden field carries it."""
        return repositories_text(self.repositories)

    @property
    def label(self) -> str:
        """`ghcr.io`, or `ghcr.io (acme/*)`: tells apart the entries of one address."""
        return entry_label(self.address, self.repositories)


def entry_label(address: str, repositories: Iterable[str]) -> str:
    patterns = list(repositories)
    return f"{address} ({', '.join(patterns)})" if patterns else address


_PENDING = {"registry_access.registry_added": "new", "registry_access.registry_updated": "changed"}


def entry_rows(
    registries: Iterable[Mapping[str, Any]],
    warnings: Sequence[LintWarning],
    pending: Sequence[Change] = (),
) -> list[EntryRow]:
    """One row per entry of the draft, in its order (the order `lint` numbers them in), each
    marked when the applied revision does not have it as it stands."""
    by_entry: dict[int, list[str]] = {}
    for warning in warnings:
        by_entry.setdefault(warning.entry, []).append(capitalized(warning.message))
    not_applied = {
        (change.address, change.repositories): _PENDING[change.action]
        for change in pending
        if change.action in _PENDING
    }
    rows = [
        EntryRow(
            address=str(entry["address"]),
            nickname=str(entry.get("nickname") or ""),
            allowed=bool(entry.get("allowed", True)),
            repositories=list(entry.get("repositories") or ()),
            actions=list(entry.get("actions") or ("pull", "push")),
            extra_hosts=list(entry.get("extra_hosts") or ()),
            warnings=by_entry.get(number, []),
        )
        for number, entry in enumerate(registries, start=1)
    ]
    for row in rows:
        row.pending = not_applied.get((row.address, tuple(sorted(row.repositories))), "")
    return rows


ENTRY_SORTS = {
    "address": "Address, A to Z",
    "-address": "Address, Z to A",
    "listed": "As listed in the policy",
}


@dataclass
class EntryGroup:
    """The entries of one address, side by side on the page."""

    address: str
    rows: list[EntryRow]


def _matches(row: EntryRow, search: str) -> bool:
    words = [row.address, row.nickname, *row.repositories, *row.extra_hosts]
    return any(search in word.casefold() for word in words)


def entry_groups(
    rows: Sequence[EntryRow], *, search: str = "", sort: str = "address"
) -> list[EntryGroup]:
    """The rows that match `search` (a part of the address, nickname, a repository or an extra
    host, any case), grouped by address; groups by address (`address`, `-address`) or in the
    order the policy first lists them (`listed`), the entries of a group by repositories
    (or as listed)."""
    needle = search.casefold()
    groups: dict[str, EntryGroup] = {}
    for row in rows:
        if not needle or _matches(row, needle):
            groups.setdefault(row.address, EntryGroup(row.address, [])).rows.append(row)
    ordered = list(groups.values())
    if sort != "listed":
        ordered.sort(key=lambda group: group.address.casefold(), reverse=sort == "-address")
        for group in ordered:
            group.rows.sort(key=lambda row: row.key_repositories)
    return ordered


ENTRIES_PER_PAGE = 100
"""Entries on one page of the registry list (a page ends with a whole address)."""


def page_of_groups(
    groups: Sequence[EntryGroup], number: int, size: int = ENTRIES_PER_PAGE
) -> tuple[list[EntryGroup], int]:
    """The groups on page `number` (the last page when past it) and how many pages there are:
    pages of about `size` entries, never splitting the entries of one address."""
    pages: list[list[EntryGroup]] = [[]]
    count = 0
    for group in groups:
        if count >= size:
            pages.append([])
            count = 0
        pages[-1].append(group)
        count += len(group.rows)
    return pages[min(number, len(pages)) - 1], len(pages)


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe_change(change: Change) -> str:
    """One line for the pending-changes banner, naming who made the change."""
    if change.action == "registry_access.enabled":
        text = "Turn Registry Access Management on"
    elif change.action == "registry_access.disabled":
        text = "Turn Registry Access Management off"
    else:
        verb = {
            "registry_access.registry_added": "Add",
            "registry_access.registry_updated": "Change",
            "registry_access.registry_removed": "Remove",
        }.get(change.action, change.action)
        text = f"{verb} {entry_label(change.address or '', change.repositories)}"
    return f"{text} (by {change.edited_by})" if change.edited_by else text


def when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(moment: datetime, now: datetime | None = None) -> str:
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"  # pragma: no cover - the loop always returns


def _yaml(value: Any) -> str:
    return yaml.safe_dump(
        _shown(value), sort_keys=False, default_flow_style=False, allow_unicode=True
    ).strip()


def _shown(value: Any) -> Any:
    """`value` with its text as pages show it (`shown`): a nickname stored before invisible
    characters were refused reads as what it holds."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {key: _shown(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shown(item) for item in value]
    return value


@dataclass
class EventRow:
    action: str
    summary: str
    actor: str
    time: str
    time_iso: str
    before: str | None
    after: str | None


def event_row(event: ActivityEvent) -> EventRow:
    data = dict(event.data or {})
    subject = data.get("address") or data.get("member") or data.get("name") or data.get("machine")
    if data.get("address") and isinstance(data.get("repositories"), list):
        subject = entry_label(str(data["address"]), (str(r) for r in data["repositories"]))
    summary = activity.describe(event.action)
    if subject:
        summary = f"{summary}: {subject}"
    if event.action == "registry_access.applied" and "revision" in data:
        summary = f"{summary} as revision {data['revision']}"
    before = data.get("before")
    after = data.get("after")
    return EventRow(
        action=event.action,
        summary=summary,
        actor=event.actor,
        time=when(event.created_at),
        time_iso=event.created_at.isoformat(),
        before=None if before is None else _yaml(before),
        after=None if after is None else _yaml(after),
    )


STATE_WORDS = {
    "current": ("Current", "ok"),
    "outdated": ("Outdated", "warn"),
    "refused": ("Refused a revision", "bad"),
    "unprotected": ("Docker Engine not protected", "bad"),
}
"""Each of devices.STATES as pages name it, and its tone; the Overview's counts, the Devices
filter and each device's Status say the same words for the same state."""


@dataclass
class DeviceRow:
    id: str
    hostname: str
    user: str
    revision: int | None
    last_seen: str
    last_seen_iso: str
    state: str  # one of devices.STATES, the worst: what the Overview counts it as
    outdated: bool
    refusal: str  # "Refused revision 7, which does not verify ...", or "" when none
    engine: str  # "protected", "not protected" or "unknown"
    engine_detail: str  # a few words beside it ("proxy off"), or ""
    engine_problem: str  # why the engine is not protected and the fix, or "" when it is
    token: str = ""  # the machine's own device token: "active", "revoked", or "" without one

    @property
    def state_words(self) -> str:
        return STATE_WORDS[self.state][0]

    @property
    def state_tone(self) -> str:
        return STATE_WORDS[self.state][1]


ENGINE_UNKNOWN = "no Docker Engine answered the agent, or the agent is too old to say"
ENGINE_FIX = (
    "On the machine, run regward agent install and restart dockerd; regward status shows "
    "the details."
)


def engine_words(status: DeviceStatus) -> tuple[str, str, str]:
    """(state, detail, problem) of the device's Docker Engine for the Devices page."""
    engine = status.engine
    if engine is None:
        return "unknown", ENGINE_UNKNOWN, ""
    if engine.protected:
        return (
            "protected",
            "" if engine.proxy else "AuthZ plugin only: the agent's proxy is off",
            "",
        )
    problems = []
    if not engine.authz:
        problems.append(
            "dockerd does not use the agent's AuthZ plugin, so its pulls, pushes and runs are "
            "not checked"
        )
    if engine.proxy is False:
        problems.append(
            "dockerd does not send registry traffic through the agent's proxy, so pulls inside "
            "builds are not checked"
        )
    problem = f"Docker Engine not protected: {'; '.join(problems)}. {ENGINE_FIX}"
    return "not protected", "", problem


def token_state(status: DeviceStatus) -> str:
    """The machine's own device token: "active", "revoked", or "" without one."""
    if status.token is None:
        return ""
    return "active" if status.token.revoked_at is None else "revoked"


def device_row(status: DeviceStatus) -> DeviceRow:
    device = status.device
    engine, engine_detail, engine_problem = engine_words(status)
    return DeviceRow(
        id=device.agent_id,
        hostname=device.hostname,
        user=device.user.username if device.user else "",
        revision=device.applied_revision or None,  # 0: nothing verified yet
        last_seen=f"{ago(device.last_seen)} ({when(device.last_seen)})",
        last_seen_iso=device.last_seen.isoformat(),
        state=status.state,
        outdated=not status.up_to_date,
        refusal=capitalized(device.refusal or ""),
        engine=engine,
        engine_detail=engine_detail,
        engine_problem=engine_problem,
        token=token_state(status),
    )


@dataclass
class DenialRow:
    time: str
    time_iso: str
    reference: str
    action: str
    device: str
    user: str
    reason: str
    revision: int | None
    registry: str
    repository: str  # "" when the reference does not parse

    @property
    def revision_note(self) -> str:
        """`revision N` beside the reason, unless the reason names it already."""
        if self.revision is None or f"revision {self.revision}" in self.reason:
            return ""
        return f"revision {self.revision}"


def denial_row(denial: Denial) -> DenialRow:
    try:
        repository = ImageReference.parse(denial.reference).repository
    except RegwardError:
        repository = ""
    return DenialRow(
        time=when(denial.occurred_at),
        time_iso=denial.occurred_at.isoformat(),
        reference=denial.reference,
        action=denial.action,
        device=denial.agent_id,
        user=denial.user.username if denial.user else "",
        reason=denial.reason,
        revision=denial.revision or None,
        registry=denial.registry_host,
        repository=repository,
    )


DEVICE_CSV_HEADER = (
    "hostname",
    "agent_id",
    "user",
    "state",
    "applied_revision",
    "current_revision",
    "docker_engine",
    "engine_authz",
    "engine_proxy",
    "refusal",
    "machine_token",
    "first_seen",
    "last_seen",
)


def device_csv_row(status: DeviceStatus) -> tuple[object, ...]:
    """A device as a row under DEVICE_CSV_HEADER (times in ISO 8601, UTC)."""
    device = status.device
    engine, _, _ = engine_words(status)
    return (
        device.hostname,
        device.agent_id,
        device.user.username if device.user else "",
        status.state,
        device.applied_revision,
        status.current_revision,
        engine,
        device.engine_authz,
        device.engine_proxy,
        device.refusal,
        token_state(status),
        device.first_seen.isoformat(),
        device.last_seen.isoformat(),
    )


DENIAL_CSV_HEADER = (
    "occurred_at",
    "reference",
    "registry",
    "action",
    "revision",
    "agent_id",
    "user",
    "reason",
    "received_at",
)


def denial_csv_row(denial: Denial) -> tuple[object, ...]:
    """A denial as a row under DENIAL_CSV_HEADER (times in ISO 8601, UTC)."""
    return (
        denial.occurred_at.isoformat(),
        denial.reference,
        denial.registry_host,
        denial.action,
        denial.revision,
        denial.agent_id,
        denial.user.username if denial.user else "",
        denial.reason,
        denial.received_at.isoformat(),
    )
