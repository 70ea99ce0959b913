"""HTTP for /v1/webhooks: parse, call the service, shape the response. No rules here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http

from app.db import in_worker_thread
from app.dependencies import SessionDep, SettingsDep, TenantDep
from app.errors_doc import error_responses
from app.models import DeliveryStatus
from app.pagination import DEFAULT_LIMIT, AfterQuery, LimitQuery
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryList,
    DeliveryRead,
    WebhookCreate,
    WebhookList,
    WebhookRead,
    WebhookWithSecret,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post(
    "",
    status_code=http.HTTP_201_CREATED,
    response_model=WebhookWithSecret,
    responses=error_responses(409, 422),
    summary="Register a webhook endpoint (its secret is shown once, here)",
)
@in_worker_thread
def create_webhook(
    body: WebhookCreate, session: SessionDep, tenant: TenantDep, settings: SettingsDep
) -> WebhookWithSecret:
    endpoint = service.create_webhook(session, tenant=tenant, settings=settings, body=body)
    return WebhookWithSecret.model_validate(endpoint)


@router.get("", response_model=WebhookList, responses=error_responses(422), summary="List webhooks, newest first")
@in_worker_thread
def list_webhooks(
    session: SessionDep, tenant: TenantDep, limit: LimitQuery = DEFAULT_LIMIT, after: AfterQuery = None
) -> WebhookList:
    endpoints, has_more = service.list_webhooks(session, tenant=tenant, limit=limit, after=after)
    return WebhookList(data=[WebhookRead.model_validate(e) for e in endpoints], has_more=has_more)


@router.get("/{webhook_id}", response_model=WebhookRead, responses=error_responses(404), summary="Get a webhook")
@in_worker_thread
def get_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> WebhookRead:
    return WebhookRead.model_validate(service.get_webhook(session, tenant=tenant, webhook_id=webhook_id))


@router.delete(
    "/{webhook_id}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a webhook and its deliveries",
)
@in_worker_thread
def delete_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete_webhook(session, tenant=tenant, webhook_id=webhook_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=WebhookWithSecret,
    responses=error_responses(404),
    summary="Replace the secret (shown once); the old one keeps signing during the grace period",
)
@in_worker_thread
def rotate_secret(webhook_id: str, session: SessionDep, tenant: TenantDep, settings: SettingsDep) -> WebhookWithSecret:
    endpoint = service.rotate_secret(session, tenant=tenant, settings=settings, webhook_id=webhook_id)
    return WebhookWithSecret.model_validate(endpoint)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses=error_responses(404, 422),
    summary="The webhook's deliveries, newest first, with their last status code",
)
@in_worker_thread
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    tenant: TenantDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    after: AfterQuery = None,
    status: Annotated[DeliveryStatus | None, Query(description="Only deliveries in this status.")] = None,
) -> DeliveryList:
    rows, has_more = service.list_deliveries(
        session, tenant=tenant, webhook_id=webhook_id, limit=limit, after=after, status=status
    )
    return DeliveryList(data=[DeliveryRead.model_validate(d) for d in rows], has_more=has_more)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=http.HTTP_202_ACCEPTED,
    response_model=DeliveryRead,
    responses=error_responses(404),
    summary="Send a delivery again (same webhook-id and body), as soon as the dispatcher looks",
)
@in_worker_thread
def retry_delivery(webhook_id: str, delivery_id: str, session: SessionDep, tenant: TenantDep) -> DeliveryRead:
    delivery = service.retry_delivery(session, tenant=tenant, webhook_id=webhook_id, delivery_id=delivery_id)
    return DeliveryRead.model_validate(delivery)
