"""Sessions against the OTRS simulator: login, expiry, renewal, and single-flight refresh."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import requests
from django.db import connection as db_connection
from django.utils import timezone

from connections import auth, crypto
from connections.client import TicketClient
from connections.errors import OTRSError
from connections.models import ApiCall, Connection, ConnectionToken
from tests import simfixtures
from tests.engine_fixtures import make_connection, sample_task_context, sim_calls, sim_config


def session_creates(sim) -> int:
    return sim_calls(sim).get("SessionCreate", 0)


def token_row(connection: Connection) -> ConnectionToken:
    return ConnectionToken.objects.get(connection=connection, auth_name="otrs")


def client_token(
    connection: Connection, auth_name: str, *, force: bool = False, seen: int | None = None
) -> str:
    """The token a client sends for one auth block, logging in when it needs to."""
    client = TicketClient(connection)
    auth_spec = client.documents.connection.auths[auth_name]
    return client.token(auth_spec, ref="", force=force, seen=seen).value


@pytest.fixture
def otrs(sim, db) -> Connection:
    return make_connection(sim.base_url)


@pytest.mark.django_db
def test_it_logs_in_once_and_reuses_the_stored_session(sim, otrs):
    client = TicketClient(otrs)
    ticket = client.create_ticket(sample_task_context()).ticket_id
    client.ticket_statuses([ticket])
    TicketClient(Connection.objects.get(pk=otrs.pk)).ticket_statuses([ticket])

    assert session_creates(sim) == 1
    row = token_row(otrs)
    assert row.version == 1 and row.refresh_count == 1 and row.refresh_lease_until is None
    assert row.token_encrypted and row.token not in row.token_encrypted
    assert row.expires_at - row.obtained_at == timedelta(seconds=3000)


@pytest.mark.django_db
def test_a_session_that_otrs_expired_is_renewed_transparently(sim, otrs):
    sim_config(sim, session_ttl=1)
    client = TicketClient(otrs)
    ticket = client.create_ticket(sample_task_context()).ticket_id
    old = token_row(otrs).token
    time.sleep(1.2)

    statuses = client.ticket_statuses([ticket])

    assert statuses[ticket].state == "new"
    assert session_creates(sim) == 2
    assert token_row(otrs).token != old
    outcomes = list(ApiCall.objects.filter(call_name="TicketGet").values_list("outcome", flat=True))
    assert sorted(outcomes) == ["auth_error", "ok"]


@pytest.mark.django_db
def test_a_session_near_its_declared_lifetime_is_renewed_before_use(sim, otrs):
    client = TicketClient(otrs)
    ticket = client.create_ticket(sample_task_context()).ticket_id
    ConnectionToken.objects.filter(connection=otrs).update(
        expires_at=timezone.now() + timedelta(seconds=30)
    )

    TicketClient(otrs).ticket_statuses([ticket])

    assert session_creates(sim) == 2
    assert not ApiCall.objects.filter(outcome="auth_error").exists()


@pytest.mark.django_db
def test_a_client_keeps_its_fresh_session_without_reading_the_row_again(sim, otrs):
    from django.test.utils import CaptureQueriesContext

    client = TicketClient(otrs)
    ticket = client.create_ticket(sample_task_context()).ticket_id
    with CaptureQueriesContext(db_connection) as queries:
        client.ticket_statuses([ticket])
        client.ticket_statuses([ticket])
    assert not [q for q in queries if "connectiontoken" in q["sql"]]
    assert session_creates(sim) == 1


@pytest.mark.django_db
def test_a_kept_session_is_still_renewed_near_its_lifetime(sim, otrs, monkeypatch):
    client = TicketClient(otrs)
    ticket = client.create_ticket(sample_task_context()).ticket_id
    lifetime = token_row(otrs).expires_at - timezone.now()
    # The client's own clock reaches the last minute of the session's declared lifetime.
    later = timezone.now() + lifetime - timedelta(seconds=30)
    monkeypatch.setattr(auth.timezone, "now", lambda: later)
    monkeypatch.setattr("connections.client.timezone.now", lambda: later)

    client.ticket_statuses([ticket])

    assert session_creates(sim) == 2


@pytest.mark.django_db
def test_a_refused_login_flags_the_connection(sim):
    connection = make_connection(sim.base_url, password="not-the-password")

    with pytest.raises(OTRSError) as caught:
        TicketClient(connection).create_ticket(sample_task_context())

    message = "OTRS refused the login for user bridge: SessionCreate.AuthFail"
    assert caught.value.message == message and caught.value.permanent and caught.value.auth
    connection.refresh_from_db()
    assert connection.last_error == message and connection.last_error_at is not None
    row = token_row(connection)
    assert row.last_error == message and row.refresh_lease_until is None and not row.token_encrypted
    assert session_creates(sim) == 1


@pytest.mark.django_db
def test_a_client_token_is_the_session_and_an_expired_lease_is_taken_over(sim, otrs):
    first = client_token(otrs, "otrs")
    # A refresher that died mid-login: its lease has run out, the version never moved.
    ConnectionToken.objects.filter(connection=otrs).update(
        refresh_lease_until=timezone.now() - timedelta(seconds=1)
    )

    second = client_token(otrs, "otrs", force=True, seen=1)

    assert len(first) == 32 and second != first
    assert token_row(otrs).version == 2 and session_creates(sim) == 2


@pytest.mark.django_db
def test_a_static_token_is_used_as_is_and_basic_has_none(sim, otrs):
    document = otrs.connection_document()
    block = document["authentications"]["otrs"]
    for key in ("url", "httpMethod", "httpParams", "httpContentType", "tokenResponsePath"):
        block.pop(key)
    block.update(accessToken="static-token-value", tokenType="Bearer")
    document["authentications"]["basic"] = {
        "authType": "Basic",
        "properties": {"userName": "u", "password": "p"},
    }
    otrs.set_connection_json(document)
    otrs.save()

    assert client_token(otrs, "otrs") == "Bearer static-token-value"
    assert client_token(otrs, "basic") == ""
    assert session_creates(sim) == 0


def _poll_in_threads(connection_pk: int, ticket: int, count: int = 8) -> list[object]:
    """`count` workers poll at the same moment; each returns its state or its error."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def worker(index: int) -> None:
        try:
            client = TicketClient(Connection.objects.get(pk=connection_pk))
            barrier.wait()
            results[index] = client.ticket_statuses([ticket])[ticket].state
        except Exception as exc:  # reported through results
            results[index] = exc
        finally:
            db_connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.django_db(transaction=True)
