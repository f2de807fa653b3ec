"""Word back upstream: an API client's callback URL gets its request documents, signed,
once per status change. The receiver is a real HTTP server in the test; the request runs
through the API and the simulator over real HTTP, as an upstream system would drive it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from connections import crypto
from connections.models import ApiCall
from tests import factories
from tests.test_znuny_contract import poll
from tickets import api, selectors, services
from tickets.models import ApiClient, CallbackDelivery, TaskEvent

pytestmark = pytest.mark.django_db


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300) -> bool:
    """What a receiver does (the README's snippet): recompute, compare in constant time,
    refuse an old timestamp."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected.hexdigest(), parts["v1"])


class Receiver:
    """An upstream system's callback endpoint: records what arrives, answers by `mode`
    ("ok" 204, "error" 500, "slow": answers after `delay` seconds)."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[dict, bytes]] = []
        self.mode = "ok"
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                if receiver.mode == "slow":
                    time.sleep(receiver.delay)
                self.send_response(500 if receiver.mode == "error" else 204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/bridge-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def crm(connection):
    return factories.endpoint(connection, name="crm")


def put_callback(client, token: str, url: str):
    return client.put(
        "/api/v1/callback",
        data=json.dumps({"url": url}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def submit(client, token: str, *, trusted: bool = True) -> int:
    body = {
        "beneficiary": {"username": "lin", "email": "lin@example.com"},
        "endpoint": "crm",
        "operation": "create_account",
    }
    answer = client.post(
        "/api/v1/requests",
        data={**body, "upstream_approver": "manager: grace"} if trusted else body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 201, answer.content
    return answer.json()["id"]


def request_changes(request_id: int) -> list[str]:
    """The request's status changes, from its timeline (its creation is none: the client
    has the answer to its POST)."""
    return list(
        TaskEvent.objects.filter(request_id=request_id, task=None)
        .exclude(to_status="")
        .exclude(from_status="")
        .order_by("id")
        .values_list("to_status", flat=True)
    )


@pytest.fixture
def otrs(otrs_server):
    return factories.otrs_connection(
        otrs_server, user=otrs_server.user, password=otrs_server.password
    )


def test_a_receiver_gets_one_signed_delivery_per_status_change(client, otrs_server, otrs, receiver):
    factories.endpoint(otrs, name="crm")
    iga, token = api.api_client_create(name="iga", trusted=True)
    answer = put_callback(client, token, receiver.url)
    assert answer.status_code == 200
    secret = answer.json()["secret"]
    assert answer.json()["url"] == receiver.url and secret.startswith("whsec_")

    request_id = submit(client, token)
    services.provision_due(owner="test")
    services.deliveries_send_due()
    task = iga.requests.get().tasks.get()
    poll(otrs)
    otrs_server.set_state(task.ticket.ticket_id, "closed successful")
    poll(otrs)
    services.deliveries_send_due()

    changes = request_changes(request_id)
    assert changes == ["approved", "in_progress", "completed"]
    assert len(receiver.received) == len(changes)
    for (headers, body), status in zip(receiver.received, changes, strict=True):
        assert verify(secret, headers["X-Bridge-Signature"], body)
        assert not verify("whsec_wrong", headers["X-Bridge-Signature"], body)
        document = json.loads(body)
        assert (document["id"], document["status"]) == (request_id, status)
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Bridge-Event"] == "request.status_changed"
    last = json.loads(receiver.received[-1][1])
    assert last["tasks"][0]["status"] == "completed"
    assert len({h["X-Bridge-Delivery"] for h, _ in receiver.received}) == len(changes)
    # Nothing is delivered twice.
    assert services.deliveries_send_due() == "no callbacks due"
    assert CallbackDelivery.objects.filter(status="sent").count() == len(changes)
    assert CallbackDelivery.objects.exclude(status="sent").count() == 0


def test_a_receiver_that_was_down_gets_the_delivery_again(client, crm, receiver):
    iga, token = api.api_client_create(name="iga")
    secret = services.client_set_callback(client=iga, url=receiver.url)
    port = receiver.port
    receiver.stop()
    request_id = submit(client, token, trusted=False)
    services.request_cancel(
        access_request=iga.requests.get(pk=request_id),
        actor=services.Actor.api(iga),
        reason="no longer needed",
    )
    assert services.deliveries_send_due() == "1 callback(s) due, 0 delivered"
    delivery = CallbackDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.next_attempt_at > timezone.now()
    assert delivery.last_error == "could not connect to 127.0.0.1"
    assert delivery.attempt_log[0]["status_code"] is None

    back = Receiver(port)
    try:
        services.delivery_redeliver(delivery=delivery)
        assert services.deliveries_send_due() == "1 callback(s) due, 1 delivered"
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, len(delivery.attempt_log)) == ("sent", 2, 2)
        [(headers, body)] = back.received
        assert verify(secret, headers["X-Bridge-Signature"], body)
        assert json.loads(body)["status"] == "cancelled"
    finally:
        back.stop()


def test_a_receiver_answering_500_or_too_slowly_is_tried_again_then_given_up(
    client, crm, receiver, settings
):
    settings.CALLBACK_TIMEOUT_SECONDS = 1.0
    iga, token = api.api_client_create(name="iga")
    services.client_set_callback(client=iga, url=receiver.url)
    submit(client, token, trusted=False)
    request = iga.requests.get()
    services.request_cancel(access_request=request, actor=services.Actor.api(iga))
    receiver.mode = "error"
    services.deliveries_send_due()
    delivery = CallbackDelivery.objects.get()
    assert (delivery.status, delivery.last_error) == (
        "pending",
        "the receiver answered HTTP 500",
    )

    receiver.mode, receiver.delay = "slow", 3.0
    CallbackDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    started = time.monotonic()
    services.deliveries_send_due()
    assert time.monotonic() - started < 2.5  # the deadline, not the receiver, ended it
    delivery.refresh_from_db()
    assert delivery.last_error in (
        "no complete answer within 1 s",
        "127.0.0.1 did not answer within 1 s",
    )

    # A day of tries is over: the delivery is failed, and waits for an operator.
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), give_up_at=timezone.now()
    )
    receiver.mode = "error"
    services.deliveries_send_due()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(delivery.attempt_log)) == ("failed", 3, 3)
    assert services.deliveries_send_due() == "no callbacks due"

    # The overview says so, with the request to deliver again from and, for an admin, the
    # failed deliveries in Setup, which the admins role may open.
    shown = f'<a href="{request.get_absolute_url()}">{request.number}</a>'
    admin_list = reverse("admin:tickets_callbackdelivery_changelist") + "?not_told=yes"
    client.force_login(factories.user("root", "admins"))
    page = client.get(reverse("tickets:overview")).content.decode()
    assert (
        "1 callback delivery failed: an API client was not told that its request changed." in page
    )
    assert shown in page and f'<a href="{admin_list}">Setup</a>' in page
    assert client.get(admin_list).status_code == 200
    client.force_login(factories.user("olga", "operators"))
    page = client.get(reverse("tickets:overview")).content.decode()
    assert shown in page and admin_list not in page
    client.force_login(factories.user("carol", "approvers"))  # may not deliver again
    page = client.get(reverse("tickets:overview")).content.decode()
    assert "1 callback delivery failed" in page and "Deliver again" not in page
    services.delivery_redeliver(delivery=delivery)
    assert (
        "callback delivery failed" not in client.get(reverse("tickets:overview")).content.decode()
    )


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://169.254.169.254/latest/meta-data", "in the refused network"),
        ("http://[::ffff:169.254.169.254]/x", "in the refused network"),
        ("https://user:secret@receiver.example.com/hook", "user name or password"),
        ("ftp://receiver.example.com/hook", "must start with http:// or https://"),
        ("", "is required"),
    ],
)
def test_a_callback_url_in_a_refused_network_or_with_credentials_is_refused(
    client, db, url, problem
):
    iga, token = api.api_client_create(name="iga")
    answer = put_callback(client, token, url)
    assert answer.status_code == 422, answer.content
    assert problem in " ".join(answer.json()["fields"]["url"])
    iga.refresh_from_db()
    assert (iga.callback_url, iga.callback_secret_encrypted) == ("", "")


def test_the_secret_never_shows_in_pages_logs_or_call_rows(
    client, sim, connection, crm, receiver, admin_client, caplog, capsys
):
    iga, token = api.api_client_create(name="iga", trusted=True)
    with caplog.at_level(logging.DEBUG):
        call_command("set_callback", "iga", receiver.url)
        secret = capsys.readouterr().out.strip().splitlines()[-1]
        assert secret.startswith("whsec_")
        submit(client, token)
        services.provision_due(owner="test")
        task = iga.requests.get().tasks.get()
        services.task_cancel(task=task, actor=services.Actor.api(iga), why="stop")
        services.notes_send_due()
        services.deliveries_send_due()
    session_ids = [crypto.decrypt(row.token_encrypted) for row in connection.tokens.all()]
    assert session_ids and all(session_ids)
    stored = ApiClient.objects.get(pk=iga.pk).callback_secret_encrypted
    assert stored and secret not in stored
    pages = [
        admin_client.get("/admin/tickets/apiclient/").content.decode(),
        admin_client.get(f"/admin/tickets/apiclient/{iga.pk}/change/").content.decode(),
        admin_client.get("/admin/tickets/callbackdelivery/").content.decode(),
        admin_client.get("/admin/tickets/ticketnote/").content.decode(),
        admin_client.get(task.request.get_absolute_url()).content.decode(),
    ]
    rows = [
        " ".join([c.url, c.error, c.request_excerpt, c.response_excerpt])
        for c in ApiCall.objects.all()
    ]
    assert any("ticketUpdate" == c.call_name for c in ApiCall.objects.all())
    for text in [*pages, caplog.text, *rows]:
        assert secret not in text
        for session_id in session_ids:
            assert session_id not in text


def test_a_failed_delivery_overtaken_by_a_delivered_one_is_no_longer_counted(client, crm):
    iga, token = api.api_client_create(name="iga")
    submit(client, token, trusted=False)
    request = iga.requests.get()

    def delivery(status: str) -> CallbackDelivery:
        return CallbackDelivery.objects.create(
            client=iga, request=request, request_status=request.status, body="{}", status=status
        )

    older = delivery("failed")
    assert selectors.overview().deliveries_failed == 1
    assert [r.pk for r in selectors.overview().failed_delivery_requests] == [request.pk]
    delivery("sent")  # the client has heard of a later status since
    assert selectors.overview().deliveries_failed == 0
    # Sending it again would move the client back: refused, and the page says why.
    with pytest.raises(services.TransitionError, match="later status"):
        services.delivery_redeliver(delivery=older)
    client.force_login(factories.user("olga", "operators"))
    page = client.get(request.get_absolute_url()).content.decode()
    assert "A later status was delivered since; this one is not sent again." in page
    assert page.count("Deliver again") == 0
    client.force_login(factories.user("root", "admins"))
    admin_list = reverse("admin:tickets_callbackdelivery_changelist")
    assert "0 callback deliveries" in client.get(admin_list + "?not_told=yes").content.decode()
    CallbackDelivery.objects.filter(pk=older.pk).update(status="failed")
    delivery("failed")  # a failure after the delivered one counts again
    assert selectors.overview().deliveries_failed == 1
