"""Registry Access settings: the draft owners edit, and Save & Apply, which publishes it.

The draft holds the toggle and the entries in the policy file's form (`RegistryEntry.to_dict()`),
plus a `version` bumped by every write. A write may name the version it was based on; if the
draft has moved on since, it is refused with Conflict, so two owners never overwrite each other
unknowingly. Entry-level writes (add, update, remove, toggle) are applied to the current draft
under a row lock, so without a version they still never lose a concurrent edit.

An entry is identified by its key: the canonical address and the set of its canonical
repository patterns (empty: every repository). One address may have several entries that differ
in repositories (`ghcr.io` for pull, `ghcr.io` `acme/*` for push too); two entries with the same
key are refused. Edits name an entry by its address and, when the address has several entries,
its repositories.

`apply` signs the draft as revision N+1 and writes the Activity events that describe what
changed since revision N (Docker's action names), all in one transaction. Each event names the
owner who made that change in the draft (the draft remembers who last changed the toggle and
each entry), so edits one owner made and another applied are not credited to the second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from regward.errors import InvalidPolicy, quote
from regward.policy import Policy, RegistryEntry, SignedPolicy, sign
from regward.server.errors import Conflict, InvalidInput, NotFound, NothingToApply, StaleVersion
from regward.server.models import Draft, Organization, Revision, User, utcnow
from regward.server.notify import announce
from regward.server.services import activity, webhooks

DOCKER_HUB = {"address": "docker.io", "nickname": "Docker Hub"}
MAX_ENTRIES = 10_000

EntryKey = tuple[str, frozenset[str]]
"""(canonical address, canonical repository patterns): what identifies an entry in a draft."""


def entry_key(entry: RegistryEntry) -> EntryKey:
    return str(entry.address), frozenset(str(p) for p in entry.repositories)


def repositories_text(patterns: Iterable[str]) -> str:
    """A key's patterns as the API's `repositories` parameter takes them: sorted, comma-separated
    ("" for an entry without repositories)."""
    return ",".join(sorted(patterns))


def describe_key(key: EntryKey) -> str:
    """`'ghcr.io' for every repository` or `'ghcr.io' for repositories acme/*, acme/x`."""
    address, patterns = key
    if not patterns:
        return f"{address!r} for every repository"
    return f"{address!r} for repositories {', '.join(sorted(patterns))}"


@dataclass(frozen=True)
class Change:
    """One difference between two policies, as an Activity event would record it."""

    action: str  # registry_access.enabled|disabled|registry_added|registry_updated|registry_removed
    address: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    repositories: tuple[str, ...] = ()
    """The entry's patterns, sorted (the new ones for an update): with `address`, its key."""
    edited_by: str | None = None
    """Who made this change in the draft, where known."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "address": self.address,
            "repositories": list(self.repositories),
            "before": self.before,
            "after": self.after,
            "edited_by": self.edited_by,
        }

    def editor_keys(self) -> list[str]:
        """The draft parts this change touches: the toggle, or the entry (its old key too)."""
        if self.address is None:
            return ["enabled"]
        keys = [editor_key(self.address, self.repositories)]
        if self.before is not None:
            keys.append(editor_key(self.before["address"], self.before.get("repositories", ())))
        return keys


def editor_key(address: str, repositories: Iterable[str]) -> str:
    return " ".join([address, *sorted(repositories)])


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
    applied_at: datetime | None
    policy: Policy
    """The draft as the next revision would publish it (to lint it or test images on it)."""
    applied: Policy | None
    """The applied revision's policy (None only before an organization's first revision)."""
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
            "pending_changes": [change.to_dict() for change in self.pending],
        }


@dataclass(frozen=True)
class AppliedRevision:
    revision: int
    signed_json: str
    created_at: datetime
    changes: tuple[Change, ...]


# --- parsing -----------------------------------------------------------------------------


def parse_entry(data: object, where: str = "", *, stored: bool = False) -> RegistryEntry:
    """One entry in the policy file's form; InvalidInput carrying the field and the value.
    `stored`: an entry of the saved draft (see `Policy.from_dict`)."""
    try:
        return RegistryEntry.from_dict(data, where, stored=stored)
    except InvalidPolicy as error:
        raise InvalidInput(error.message, field=error.field, value=error.value) from None


def parse_entries(data: object, *, stored: bool = False) -> list[RegistryEntry]:
    """A `registries` list; InvalidInput for a bad entry or a key (address and repositories)
    listed twice. `stored`: the saved draft's list (see `Policy.from_dict`)."""
    if not isinstance(data, list):
        raise InvalidInput(
            f"registries {quote(data)} must be a list of entries", field="registries", value=data
        )
    if len(data) > MAX_ENTRIES:
        raise InvalidInput(
            f"{len(data)} registry entries; at most {MAX_ENTRIES} are allowed", field="registries"
        )
    entries: list[RegistryEntry] = []
    seen: set[EntryKey] = set()
    for index, item in enumerate(data):
        entry = parse_entry(item, f"registries[{index}]", stored=stored)
        key = entry_key(entry)
        if key in seen:
            raise InvalidInput(
                f"{describe_key(key)} is listed twice; edit the first entry",
                field=f"registries[{index}].address",
                value=item,
            )
        seen.add(key)
        entries.append(entry)
    return entries