def test_eight_workers_without_a_session_log_in_once(sim, otrs):
    ticket = simfixtures.create_ticket(sim, simfixtures.login(sim))["TicketID"]

    results = _poll_in_threads(otrs.pk, int(ticket))

    assert results == ["new"] * 8
    assert session_creates(sim) == 2  # the test's own login above, then ours, once
    assert token_row(otrs).refresh_count == 1


@pytest.mark.django_db(transaction=True)
def test_eight_workers_meeting_an_expired_session_refresh_it_once(sim, otrs):
    ticket = TicketClient(otrs).create_ticket(sample_task_context()).ticket_id
    assert session_creates(sim) == 1
    requests.post(f"{sim.url}/_sim/sessions/expire", timeout=5).raise_for_status()

    results = _poll_in_threads(otrs.pk, ticket)

    assert results == ["new"] * 8
    assert session_creates(sim) == 2  # the first login, then exactly one refresh
    assert ApiCall.objects.filter(call_name="TicketGet", outcome="auth_error").count() == 8
    assert token_row(otrs).version == 2


@pytest.mark.django_db(transaction=True)
def test_eight_workers_past_the_declared_lifetime_refresh_once(sim, otrs):
    ticket = TicketClient(otrs).create_ticket(sample_task_context()).ticket_id
    ConnectionToken.objects.filter(connection=otrs).update(
        expires_at=timezone.now() - timedelta(seconds=1),
        token_encrypted=crypto.encrypt("stale-session-id"),
    )

    results = _poll_in_threads(otrs.pk, ticket)

    assert results == ["new"] * 8
    assert session_creates(sim) == 2
    assert not ApiCall.objects.filter(outcome="auth_error").exists()
