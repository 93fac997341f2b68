"""The Registry Access page: the draft's toggle and entries, Save & Apply, Discard, Edit.

    GET  /orgs/{org}/registry-access[?add=HOST][&q=SEARCH&sort=address|-address|listed]
    POST /orgs/{org}/registry-access/toggle|add|allowed|remove|apply|discard
    GET|POST /orgs/{org}/registry-access/edit[?address=&repositories=]

Every write names the draft version its page showed, so an owner never overwrites another's
edit unknowingly (Add does not: two owners adding different registries never block each other).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from regward.errors import quote
from regward.policy import lint, policy_file_text
from regward.policy.files import Format
from regward.policy.text import invisible_character
from regward.server.dashboard import forms, views
from regward.server.dashboard.context import Form, Visitor, org_access, owner_write
from regward.server.dashboard.forms import EntryForm
from regward.server.dashboard.rendering import (
    kept_form,
    org_path,
    page_router,
    redirect,
    refused_redirect,
    render,
    sentence,
)
from regward.server.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    NothingToApply,
    ServiceError,
    StaleVersion,
)
from regward.server.models import Organization
from regward.server.runtime import server_of
from regward.server.services import policy_files, registry_access

router = page_router()
T = TypeVar("T")


def _registry_page(
    request: Request,
    session: Session,
    visitor: Visitor,
    organization: Organization,
    *,
    status: int = 200,
    error: str = "",
    add_form: EntryForm | None = None,
    add_errors: dict[str, str] | None = None,
    sort: str = "address",
    search: str = "",
    page: int = 1,
    import_problems: list[str] | None = None,
) -> HTMLResponse:
    state = registry_access.get_draft(session, organization)
    warnings = lint(state.policy)
    entries = views.entry_rows(state.registries, warnings, state.pending)
    matching = views.entry_groups(entries, search=search, sort=sort)
    groups, pages = views.page_of_groups(matching, page)
    number = min(page, pages)
    return render(
        request,
        "registry_access.html",
        visitor,
        org=organization.name,
        tab="registry-access",
        status=status,
        title=f"Registry Access · {organization.name}",
        error=error,
        can_edit=visitor.is_owner(organization.name),
        enabled=state.enabled,
        version=state.version,
        entries=entries,
        groups=groups,
        shown=sum(len(group.rows) for group in matching),
        on_page=sum(len(group.rows) for group in groups),
        newer_label="Previous",
        older_label="Next",
        newer_url=_list_page(organization.name, search, sort, number - 1) if number > 1 else None,
        older_url=_list_page(organization.name, search, sort, number + 1)
        if number < pages
        else None,
        page_number=number,
        page_count=pages,
        sort=sort,
        search=search,
        sorts=views.ENTRY_SORTS,
        applied_enabled=state.applied.enabled if state.applied else False,
        # "Off" is already the card's headline; the other whole-policy warnings go beside it.
        general_warnings=[
            views.capitalized(w.message) for w in warnings if w.entry == 0 and state.enabled
        ],
        pending=bool(state.pending),
        changes=[views.describe_change(change) for change in state.pending],
        applied_revision=state.applied_revision,
        applied_at=views.when(state.applied_at),
        add_form=add_form or EntryForm(),
        add_errors=add_errors or {},
        import_problems=import_problems or [],
    )


def _list_page(org: str, search: str, sort: str, number: int) -> str:
    """The address of page `number` of the list, searched and sorted as it is."""
    query = {"q": search, "sort": sort if sort != "address" else "", "page": str(number)}
    kept = {key: value for key, value in query.items() if value}
    return f"{org_path(org)}?{urllib.parse.urlencode(kept)}#list-title"


@router.get("/orgs/{org}/registry-access")
def registry_page(
    request: Request,
    org: str,
    add: str = "",
    repositories: str = "",
    sort: str = "",
    q: str = "",
    page: str = "",
) -> Response:
    """`?add=HOST&repositories=REPO` fills in Add registry (the Blocked pulls page links here
    with the refused repository, so following it allows that repository, not the whole
    registry; the owner may clear Repositories to widen it). `?q=&sort=` search and sort the
    list (forms.entry_view)."""
    prefill = EntryForm(address=add[:300], repositories=repositories[:300])
    order, search = forms.entry_view(sort, q)
    refused = kept_form(request)  # a refused Add, sent here to be shown
    with org_access(request, org) as (session, visitor, organization):
        return _registry_page(
            request,
            session,
            visitor,
            organization,
            add_form=EntryForm.kept(refused.values) if refused else prefill,
            add_errors=refused.errors if refused else None,
            error=refused.error if refused else "",
            status=refused.status if refused else 200,
            sort=order,
            search=search,
            page=forms.page_number(page),
        )


def _draft_write(
    request: Request,
    org: str,
    write: Callable[[Session, Visitor, Organization], T],
    done: str | Callable[[T], str],
) -> Response:
    """Run one draft edit and go back to the page with `done` (or `done` of what the edit
    returned); on a stale version or bad input, show the page with the reason."""

    def then(result: T) -> Response:
        return redirect(request, org_path(org), done if isinstance(done, str) else done(result))

    def refused(
        error: ServiceError, session: Session, visitor: Visitor, organization: Organization
    ) -> Response:
        return _registry_page(
            request, session, visitor, organization, status=error.status, error=sentence(error)
        )

    return owner_write(request, org, write, then, refused)


@router.post("/orgs/{org}/registry-access/toggle")
def toggle(request: Request, org: str, form: Form) -> Response:
    enabled = forms.text(form, "enabled") == "true"
    return _draft_write(
        request,
        org,
        lambda s, v, o: registry_access.set_enabled(
            s, o, v.caller.user, enabled, forms.version(form)
        ),
        f"Registry Access Management will be {'on' if enabled else 'off'} after Save & Apply.",
    )


@router.get("/orgs/{org}/registry-access/add")
def add_form_address(org: str, request: Request) -> Response:
    """Where a refused Add leaves the browser: reloading or bookmarking it opens the form."""
    return redirect(request, org_path(org) + "#add")


@router.post("/orgs/{org}/registry-access/add")
def add_registry(request: Request, org: str, form: Form) -> Response:
    entry = EntryForm.from_form(form)
    label = views.entry_label(entry.address, entry.to_entry().get("repositories", []))

    def refused(
        error: ServiceError, session: Session, visitor: Visitor, organization: Organization
    ) -> Response:
        message = f"The registry was not added. {sentence(error)}"
        errors = forms.field_errors(error)
        # Shown at the list's address, so a reload shows it again rather than sending the
        # form twice; a form too long to carry is shown here.
        sent = refused_redirect(
            request, org_path(org), error.status, message, asdict(entry), errors
        )
        return sent or _registry_page(
            request,
            session,
            visitor,
            organization,
            status=error.status,
            error=message,
            add_form=entry,
            add_errors=errors,
        )

    # Adding is independent of other edits (a duplicate address is refused anyway), so no
    # version: two owners adding different registries never block each other.
    return owner_write(
        request,
        org,
        lambda s, v, o: registry_access.add_entry(s, o, v.caller.user, entry.to_entry()),
        lambda _: redirect(
            request,
            org_path(org),
            f"Added {label} to the draft. Select Save & Apply to enforce it.",
        ),
        refused,
    )


@router.post("/orgs/{org}/registry-access/allowed")
def set_allowed(request: Request, org: str, form: Form) -> Response:
    """The Allowed switch of one entry, named by its key (hidden `address` and `repositories`)."""
    address = forms.text(form, "address")
    repositories = forms.selector(form.get("repositories"))
    allowed = forms.text(form, "allowed") == "true"

    def write(
        session: Session, visitor: Visitor, organization: Organization
    ) -> registry_access.DraftState:
        entry = _find_entry(session, organization, address, repositories)
        if entry is None:
            raise NotFound(f"registry {address!r} is not in the list of {organization.name!r}")
        return registry_access.update_entry(
            session,
            organization,
            visitor.caller.user,
            entry["address"],
            {**entry, "allowed": allowed},
            forms.version(form),
            repositories=entry.get("repositories") or [],
        )

    verb = "allowed" if allowed else "blocked"
    label = views.entry_label(address, repositories or ())
    return _draft_write(request, org, write, f"{label} will be {verb} after Save & Apply.")


@router.post("/orgs/{org}/registry-access/remove")
def remove_registry(request: Request, org: str, form: Form) -> Response:
    """Remove one entry, named by its key (hidden `address` and `repositories`)."""
    address = forms.text(form, "address")
    repositories = forms.selector(form.get("repositories"))
    return _draft_write(
        request,
        org,
        lambda s, v, o: registry_access.remove_entry(
            s, o, v.caller.user, address, forms.version(form), repositories=repositories
        ),
        f"Removed {views.entry_label(address, repositories or ())} from the draft. "
        "Select Save & Apply to enforce it.",
    )


@router.post("/orgs/{org}/registry-access/apply")
def apply(request: Request, org: str, form: Form) -> Response:
    key = server_of(request).signing_key

    def refused(
        error: ServiceError, session: Session, visitor: Visitor, organization: Organization
    ) -> Response:
        if isinstance(error, NothingToApply):  # not a failure: the page as it was, with why
            return redirect(request, org_path(org), sentence(error))
        return _registry_page(
            request, session, visitor, organization, status=error.status, error=sentence(error)
        )

    return owner_write(
        request,
        org,
        lambda s, v, o: registry_access.apply(s, o, v.caller.user, key, forms.version(form)),
        lambda applied: redirect(
            request,
            org_path(org),
            f"Applied as revision {applied.revision}. "
            "Signed-in machines pick it up within seconds.",
        ),
        refused,
    )


@router.post("/orgs/{org}/registry-access/discard")
def discard(request: Request, org: str, form: Form) -> Response:
    """Put the draft back to the applied revision (an edit like any other: versioned)."""

    def write(
        session: Session, visitor: Visitor, organization: Organization
    ) -> registry_access.DraftState:
        applied = registry_access.current_policy(session, organization)
        if applied is None:
            raise Conflict(f"{organization.name!r} has no applied revision to go back to")
        return registry_access.replace_draft(
            session,
            organization,
            visitor.caller.user,
            enabled=applied.enabled,
            registries=[entry.to_dict() for entry in applied.registries],
            version=forms.version(form),
        )

    return _draft_write(
        request, org, write, "Pending changes discarded: the draft is the applied revision again."
    )


def _edit_page(
    request: Request,
    session: Session,
    visitor: Visitor,
    organization: Organization,
    original: str,
    original_repositories: list[str],
    form: EntryForm,
    *,
    status: int = 200,
    error: str = "",
    errors: dict[str, str] | None = None,
    current: dict[str, Any] | None = None,
) -> HTMLResponse:
    state = registry_access.get_draft(session, organization)
    return render(
        request,
        "registry_edit.html",
        visitor,
        org=organization.name,
        tab="registry-access",
        status=status,
        title=f"Edit {views.entry_label(original, original_repositories)}",
        error=error,
        original_address=original,
        original_repositories=registry_access.repositories_text(original_repositories),
        original_label=views.entry_label(original, original_repositories),
        version=state.version,
        form=form,
        errors=errors or {},
        current=current,
    )


def _find_entry(
    session: Session, organization: Organization, address: str, repositories: list[str] | None
) -> dict[str, Any] | None:
    """The draft's entry for `address` and `repositories` (None: the address alone, Conflict
    when it has several entries), or None when there is none."""
    registries = registry_access.get_draft(session, organization).registries
    entries = registry_access.parse_entries(registries, stored=True)
    try:
        index = registry_access.find_index(entries, address, repositories, organization)
    except (InvalidInput, NotFound):
        return None
    return dict(registries[index])


@router.get("/orgs/{org}/registry-access/edit")
def edit_form(
    request: Request, org: str, address: str = "", repositories: str | None = None
) -> Response:
    """`?address=ghcr.io&repositories=acme/*`; `repositories` may be left out when the address
    has one entry, and is empty for the entry without repositories."""
    with org_access(request, org, owner=True, write=False) as (session, visitor, organization):
        entry = _find_entry(session, organization, address, forms.selector(repositories))
        if entry is None:
            raise NotFound(f"registry {address!r} is not in the list of {org!r}")
        refused = kept_form(request)  # a refused save of this entry, sent here to be shown
        return _edit_page(
            request,
            session,
            visitor,
            organization,
            entry["address"],
            list(entry.get("repositories") or ()),
            EntryForm.kept(refused.values) if refused else EntryForm.from_entry(entry),
            error=refused.error if refused else "",
            errors=refused.errors if refused else _stored_text_errors(entry),
            status=refused.status if refused else 200,
        )


def _stored_text_errors(entry: dict[str, Any]) -> dict[str, str]:
    """A nickname stored before invisible characters were refused, named before the owner
    saves: Save asks for one of visible characters."""
    found = invisible_character(str(entry.get("nickname") or ""))
    if found is None:
        return {}
    return {"nickname": f"Holds {found}, which is not shown as it is; replace it to save."}


@router.post("/orgs/{org}/registry-access/edit")
def edit(request: Request, org: str, form: Form) -> Response:
    """Save the edit of the entry named by hidden `original_address` and
    `original_repositories` (its key when the form was loaded)."""
    original = forms.text(form, "original_address")
    original_repositories = forms.selector(form.get("original_repositories"))
    entry = EntryForm.from_form(form)

    def refused(
        error: ServiceError, session: Session, visitor: Visitor, organization: Organization
    ) -> Response:
        if isinstance(error, InvalidInput):  # a bad value: shown at the entry's Edit address
            message = f"Your change was not saved. {sentence(error)}"
            query = {"address": original}
            if original_repositories is not None:
                query["repositories"] = registry_access.repositories_text(original_repositories)
            page = f"{org_path(org)}/edit?{urllib.parse.urlencode(query)}"
            sent = refused_redirect(
                request, page, error.status, message, asdict(entry), forms.field_errors(error)
            )
            if sent is not None:
                return sent
        current: dict[str, Any] | None = None
        if isinstance(error, Conflict | NotFound):
            found = _find_entry(session, organization, original, original_repositories)
            current = found if found is not None else {"missing": True}
        return _edit_page(
            request,
            session,
            visitor,
            organization,
            original,
            original_repositories or [],
            entry,
            status=error.status,
            error=(
                "Your change was not saved: someone changed the Registry Access settings since "
                "you opened this form. Your edit is kept below: check it against the current "
                "entry and save again."
                if isinstance(error, StaleVersion)
                else f"Your change was not saved. {sentence(error)}"
                + (
                    " Your edit is kept below: check it against the current entry and save again."
                    if current is not None
                    else ""
                )
            ),
            errors={} if current is not None else forms.field_errors(error),
            current=current,
        )

    return owner_write(
        request,
        org,
        lambda s, v, o: registry_access.update_entry(
            s,
            o,
            v.caller.user,
            original,
            entry.to_entry(),
            forms.version(form),
            repositories=original_repositories,
        ),
        lambda _: redirect(
            request,
            org_path(org),
            f"Changed {entry.address} in the draft. Select Save & Apply to enforce it.",
        ),
        refused,
        catch=(Conflict, InvalidInput, NotFound),
    )


@router.get("/orgs/{org}/registry-access/file")
def export_file(request: Request, org: str, revision: str = "", format: str = "yaml") -> Response:
    """The draft (`revision` empty) or an applied revision as a policy file, to download."""
    kind: Format = "json" if format == "json" else "yaml"
    number = forms.whole_number(revision) if revision else None
    if revision and number is None:
        raise NotFound(f"revision {quote(revision)} is not a number of a revision")
    with org_access(request, org) as (session, _, organization):
        policy = policy_files.export(session, organization, number)
    name = policy_files.file_name(org, number, kind)
    return Response(
        policy_file_text(policy, kind),
        media_type="application/json" if kind == "json" else "application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/orgs/{org}/registry-access/import")
async def import_file(request: Request, org: str, form: Form) -> Response:
    """A policy file into the draft: its changes show as pending; a file with problems is
    refused with each problem and its line, and the draft stays as it was."""
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        name = upload.filename or "upload.yaml"
        data = await upload.read(policy_files.MAX_FILE_BYTES + 1)
    else:
        name, data = "upload.yaml", b""
    version = forms.version(form)

    def write(
        session: Session, visitor: Visitor, organization: Organization
    ) -> registry_access.DraftState:
        return policy_files.import_file(
            session, organization, visitor.caller.user, data, name, version
        )

    def done(state: registry_access.DraftState) -> Response:
        count = len(state.pending)
        return redirect(
            request,
            org_path(org),
            f"Imported {name} into the draft: {count} change{'s' if count != 1 else ''} "
            "pending. Select Save & Apply to enforce them, or Discard changes.",
        )

    def refused(
        error: ServiceError, session: Session, visitor: Visitor, organization: Organization
    ) -> Response:
        problems = error.value if isinstance(error.value, list) else [sentence(error)]
        return _registry_page(
            request,
            session,
            visitor,
            organization,
            status=error.status,
            error=f"{name} was not imported; the draft is unchanged (see The list as a file).",
            import_problems=[str(problem) for problem in problems],
        )

    return await run_in_threadpool(owner_write, request, org, write, done, refused)