def _saved(draft: Draft) -> list[RegistryEntry]:
    """The saved draft's entries, their text as it was stored."""
    return parse_entries(draft.registries, stored=True)


def canonical_address(text: object) -> str:
    """The address `text` as entries store it (`INDEX.docker.io.` -> `docker.io`)."""
    return str(parse_entry({"address": text}).address)


def canonical_key(address: object, repositories: Sequence[str]) -> EntryKey:
    """The key of the entry for `address` with `repositories` (`nginx` on Docker Hub is
    `library/nginx`); InvalidInput naming a bad address or pattern."""
    if isinstance(repositories, str) or not isinstance(repositories, Sequence):
        raise InvalidInput(
            f"repositories {quote(repositories)} must be a list of patterns",
            field="repositories",
            value=repositories,
        )
    probe = {"address": address, "repositories": list(repositories)}
    return entry_key(parse_entry(probe))


def parse_repositories(text: str | None) -> list[str] | None:
    """The `repositories` selector as the API and forms take it: None when not given, [] for
    "" (the entry without repositories), else comma-separated patterns."""
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


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
    return _policy_of(current(session, organization))


def _policy_of(revision: Revision | None) -> Policy | None:
    return SignedPolicy.from_json(revision.signed_json.encode()).policy if revision else None


def _next_policy(organization: Organization, draft: Draft, applied: Revision | None) -> Policy:
    return Policy(
        organization=organization.name,
        revision=(applied.revision if applied else 0) + 1,
        enabled=draft.enabled,
        registries=tuple(_saved(draft)),
    )


def get_draft(session: Session, organization: Organization) -> DraftState:
    """The draft, its version and the changes Save & Apply would publish."""
    draft = _draft(session, organization)
    applied = current(session, organization)
    updated_by = session.get(User, draft.updated_by_id) if draft.updated_by_id else None
    drafted = _next_policy(organization, draft, applied)
    applied_policy = _policy_of(applied)
    return DraftState(
        organization=organization.name,
        enabled=draft.enabled,
        registries=list(draft.registries),
        version=draft.version,
        updated_at=draft.updated_at,
        updated_by=updated_by.username if updated_by else None,
        applied_revision=applied.revision if applied else 0,
        applied_at=applied.created_at if applied else None,
        policy=drafted,
        applied=applied_policy,
        pending=tuple(_pending(draft, applied_policy, drafted)),
    )


def _pending(draft: Draft, applied: Policy | None, drafted: Policy) -> list[Change]:
    """The changes from `applied` to `drafted`, each with who made it in the draft."""
    editors = draft.editors or {}
    return [
        replace(
            change, edited_by=next((editors[k] for k in change.editor_keys() if k in editors), None)
        )
        for change in diff(applied, drafted)
    ]


