"""The Webhooks page, owners only (services.webhooks; the queue is regward.server.webhooks).

GET  /orgs/{org}/webhooks[?page=N]   the webhooks, the add form and the delivery log
POST /orgs/{org}/webhooks/create     add one: the page shows its secret this once
POST /orgs/{org}/webhooks/test       queue a `ping` for one webhook
POST /orgs/{org}/webhooks/delete     delete one (asks first), its pending deliveries too
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from sqlalchemy.orm import Session

from regward.server.dashboard import forms, views
from regward.server.dashboard.context import Form, Visitor, org_access
from regward.server.dashboard.rendering import (
    confirmation,
    org_path,
    page_router,
    redirect,
    render,
    sentence,
)
from regward.server.errors import Conflict, InvalidInput, NotFound
from regward.server.models import Organization
from regward.server.services import webhooks

router = page_router()


def _page(
    request: Request,
    session: Session,
    visitor: Visitor,
    organization: Organization,
    *,
    number: int = 1,
    created: dict[str, str] | None = None,
    error: str = "",
    url: str = "",
    status: int = 200,
) -> Response:
    org = organization.name
    hooks = webhooks.list(session, organization)
    urls = {hook.id: hook.url for hook in hooks}
    result = webhooks.deliveries(session, organization, page=number, page_size=forms.PAGE_SIZE)
    base = org_path(org, "webhooks") + "?page="
    rows: list[dict[str, Any]] = [
        {
            **webhooks.delivery_dict(item),
            "url": urls.get(item.webhook_id, ""),
            "created": views.when(item.created_at),
            "last_attempt": views.when(item.last_attempt_at),
            "next_attempt": views.when(item.next_attempt_at),
        }
        for item in result.items
    ]
    return render(
        request,
        "webhooks.html",
        visitor,
        org=org,
        tab="webhooks",
        title=f"Webhooks · {org}",
        status=status,
        hooks=[
            {"id": h.id, "url": h.url, "by": h.created_by, "created": views.when(h.created_at)}
            for h in hooks
        ],
        events=webhooks.EVENTS,
        deliveries=rows,
        created=created,
        error=error,
        url=url,
        newer_url=f"{base}{number - 1}" if number > 1 else None,
        older_url=f"{base}{number + 1}" if number * forms.PAGE_SIZE < result.total else None,
    )


@router.get("/orgs/{org}/webhooks")
def webhooks_page(request: Request, org: str, page: str = "1") -> Response:
    number = forms.page_number(page)
    with org_access(request, org, owner=True, write=False) as (session, visitor, organization):
        return _page(request, session, visitor, organization, number=number)


@router.post("/orgs/{org}/webhooks/create")
def create_webhook(request: Request, org: str, form: Form) -> Response:
    url = forms.text(form, "url")
    try:
        with org_access(request, org, owner=True) as (session, visitor, organization):
            webhook, secret = webhooks.create(session, organization, visitor.caller.user, url)
            created = {"url": webhook.url, "secret": secret}
    except (InvalidInput, Conflict) as error:
        with org_access(request, org, owner=True, write=False) as (session, visitor, organization):
            return _page(
                request,
                session,
                visitor,
                organization,
                error=sentence(error),
                url=url,
                status=error.status,
            )
    with org_access(request, org, owner=True, write=False) as (session, visitor, organization):
        return _page(request, session, visitor, organization, created=created)


def _webhook_id(form: Any, org: str) -> int:
    """The form's webhook id, a whole number that fits the database's integers; else
    NotFound naming what was sent."""
    text = forms.text(form, "webhook_id")
    webhook_id = forms.whole_number(text)
    if webhook_id is None:
        raise NotFound(f"webhook {text[:40]!r} not found in {org!r}")
    return webhook_id


@router.post("/orgs/{org}/webhooks/test")
def test_webhook(request: Request, org: str, form: Form) -> Response:
    with org_access(request, org, owner=True) as (session, visitor, organization):
        delivery = webhooks.send_test(
            session, organization, visitor.caller.user, _webhook_id(form, org)
        )
        number = delivery.id
    return redirect(
        request,
        org_path(org, "webhooks"),
        f"Test event queued (delivery {number}); its status shows below.",
    )


@router.post("/orgs/{org}/webhooks/delete")
def delete_webhook(request: Request, org: str, form: Form) -> Response:
    webhook_id = _webhook_id(form, org)
    if not forms.confirmed(form):
        with org_access(request, org, owner=True, write=False) as (session, visitor, organization):
            hook = webhooks.get(session, organization, webhook_id)
            return confirmation(
                request,
                visitor,
                org,
                question=f"Delete the webhook to {hook.url}?",
                consequence="It receives no more events; deliveries not sent yet are dropped.",
                verb="Delete",
                fields=[("webhook_id", str(webhook_id))],
                back=org_path(org, "webhooks"),
            )
    with org_access(request, org, owner=True) as (session, visitor, organization):
        webhooks.delete(session, organization, visitor.caller.user, webhook_id)
    return redirect(request, org_path(org, "webhooks"), "Webhook deleted.")
