"""Registry Access settings: the draft owners edit, and Save & Apply, which publishes it.

The draft holds the toggle and the entries in the policy file's form (`RegistryEntry.to_dict()`),
plus a `version` bumped by every write. A write may name the version it was based on; if the
draft has moved on since, it is refused with Conflict, so two owners never overwrite each other
unknowingly. Entry-level writes (add, update, remove, toggle) are applied to the current draft
under a row lock, so without a version they still never lose a concurrent edit.

`apply` signs the draft as revision N+1 and writes the Activity events that describe what
changed since revision N (Docker's action names), all in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from regward.errors import InvalidPolicy
from regward.policy import Policy, RegistryEntry, SignedPolicy, sign
from regward.server.errors import Conflict, InvalidInput, NotFound
from regward.server.models import Draft, Organization, Revision, User, utcnow
from regward.server.notify import announce
from regward.server.services import activity

DOCKER_HUB = {"address": "docker.io", "nickname": "Docker Hub"}
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Change:
    """One difference between two policies, as an Activity event would record it."""

    action: str  # registry_access.enabled|disabled|registry_added|registry_updated|registry_removed
    address: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True)
class DraftState:
    """The draft as owners see it, with what Save & Apply would change."""

    organization: str
    enabled: bool
    registries: list[dict[str, Any]]
    version: int
    updated_at: datetime
    updated_by: str | None
    applied_revision: int
    pending: tuple[Change, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "enabled": self.enabled,
            "registries": self.registries,
            "version": self.version,
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
            "applied_revision": self.applied_revision,
            "pending_changes": [
                {"action": c.action, "address": c.address, "before": c.before, "after": c.after}
                for c in self.pending
            ],
        }


@dataclass(frozen=True)
class AppliedRevision:
    revision: int
    signed_json: str
    created_at: datetime
    changes: tuple[Change, ...]


# --- parsing -----------------------------------------------------------------------------


def parse_entry(data: object, where: str = "entry") -> RegistryEntry:
    """One entry in the policy file's form; InvalidInput naming the field and the value."""
    try:
        return RegistryEntry.from_dict(data, where)
    except InvalidPolicy as error:
        raise InvalidInput(str(error)) from None


