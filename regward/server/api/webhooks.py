"""An organization's webhooks, owners only (services.webhooks has the events and the URL rules).

GET    /api/v1/orgs/{org}/webhooks                       the webhooks (never their secrets)
POST   /api/v1/orgs/{org}/webhooks {"url": ...}          201, with the secret, shown once
DELETE /api/v1/orgs/{org}/webhooks/{id}                  204; pending deliveries are dropped
POST   /api/v1/orgs/{org}/webhooks/{id}/test             202, a `ping` delivery queued
GET    /api/v1/orgs/{org}/webhooks/{id}/deliveries       the delivery log, newest first
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from regward.server.api.deps import OwnerDep, OwnerWriteDep
from regward.server.models import MAX_REVISION, Webhook
from regward.server.services import names, webhooks

router = APIRouter()
# An id the database can hold (a larger one was a 500 from the integer column).
WebhookId = Annotated[int, Path(ge=1, le=MAX_REVISION)]


class NewWebhook(BaseModel):
    url: str = Field(
        max_length=webhooks.MAX_URL_LENGTH + 100,
        description="http:// or https://, a host name, an optional port and path",
        # What `webhooks.parse_url` takes, narrowed to names (IP literals may be refused).
        json_schema_extra={
            "pattern": (
                r"^https?://(?:[a-z0-9-]{1,63}\.)+[a-z]{2,63}(?::[1-9][0-9]{0,3})?"
                r"(?:[/?][^\x00-\x20\x7f#]*)?$"
            )
        },
    )


def _webhook(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "created_at": webhook.created_at.isoformat(),
        "created_by": webhook.created_by,
    }


@router.get("/orgs/{org}/webhooks", summary="The organization's webhooks (owners)")
def list_webhooks(owner: OwnerDep) -> dict[str, Any]:
    return {
        "webhooks": [_webhook(w) for w in webhooks.list(owner.session, owner.organization)],
        "events": list(webhooks.EVENTS),
    }


@router.post(
    "/orgs/{org}/webhooks",
    status_code=201,
    summary="Add a webhook; the answer holds its secret, shown only this once",
)
def create_webhook(body: NewWebhook, owner: OwnerWriteDep) -> dict[str, Any]:
    webhook, secret = webhooks.create(
        owner.session, owner.organization, owner.caller.user, body.url
    )
    return {**_webhook(webhook), "secret": secret}


@router.delete("/orgs/{org}/webhooks/{webhook_id}", status_code=204, summary="Delete a webhook")
def delete_webhook(webhook_id: WebhookId, owner: OwnerWriteDep) -> None:
    webhooks.delete(owner.session, owner.organization, owner.caller.user, webhook_id)


@router.post(
    "/orgs/{org}/webhooks/{webhook_id}/test",
    status_code=202,
    summary="Send a test event (`ping`) to one webhook",
)
def test_webhook(webhook_id: WebhookId, owner: OwnerWriteDep) -> dict[str, Any]:
    delivery = webhooks.send_test(owner.session, owner.organization, owner.caller.user, webhook_id)
    return webhooks.delivery_dict(delivery)


@router.get(
    "/orgs/{org}/webhooks/{webhook_id}/deliveries",
    summary="One webhook's delivery log: status, attempts, response code, last error",
)
def list_deliveries(
    webhook_id: WebhookId,
    owner: OwnerDep,
    page: Annotated[int, Query(ge=1, le=names.MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=webhooks.MAX_PAGE_SIZE)] = 25,
) -> dict[str, Any]:
    result = webhooks.deliveries(
        owner.session, owner.organization, webhook_id, page=page, page_size=page_size
    )
    return {
        "deliveries": [webhooks.delivery_dict(d) for d in result.items],
        "total": result.total,
        "page": result.page,
        "page_size": result.page_size,
    }
