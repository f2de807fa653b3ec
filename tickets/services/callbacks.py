"""Word back upstream: an API client's callback URL gets the request document, signed,
each time one of its requests changes status.

A status change queues a CallbackDelivery in the change's own transaction, with the
document as it is at that moment, so each change is delivered exactly once and in the
words of that moment. The deliveries job POSTs what is due (connections.client
post_callback: the same address checks, pinned sockets and deadline as every OTRS call),
records each attempt, and tries again with backoff for up to a day; then the delivery is
marked failed, and an operator can send it again.

The signature: header `X-Bridge-Signature: t=<unix time>,v1=<hex HMAC-SHA256>` of
"<unix time>.<body>" under the client's secret (the way Stripe signs webhooks).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from connections import addresses, crypto
from connections.client import post_callback

from .. import limits
from ..documents import request_document
from ..models import AccessRequest, ApiClient, CallbackDelivery, ConsoleUser
from .transitions import RequestInvalid, TransitionError

# Sent on commit when deliveries are queued; tickets/apps.py connects it to the job queue.
deliveries_wanted = Signal()

SIGNATURE_HEADER = "X-Bridge-Signature"
# How long a delivery keeps being tried, and the pauses between tries (the last repeats).
GIVE_UP_AFTER = timedelta(days=1)
RETRY_DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
)
_SENDING_LEASE = timedelta(minutes=2)
# Attempts kept in a delivery's log (the count goes on).
_LOG_ATTEMPTS = 50


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def client_set_callback(*, client: ApiClient, url: str) -> str:
    """Register (or replace) a client's callback URL; returns its new secret, shown once.

    The URL must pass the checks of an OTRS URL: http(s) only, no user:password@, no
    address in a refused network.
    """
    url = url.strip()
    problem = "is required" if not url else addresses.url_problem(url)
    if not problem and len(url) > limits.CALLBACK_URL:
        problem = f"is longer than {limits.CALLBACK_URL} characters"
    if not problem and "${" in url:
        problem = "cannot hold ${…}"
    if problem:
        raise RequestInvalid({"url": [f"The callback URL {problem}."]})
    secret = "whsec_" + secrets.token_urlsafe(32)
    ApiClient.objects.filter(pk=client.pk).update(
        callback_url=url, callback_secret_encrypted=crypto.encrypt(secret)
    )
    client.refresh_from_db()
    return secret


def client_clear_callback(*, client: ApiClient) -> None:
    """Stop delivering to a client; deliveries still pending are kept, and fail."""
    ApiClient.objects.filter(pk=client.pk).update(callback_url="", callback_secret_encrypted="")
    client.refresh_from_db()


def requests_changed(sender: object = None, *, request_ids: Iterable[int], **kwargs) -> None:
    """Queue one delivery per request whose client has a callback URL (inside the
    transaction of the status change, after it; connected to transitions.request_moved)."""
    changed = (
        AccessRequest.objects.filter(pk__in=set(request_ids))
        .exclude(api_client__callback_url="")
        .filter(api_client__isnull=False)
        .prefetch_related("tasks__ticket")
    )
    queued = []
    for access_request in changed:
        assert access_request.api_client_id is not None  # filtered above
        body = json.dumps(request_document(access_request), separators=(",", ":"))
        queued.append(
            CallbackDelivery(
                client_id=access_request.api_client_id,
                request=access_request,
                request_status=access_request.status,
                body=body,
                next_attempt_at=timezone.now(),
                give_up_at=timezone.now() + GIVE_UP_AFTER,
            )
        )
    if queued:
        CallbackDelivery.objects.bulk_create(queued)
        transaction.on_commit(lambda: deliveries_wanted.send(sender=CallbackDelivery))


def deliveries_send_due(*, limit: int = 100) -> str:
    """Send the deliveries that are due, oldest first (the deliveries job)."""
    due = CallbackDelivery.due_ids(limit)
    outcomes = [delivery_send(delivery_id=pk) for pk in due]
    sent = outcomes.count(CallbackDelivery.Status.SENT)
    return f"{len(due)} callback(s) due, {sent} delivered" if due else "no callbacks due"


def delivery_send(*, delivery_id: int) -> str:
    """POST one due delivery now and record the attempt.

    Claimed with a conditional UPDATE: two workers never send one delivery at once, and a
    worker that dies mid-send leaves it due again after a short lease.
    """
    if not CallbackDelivery.claim(delivery_id, _SENDING_LEASE):
        return "taken"
    delivery = CallbackDelivery.objects.select_related("client").get(pk=delivery_id)
    client = delivery.client
    if not (client.callback_url and client.callback_secret_encrypted and client.active):
        return _record(delivery, None, "the client has no callback URL any more", 0, final=True)
    body = delivery.body.encode()
    timestamp = int(time.time())
    headers = {
        SIGNATURE_HEADER: sign(crypto.decrypt(client.callback_secret_encrypted), timestamp, body),
        "X-Bridge-Delivery": str(delivery.pk),
        "X-Bridge-Event": "request.status_changed",
    }
    posted = post_callback(
        client.callback_url, body, headers, seconds=settings.CALLBACK_TIMEOUT_SECONDS
    )
    if posted.status_code is not None and 200 <= posted.status_code < 300:
        return _record(delivery, posted.status_code, "", posted.ms, delivered=True)
    error = posted.error or f"the receiver answered HTTP {posted.status_code}"
    return _record(delivery, posted.status_code, error, posted.ms)


def _record(
    delivery: CallbackDelivery,
    status_code: int | None,
    error: str,
    ms: int,
    *,
    delivered: bool = False,
    final: bool = False,
) -> str:
    """Write one attempt, then the delivery's new state: sent, due again, or failed."""
    now = timezone.now()
    attempt = {"at": now.isoformat(), "status_code": status_code, "error": error, "ms": ms}
    log = [*delivery.attempt_log, attempt][-_LOG_ATTEMPTS:]
    fields: dict = {"attempt_log": log, "last_error": error}
    if delivered:
        fields.update(status=CallbackDelivery.Status.SENT, delivered_at=now, next_attempt_at=None)
    else:
        pause = RETRY_DELAYS[min(delivery.attempts, len(RETRY_DELAYS)) - 1]
        if final or delivery.give_up_at is None or now + pause > delivery.give_up_at:
            fields.update(status=CallbackDelivery.Status.FAILED, next_attempt_at=None)
        else:
            fields.update(next_attempt_at=now + pause)
    CallbackDelivery.objects.filter(pk=delivery.pk).update(**fields)
    return fields.get("status", CallbackDelivery.Status.PENDING)


def delivery_redeliver(*, delivery: CallbackDelivery, by: ConsoleUser | None = None) -> None:
    """Send a delivery again now, with the same body (signed anew), a day of tries ahead."""
    with transaction.atomic():
        if CallbackDelivery.objects.filter(pk=delivery.pk).overtaken().exists():
            raise TransitionError(
                f"Delivery {delivery.pk} is not sent again: the client has since been told of a "
                "later status of the request."
            )
        changed = CallbackDelivery.objects.filter(
            pk=delivery.pk,
            status__in=(CallbackDelivery.Status.FAILED, CallbackDelivery.Status.PENDING),
        ).update(
            status=CallbackDelivery.Status.PENDING,
            next_attempt_at=timezone.now(),
            give_up_at=timezone.now() + GIVE_UP_AFTER,
        )
        if not changed:
            raise TransitionError(f"Delivery {delivery.pk} was delivered; it is not sent again.")
        transaction.on_commit(lambda: deliveries_wanted.send(sender=CallbackDelivery))