def parse_entries(data: object) -> list[RegistryEntry]:
    """A `registries` list; InvalidInput for a bad entry or an address listed twice."""
    if not isinstance(data, list):
        raise InvalidInput(f"registries: {data!r} must be a list of entries")
    if len(data) > MAX_ENTRIES:
        raise InvalidInput(f"registries: {len(data)} entries; at most {MAX_ENTRIES} are allowed")
    entries: list[RegistryEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        entry = parse_entry(item, f"registries[{index}]")
        address = str(entry.address)
        if address in seen:
            raise InvalidInput(
                f"registries[{index}].address: {address!r} is listed twice; edit the first entry"
            )
        seen.add(address)
        entries.append(entry)
    return entries


def canonical_address(text: object) -> str:
    """The address `text` as entries store it (`INDEX.docker.io.` -> `docker.io`)."""
    return str(parse_entry({"address": text}, "registry").address)


# --- reading -----------------------------------------------------------------------------


def _draft(session: Session, organization: Organization, *, lock: bool = False) -> Draft:
    query = select(Draft).where(Draft.organization_id == organization.id)
    if lock:
        query = query.with_for_update()
    draft = session.scalar(query)
    if draft is None:  # every organization gets one on creation
        raise NotFound(f"organization {organization.name!r} has no Registry Access settings")
    return draft


def current(session: Session, organization: Organization) -> Revision | None:
    """The newest applied revision, or None (never for organizations made by `orgs.create`)."""
    return session.scalar(
        select(Revision)
        .where(Revision.organization_id == organization.id)
        .order_by(Revision.revision.desc())
        .limit(1)
    )


def current_policy(session: Session, organization: Organization) -> Policy | None:
    revision = current(session, organization)
    return SignedPolicy.from_json(revision.signed_json.encode()).policy if revision else None


def draft_policy(session: Session, organization: Organization) -> Policy:
    """The draft as a Policy (revision = the next one), e.g. to test an image against it."""
    draft = _draft(session, organization)
    applied = current(session, organization)
    return Policy(
        organization=organization.name,
        revision=(applied.revision if applied else 0) + 1,
        enabled=draft.enabled,
        registries=tuple(parse_entries(draft.registries)),
    )


def get_draft(session: Session, organization: Organization) -> DraftState:
    """The draft, its version and the changes Save & Apply would publish."""
    draft = _draft(session, organization)
    applied = current_policy(session, organization)
    updated_by = session.get(User, draft.updated_by_id) if draft.updated_by_id else None
    return DraftState(
        organization=organization.name,
        enabled=draft.enabled,
        registries=list(draft.registries),
        version=draft.version,
        updated_at=draft.updated_at,
        updated_by=updated_by.username if updated_by else None,
        applied_revision=applied.revision if applied else 0,
        pending=tuple(diff(applied, draft_policy(session, organization))),
    )


def pending_changes(session: Session, organization: Organization) -> list[Change]:
    """What Save & Apply would change, compared with the applied revision."""
    return diff(current_policy(session, organization), draft_policy(session, organization))


def diff(old: Policy | None, new: Policy) -> list[Change]:
    """The changes from `old` to `new`: toggle, entries in `new`'s order, then removals."""
    changes: list[Change] = []
    old_enabled = old.enabled if old else False
    if old_enabled != new.enabled:
        action = "registry_access.enabled" if new.enabled else "registry_access.disabled"
        changes.append(Change(action, None, {"enabled": old_enabled}, {"enabled": new.enabled}))
    before = {str(e.address): e.to_dict() for e in (old.registries if old else ())}
    after = {str(e.address): e.to_dict() for e in new.registries}
    for address, entry in after.items():
        if address not in before:
            changes.append(Change("registry_access.registry_added", address, None, entry))
        elif before[address] != entry:
            changes.append(
                Change("registry_access.registry_updated", address, before[address], entry)
            )
    for address, entry in before.items():
        if address not in after:
            changes.append(Change("registry_access.registry_removed", address, entry, None))
    return changes


# --- writing the draft -------------------------------------------------------------------


def _check_version(draft: Draft, version: int | None) -> None:
    if version is not None and version != draft.version:
        raise Conflict(
            f"the Registry Access settings changed since you loaded them (your version {version}, "
            f"now {draft.version}); reload them and make your change again"
        )


def _save(
    draft: Draft, actor: User, entries: Sequence[RegistryEntry], enabled: bool | None = None
) -> None:
    draft.registries = [entry.to_dict() for entry in entries]
    if enabled is not None:
        draft.enabled = enabled
    draft.version += 1
    draft.updated_at = utcnow()
    draft.updated_by_id = actor.id


def replace_draft(
    session: Session,
    organization: Organization,
    actor: User,
    *,
    enabled: bool,
    registries: object,
    version: int | None,
) -> DraftState:
    """Replace the whole draft (toggle and entries)."""
    if not isinstance(enabled, bool):
        raise InvalidInput(f"enabled: {enabled!r} must be true or false")
    entries = parse_entries(registries)
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    _save(draft, actor, entries, enabled)
    session.flush()
    return get_draft(session, organization)


def set_enabled(
    session: Session,
    organization: Organization,
    actor: User,
    enabled: bool,
    version: int | None = None,
) -> DraftState:
    """Turn Registry Access on or off in the draft."""
    if not isinstance(enabled, bool):
        raise InvalidInput(f"enabled: {enabled!r} must be true or false")
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    _save(draft, actor, parse_entries(draft.registries), enabled)
    session.flush()
    return get_draft(session, organization)


def add_entry(
    session: Session,
    organization: Organization,
    actor: User,
    entry: object,
    version: int | None = None,
) -> DraftState:
    """Add one entry at the end; Conflict when its address is already listed."""
    new = parse_entry(entry)
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    entries = parse_entries(draft.registries)
    if any(e.address == new.address for e in entries):
        raise Conflict(f"registry {str(new.address)!r} is already in the list; edit it instead")
    _save(draft, actor, [*entries, new])
    session.flush()
    return get_draft(session, organization)


def _index(entries: Sequence[RegistryEntry], address: str, organization: Organization) -> int:
    wanted = canonical_address(address)
    for index, entry in enumerate(entries):
        if str(entry.address) == wanted:
            return index
    raise NotFound(f"registry {wanted!r} is not in the list of {organization.name!r}")


def update_entry(
    session: Session,
    organization: Organization,
    actor: User,
    address: str,
    entry: object,
    version: int | None = None,
) -> DraftState:
    """Replace the entry for `address` (the new entry may change the address)."""
    new = parse_entry(entry)
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    entries = parse_entries(draft.registries)
    index = _index(entries, address, organization)
    if any(e.address == new.address for i, e in enumerate(entries) if i != index):
        raise Conflict(f"registry {str(new.address)!r} is already in the list; edit it instead")
    entries[index] = new
    _save(draft, actor, entries)
    session.flush()
    return get_draft(session, organization)


def remove_entry(
    session: Session,
    organization: Organization,
    actor: User,
    address: str,
    version: int | None = None,
) -> DraftState:
    """Remove the entry for `address`."""
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    entries = parse_entries(draft.registries)
    del entries[_index(entries, address, organization)]
    _save(draft, actor, entries)
    session.flush()
    return get_draft(session, organization)


# --- publishing --------------------------------------------------------------------------


def initialize(
    session: Session, organization: Organization, owner: User, signing_key: Ed25519PrivateKey
) -> None:
    """Give a new organization its draft (off, Docker Hub listed) and revision 1 of it."""
    entries = parse_entries([DOCKER_HUB])
    session.add(
        Draft(
            organization_id=organization.id,
            enabled=False,
            registries=[e.to_dict() for e in entries],
            version=1,
            updated_by_id=owner.id,
        )
    )
    session.flush()
    _publish(session, organization, owner, signing_key, record=False)


def apply(
    session: Session,
    organization: Organization,
    actor: User,
    signing_key: Ed25519PrivateKey,
    version: int | None = None,
) -> AppliedRevision:
    """Save & Apply: publish the draft as the next revision, signed, with its Activity events.

    Concurrent applies queue on the draft's row lock, so revisions strictly increase and each
    one includes every edit committed before it. Long-polls are woken after commit."""
    return _publish(session, organization, actor, signing_key, record=True, version=version)


def _publish(
    session: Session,
    organization: Organization,
    actor: User,
    signing_key: Ed25519PrivateKey,
    *,
    record: bool,
    version: int | None = None,
) -> AppliedRevision:
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    previous = current(session, organization)
    old = SignedPolicy.from_json(previous.signed_json.encode()).policy if previous else None
    number = (previous.revision if previous else 0) + 1
    policy = Policy(
        organization=organization.name,
        revision=number,
        enabled=draft.enabled,
        registries=tuple(parse_entries(draft.registries)),
    )
    signed_json = sign(policy, signing_key).to_json().decode()
    row = Revision(
        organization_id=organization.id,
        revision=number,
        signed_json=signed_json,
        created_by_id=actor.id,
    )
    session.add(row)
    changes = tuple(diff(old, policy)) if record else ()
    for change in changes:
        data: dict[str, Any] = {"revision": number, "before": change.before, "after": change.after}
        if change.address is not None:
            data["address"] = change.address
        activity.record(session, organization, change.action, actor.username, **data)
    if record:
        activity.record(
            session,
            organization,
            "registry_access.applied",
            actor.username,
            revision=number,
            changes=len(changes),
        )
    session.flush()
    announce(session, organization.name, number)
    return AppliedRevision(
        revision=number, signed_json=signed_json, created_at=row.created_at, changes=changes
    )
