"""Drive the simulator with the real PyOTRS 1.5.3 client.

PyOTRS is an independent implementation of the client side of the same protocol:
if it works unchanged against the simulator (including its OTRS 8 AccessTokenCreate
probe and the fallback to legacy sessions), the simulator speaks the protocol the
way real Znuny does.
"""

from __future__ import annotations

import pytest
import requests
from pyotrs import Article, Client, DynamicField, Ticket
from pyotrs.lib import APIError, HTTPError

from tests.simfixtures import PASSWORD, USER, sim

__all__ = ["sim"]


@pytest.fixture
def client(sim, tmp_path):
    # A private session file: PyOTRS would otherwise share /tmp/.pyotrs_session_id.
    return Client(sim.url, USER, PASSWORD, session_id_file=str(tmp_path / "sid"), request_timeout=5)


def new_ticket(client, title="pyotrs ticket", **kwargs):
    ticket = Ticket.create_basic(
        Title=title,
        Queue="Raw",
        State="new",
        Priority="3 normal",
        CustomerUser="someone@example.com",
        **kwargs,
    )
    article = Article(
        {
            "Subject": "Access request",
            "Body": "Please grant access.",
            "MimeType": "text/plain",
            "Charset": "UTF8",
        }
    )
    return client.ticket_create(ticket, article)


def test_session_create_falls_back_to_legacy_sessions(client, sim):
    assert client.use_legacy_sessions is False
    assert client.session_create() is True
    # AccessTokenCreate got {"SessionID": ...}, which PyOTRS cannot parse, so it
    # switched to legacy mode and created a second session.
    assert client.use_legacy_sessions is True
    assert len(client.session_id_store.value) == 32
    stats = sim.stats()
    assert stats["calls"]["SessionCreate"] == 2
    assert stats["sessions"] == 2
    assert client.session_get(client.session_id_store.value) is True
    data = {item["Key"]: item["Value"] for item in client.result}
    assert data["UserLogin"] == USER


def test_create_get_search_update(client, sim):
    client.session_create()
    created = new_ticket(client, "Grant VPN access")
    assert created["TicketID"] == "2"
    assert created["ArticleID"] == 2
    assert len(created["TicketNumber"]) == 16

    ticket = client.ticket_get_by_id(2, articles=True, dynamic_fields=True)
    assert ticket.tid == 2
    assert ticket.field_get("Title") == "Grant VPN access"
    assert ticket.field_get("State") == "new"
    assert ticket.field_get("Owner") == USER
    assert [a.field_get("Subject") for a in ticket.articles] == ["Access request"]
    assert ticket.articles[0].field_get("ContentType") == "text/plain; charset=utf8"
    assert ticket.dynamic_field_get("TicketCalendarEndTime").value is None

    new_ticket(client, "Remove VPN access")
    assert client.ticket_search(Title="*VPN*") == ["3", "2"]
    assert client.ticket_search(Title="nothing like this") == []
    assert client.ticket_search(States=["new"], SortBy="Age", OrderBy="Up") == ["2", "3"]

    updated = client.ticket_update(2, State="closed successful")
    assert updated == {"TicketID": "2", "TicketNumber": created["TicketNumber"]}
    assert client.ticket_get_by_id(2).field_get("StateType") == "closed"
    assert client.ticket_search(StateType="Closed") == ["2"]

    note = Article(
        {"Subject": "Done", "Body": "Access granted.", "MimeType": "text/plain", "Charset": "UTF8"}
    )
    with_article = client.ticket_update(3, article=note, Title="Remove VPN access (done)")
    assert with_article["ArticleID"] == 4
    listed = client.ticket_get_by_list([2, 3])
    assert [t.tid for t in listed] == [2, 3]
    assert listed[1].field_get("Title") == "Remove VPN access (done)"


def test_dynamic_fields_pending_and_history(client, sim):
    client.session_create()
    ticket = Ticket.create_basic(
        Title="df",
        Queue="Misc",
        State="open",
        Priority="4 high",
        CustomerUser="someone@example.com",
    )
    article = Article({"Subject": "s", "Body": "b", "MimeType": "text/plain", "Charset": "UTF8"})
    created = client.ticket_create(
        ticket, article, dynamic_fields=[DynamicField("ProcessManagementProcessID", "P-7")]
    )
    tid = int(created["TicketID"])
    fetched = client.ticket_get_by_id(tid, dynamic_fields=True)
    assert fetched.dynamic_field_get("ProcessManagementProcessID").value == "P-7"
    assert fetched.field_get("Queue") == "Misc"

    client.ticket_update_set_pending(tid, pending_days=2)
    pending = client.ticket_get_by_id(tid)
    assert pending.field_get("State") == "pending reminder"
    assert 2 * 86400 - 120 < pending.field_get("UntilTime") <= 2 * 86400

    history = client.ticket_history_get_by_id(tid)
    assert history["TicketID"] == str(tid)
    kinds = [line["HistoryType"] for line in history["History"]]
    assert kinds[0] == "NewTicket"
    assert "StateUpdate" in kinds and "SetPendingTime" in kinds


def test_api_errors(client, sim):
    client.session_create()
    new_ticket(client)
    with pytest.raises(APIError, match="TicketUpdate.InvalidParameter"):
        client.ticket_update(2, State="bogus")
    with pytest.raises(APIError, match="TicketGet.AccessDenied"):
        client.ticket_get_by_id(99999)
    with pytest.raises(APIError, match="TicketUpdate.AccessDenied"):
        client.ticket_update(99999, State="open")
    with pytest.raises(APIError, match="TicketCreate.InvalidParameter"):
        client.ticket_create(
            Ticket.create_basic(
                Title="x",
                Queue="NoSuchQueue",
                State="new",
                Priority="3 normal",
                CustomerUser="someone@example.com",
            ),
            Article({"Subject": "s", "Body": "b", "MimeType": "text/plain", "Charset": "UTF8"}),
        )


def test_wrong_password_and_expired_session(sim, tmp_path):
    bad = Client(sim.url, USER, "wrong", session_id_file=str(tmp_path / "bad"))
    with pytest.raises(APIError, match="SessionCreate.AuthFail"):
        bad.session_create()

    good = Client(sim.url, USER, PASSWORD, session_id_file=str(tmp_path / "good"))
    good.session_create()
    requests.post(sim.url + "/_sim/sessions/expire", timeout=5)
    with pytest.raises(APIError, match="TicketSearch.AuthFail"):
        good.ticket_search(Title="x")
    assert good.session_get(good.session_id_store.value) is False  # SessionGet.SessionInvalid


def test_http_error_on_injected_failure(sim, tmp_path):
    client = Client(sim.url, USER, PASSWORD, session_id_file=str(tmp_path / "sid"))
    client.session_create()
    sim.configure(fail_rate=1.0)
    for _ in range(4):  # either a 500 or a reset: both are HTTPError in PyOTRS
        with pytest.raises(HTTPError):
            client.ticket_search(Title="x")
    assert sum(sim.stats()["faults"].values()) == 4
