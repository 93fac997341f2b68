"""The Registry Access list as a policy file (the format `regward check --policy` reads):
export the draft or any applied revision, import a file into the draft.

An export of the draft has no revision (it is not published: `check --policy` cites it as a
local policy file); an applied revision keeps its number. An import replaces the draft's toggle
and entries with the file's, as one versioned edit: the changes show as pending until Save &
Apply, and a file with problems changes nothing (422 naming every problem and its line).
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from regward.errors import InvalidPolicyFile, quote
from regward.policy import Policy, SignedPolicy, parse_policy_text
from regward.policy.files import Format
from regward.server.errors import InvalidInput, NotFound
from regward.server.models import Organization, Revision, User
from regward.server.services import registry_access
from regward.server.services.registry_access import DraftState

MAX_FILE_BYTES = 1_000_000


def export(session: Session, organization: Organization, revision: int | None) -> Policy:
    """The draft (`revision` None; numbered 0) or the applied revision `revision`."""
    if revision is None:
        drafted = registry_access.get_draft(session, organization).policy
        return replace(drafted, revision=0)
    row = session.scalar(
        select(Revision).where(
            Revision.organization_id == organization.id, Revision.revision == revision
        )
    )
    if row is None:
        raise NotFound(f"{organization.name!r} has no revision {revision}")
    return SignedPolicy.from_json(row.signed_json.encode()).policy


def file_name(organization: str, revision: int | None, kind: Format) -> str:
    which = "draft" if revision is None else f"revision-{revision}"
    return f"{organization}-{which}.{kind}"


def import_file(
    session: Session,
    organization: Organization,
    actor: User,
    data: bytes,
    filename: str,
    version: int | None,
) -> DraftState:
    """Replace the draft with the policy in the file `filename` (YAML for .yaml/.yml, else
    JSON); InvalidInput names every problem with its line and leaves the draft as it was."""
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{quote(filename)} is {len(data):,} bytes; a policy file may have at most "
            f"{MAX_FILE_BYTES:,}",
            field="file",
        )
    try:
        policy = parse_policy_text(data.decode("utf-8"), filename)
    except UnicodeDecodeError:
        raise InvalidInput(f"{quote(filename)} is not UTF-8 text", field="file") from None
    except InvalidPolicyFile as error:
        raise InvalidInput(error.message, field="file", value=list(error.problems)) from None
    if policy.organization != organization.name:
        raise InvalidInput(
            f"{quote(filename)} is the policy of {policy.organization!r}, not of "
            f"{organization.name!r}; change its 'organization' to import it here",
            field="file",
        )
    return registry_access.replace_draft(
        session,
        organization,
        actor,
        enabled=policy.enabled,
        registries=[entry.to_dict() for entry in policy.registries],
        version=version,
    )