def diff(old: Policy | None, new: Policy) -> list[Change]:
    """The changes from `old` to `new`: toggle, entries in `new`'s order, then removals."""
    changes: list[Change] = []
    old_enabled = old.enabled if old else False
    if old_enabled != new.enabled:
        action = "registry_access.enabled" if new.enabled else "registry_access.disabled"
        changes.append(Change(action, None, {"enabled": old_enabled}, {"enabled": new.enabled}))
    before = {entry_key(e): e.to_dict() for e in (old.registries if old else ())}
    after = {entry_key(e): e.to_dict() for e in new.registries}
    # An entry whose repositories changed has a new key: pair what is left unmatched at one
    # address, so that edit is one update (as it was when addresses were unique). Each new
    # entry pairs with the old one it resembles most (an edit of the repositories alone keeps
    # the rest), then in list order.
    gone: dict[str, list[EntryKey]] = {}
    for key in before:
        if key not in after:
            gone.setdefault(key[0], []).append(key)
    replaced: dict[EntryKey, EntryKey] = {}  # new key -> old key
    for key, entry in after.items():
        candidates = gone.get(key[0])
        if key not in before and candidates:
            closest = max(candidates, key=lambda old: _alike(before[old], entry))
            candidates.remove(closest)
            replaced[key] = closest
    paired = set(replaced.values())
    for key, entry in after.items():
        previous = before.get(key) if key in before else before.get(replaced.get(key, key))
        patterns = tuple(sorted(key[1]))
        if previous is None:
            changes.append(Change("registry_access.registry_added", key[0], None, entry, patterns))
        elif previous != entry:
            changes.append(
                Change("registry_access.registry_updated", key[0], previous, entry, patterns)
            )
    for key, entry in before.items():
        if key not in after and key not in paired:
            changes.append(
                Change(
                    "registry_access.registry_removed", key[0], entry, None, tuple(sorted(key[1]))
                )
            )
    return changes


def _alike(one: dict[str, Any], other: dict[str, Any]) -> int:
    """How many settings besides the repositories two entries share."""
    return sum(one.get(name) == other.get(name) for name in _SETTINGS)


_SETTINGS = ("nickname", "allowed", "actions", "extra_hosts")


# --- writing the draft -------------------------------------------------------------------


def _as_policy(enabled: bool, entries: Sequence[RegistryEntry]) -> Policy:
    """Draft settings as a Policy, to compare with `diff` (name and revision do not matter)."""
    return Policy(organization="draft", revision=0, enabled=enabled, registries=tuple(entries))


def _check_version(draft: Draft, version: int | None) -> None:
    if version is not None and version != draft.version:
        raise StaleVersion(
            f"the Registry Access settings changed since you loaded them (your version {version}, "
            f"now {draft.version}); reload them and make your change again"
        )


def _save(
    draft: Draft, actor: User, entries: Sequence[RegistryEntry], enabled: bool | None = None
) -> None:
    before = _as_policy(draft.enabled, _saved(draft))
    draft.registries = [entry.to_dict() for entry in entries]
    if enabled is not None:
        draft.enabled = enabled
    editors = dict(draft.editors or {})
    for change in diff(before, _as_policy(draft.enabled, entries)):
        editors.update(dict.fromkeys(change.editor_keys(), actor.username))
    draft.editors = editors
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
        raise InvalidInput(
            f"enabled {quote(enabled)} must be true or false", field="enabled", value=enabled
        )
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
        raise InvalidInput(
            f"enabled {quote(enabled)} must be true or false", field="enabled", value=enabled
        )
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    _save(draft, actor, _saved(draft), enabled)
    session.flush()
    return get_draft(session, organization)


def add_entry(
    session: Session,
    organization: Organization,
    actor: User,
    entry: object,
    version: int | None = None,
) -> DraftState:
    """Add one entry at the end; Conflict when an entry with its key (address and repositories)
    is already listed. Another entry for a listed address with other repositories is fine."""
    new = parse_entry(entry)
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    entries = _saved(draft)
    _refuse_duplicate(entries, new)
    _save(draft, actor, [*entries, new])
    session.flush()
    return get_draft(session, organization)


def _refuse_duplicate(
    entries: Sequence[RegistryEntry], new: RegistryEntry, skip: int | None = None
) -> None:
    key = entry_key(new)
    if any(entry_key(e) == key for i, e in enumerate(entries) if i != skip):
        raise Conflict(
            f"registry {describe_key(key)} is already in the list; edit that entry instead, "
            "or give this one other repositories"
        )


def find_index(
    entries: Sequence[RegistryEntry],
    address: str,
    repositories: Sequence[str] | None,
    organization: Organization,
) -> int:
    """The position of the entry for `address` and `repositories` (None: the address alone,
    Conflict naming the choices when it has several entries; []: the entry without
    repositories); NotFound when there is none."""
    if repositories is None:
        wanted = canonical_address(address)
        found = [i for i, e in enumerate(entries) if str(e.address) == wanted]
        if len(found) > 1:
            choices = " or ".join(repr(repositories_text(entry_key(entries[i])[1])) for i in found)
            raise Conflict(
                f"registry {wanted!r} has {len(found)} entries; say which by its repositories: "
                f"{choices} ('' is the entry for every repository)"
            )
    else:
        key = canonical_key(address, repositories)
        wanted = key[0]
        found = [i for i, e in enumerate(entries) if entry_key(e) == key]
        if not found:
            listed = any(str(e.address) == wanted for e in entries)
            raise NotFound(
                f"registry {describe_key(key)} is not in the list of {organization.name!r}"
                + ("; the address has entries for other repositories" if listed else "")
            )
    if not found:
        raise NotFound(f"registry {wanted!r} is not in the list of {organization.name!r}")
    return found[0]


def update_entry(
    session: Session,
    organization: Organization,
    actor: User,
    address: str,
    entry: object,
    version: int | None = None,
    *,
    repositories: Sequence[str] | None = None,
) -> DraftState:
    """Replace the entry for `address` (and `repositories`, see `find_index`); the new entry
    may change the address and repositories, but not to another entry's key."""
    new = parse_entry(entry)
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    entries = _saved(draft)
    index = find_index(entries, address, repositories, organization)
    _refuse_duplicate(entries, new, skip=index)
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
    *,
    repositories: Sequence[str] | None = None,
) -> DraftState:
    """Remove the entry for `address` (and `repositories`, see `find_index`)."""
    draft = _draft(session, organization, lock=True)
    _check_version(draft, version)
    entries = _saved(draft)
    del entries[find_index(entries, address, repositories, organization)]
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
    one includes every edit committed before it. Long-polls are woken after commit. A draft
    with no pending changes publishes nothing: NothingToApply (409)."""
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
    old = _policy_of(previous)
    policy = _next_policy(organization, draft, previous)
    changes = tuple(_pending(draft, old, policy)) if record else ()
    if record and not changes and previous is not None:
        raise NothingToApply(
            f"nothing to apply: the draft is the same as revision {previous.revision}, which "
            "machines enforce already; change the draft first"
        )
    number = policy.revision
    signed_json = sign(policy, signing_key).to_json().decode()
    row = Revision(
        organization_id=organization.id,
        revision=number,
        signed_json=signed_json,
        created_by_id=actor.id,
    )
    session.add(row)
    for change in changes:
        data: dict[str, Any] = {"revision": number, "before": change.before, "after": change.after}
        if change.address is not None:
            data["address"] = change.address
            data["repositories"] = list(change.repositories)
        who = change.edited_by or actor.username
        activity.record(session, organization, change.action, who, **data)
    draft.editors = {}  # everything drafted is applied now
    if record:
        activity.record(
            session,
            organization,
            "registry_access.applied",
            actor.username,
            revision=number,
            changes=len(changes),
        )
        webhooks.emit(
            session,
            organization,
            "revision.applied",
            actor.username,
            {"revision": number, "changes": [change.to_dict() for change in changes]},
        )
    session.flush()
    announce(session, organization.name, number)
    return AppliedRevision(
        revision=number, signed_json=signed_json, created_at=row.created_at, changes=changes
    )
