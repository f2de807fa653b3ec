"""What the bridge relies on, driven through the bridge against the simulator and the real
Znuny 6.5 (`otrs_server`): every test body runs twice, [sim] and [znuny].

The connection is the shipped package imported with only the URL and the credentials
set, as an admin would import it. On the shared Znuny every test finds its tickets by
its own correlation keys and titles; polling only ever asks for the tickets this test's
database holds.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from connections.client import TicketClient
from connections.models import ApiCall, Connection, ConnectionToken
from connections.services import connection_check
from tests import factories
from tests.test_provisioning import approved_task
from tickets import services
from tickets.models import AccessRequest, Account, ProvisioningTask, TaskEvent, Ticket

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

LOGIN_CALL = "token:otrsSession"  # the package's SessionCreate, as the call log names it


@pytest.fixture
def otrs(otrs_server) -> Connection:
    return factories.otrs_connection(
        otrs_server, user=otrs_server.user, password=otrs_server.password
    )


@pytest.fixture
def crm(otrs):
    return factories.endpoint(otrs, name="crm")


def provisioned(endpoint, people, n: int = 1) -> list[ProvisioningTask]:
    """`n` approved tasks, each with its ticket created by the provisioning job."""
    tasks = [approved_task(endpoint, people, username=f"user{i}") for i in range(n)]
    services.provision_due(owner="contract")
    for task in tasks:
        task.refresh_from_db()
        assert task.status == "ticket_open", task.last_error
    return tasks


def poll(connection: Connection) -> services.PollResult:
    connection.refresh_from_db()
    result = services.tickets_poll(connection=connection)
    assert result.errors == [], result.errors
    return result


def calls(connection: Connection, **where) -> int:
    return ApiCall.objects.filter(connection=connection, **where).count()


def status(task: ProvisioningTask) -> str:
    return ProvisioningTask.objects.get(pk=task.pk).status


# --- the connection --------------------------------------------------------------------------


def test_the_shipped_package_passes_test_connection_as_a_service_and_a_command(otrs_server, otrs):
    result = connection_check(connection=otrs)
    assert result.ok, result.message
    assert result.message.startswith(f"logged in as {otrs_server.user} and ran the test call in ")
    assert [e["call"] for e in result.exchanges] == [LOGIN_CALL, "testConnection"]
    assert [e["status_code"] for e in result.exchanges] == [200, 200]
    otrs.refresh_from_db()
    assert otrs.last_test_ok is True

    out = io.StringIO()
    call_command("test_connection", otrs.name, stdout=out)
    printed = out.getvalue()
    assert printed.startswith(f"OK: logged in as {otrs_server.user} and ran the test call in ")
    assert f"GET {otrs_server.base_url}/Ticket?Limit=1&SessionID=********" in printed
    session_id = ConnectionToken.objects.get(connection=otrs).token
    assert session_id and session_id not in printed and otrs_server.password not in printed


def test_a_wrong_password_is_a_clear_error_and_fails_the_task_at_once(otrs_server, people):
    wrong = factories.otrs_connection(
        otrs_server, name="wrong", user=otrs_server.user, password="not-the-password-1"
    )
    refused = f"OTRS refused the login for user {otrs_server.user}: SessionCreate.AuthFail"
    result = connection_check(connection=wrong)
    assert (result.ok, result.message) == (False, refused)

    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_code:
        call_command("test_connection", "wrong", stdout=out)
    assert exit_code.value.code == 1
    assert out.getvalue().startswith(f"FAILED: {refused}")
    assert "not-the-password-1" not in out.getvalue()

    task = approved_task(factories.endpoint(wrong, name="erp"), people)
    services.provision_due(owner="contract")
    task.refresh_from_db()
    assert task.status == "failed" and refused in task.last_error
    wrong.refresh_from_db()
    assert wrong.last_error == refused


# --- creating a ticket, and finding it again -------------------------------------------------


def test_a_task_becomes_one_ticket_with_ticket_and_article_at_the_top_level(
    otrs_server, crm, people
):
    [task] = provisioned(crm, people)
    key = task.correlation_key
    found = otrs_server.ticket(task.ticket.ticket_id, AllArticles=1)
    assert found["Title"] == f"[{key}] Create account for user0 on CRM"
    assert (found["Queue"], found["State"], found["Priority"]) == ("Raw", "new", "3 normal")
    assert found["CustomerUserID"] == "iga-bridge@example.com"
    assert found["Owner"] == otrs_server.user
    assert found["TicketNumber"] == task.ticket.ticket_number
    [article] = found["Article"]
    assert article["Subject"] == "Create account for user0 on CRM"
    assert "\nEndpoint: CRM (application: CRM system)\n" in article["Body"]
    assert article["Body"].startswith(f"Access request {key}\n\nOperation: Create account\n")
    assert (article["SenderType"], article["ContentType"]) == ("agent", "text/plain; charset=utf8")
    assert otrs_server.search(f"Title=*{key}*") == [str(task.ticket.ticket_id)]
    assert task.ticket.agent_url.endswith(
        f"/otrs/index.pl?Action=AgentTicketZoom;TicketID={task.ticket.ticket_id}"
    )


def test_an_unknown_outcome_adopts_the_ticket_the_correlation_key_finds(otrs_server, crm, people):
    lost, fresh = (approved_task(crm, people, username=n) for n in ("lost", "fresh"))
    # The create of `lost` reached OTRS but its answer did not reach the bridge.
    made = otrs_server.create_ticket(f"[{lost.correlation_key}] Create account for lost on crm")
    ProvisioningTask.objects.filter(pk__in=[lost.pk, fresh.pk]).update(outcome_unknown=True)

    services.provision_due(owner="contract")

    lost.refresh_from_db()
    fresh.refresh_from_db()
    assert lost.ticket.ticket_id == int(made["TicketID"])
    assert lost.ticket.ticket_number == made["TicketNumber"]
    assert TaskEvent.objects.filter(task=lost, reason__contains="adopted the ticket").exists()
    # No match: the search said so, and the task got exactly one new ticket.
    assert fresh.status == "ticket_open" and fresh.ticket.ticket_id != lost.ticket.ticket_id
    for task in (lost, fresh):
        assert otrs_server.search(f"Title=*{task.correlation_key}*") == [str(task.ticket.ticket_id)]
    client = TicketClient(crm.security_system.service_desk_connection)
    assert client.find_ticket({"correlationKey": "BR-NOSUCHKEY0"}) is None


# --- polling ---------------------------------------------------------------------------------


def test_polling_reads_the_open_tickets_in_batches_and_skips_a_missing_one(
    otrs_server, otrs, crm, people
):
    # Every cycle a sweep of all open tickets (no changeSearchCall): its batches are counted.
    status_document = {k: v for k, v in otrs.ticket_status_json.items() if k != "changeSearchCall"}
    Connection.objects.filter(pk=otrs.pk).update(batch_size=3, ticket_status_json=status_document)
    tasks = provisioned(crm, people, 7)
    ghost = Ticket.objects.create(connection=otrs, ticket_id=999_999_999, ticket_number="ghost")
    ref = f"poll:{otrs.name}"
    result = poll(otrs)
    assert (result.tickets, result.missing) == (8, 1)
    # Three batches of 3, 3 and 2; the one holding the missing id is halved to find it.
    gets = calls(otrs, ref=ref, url__contains="/Ticket/")
    assert gets >= 3 and calls(otrs, ref=ref, url__contains="999999999", outcome="ok") == 0
    assert Ticket.objects.filter(last_polled_at__isnull=True).count() == 0
    assert all(status(t) == "ticket_open" for t in tasks)
    ghost.refresh_from_db()
    assert ghost.is_open

    Ticket.objects.filter(pk=ghost.pk).delete()
    before = calls(otrs, ref=ref)
    assert poll(otrs).tickets == 7
    assert calls(otrs, ref=ref) - before == 3  # ceil(7 / 3), the session reused


def test_an_agents_states_reach_the_tasks_through_the_poll(
    otrs_server, otrs, crm, people, q_sync, mailoutbox, django_capture_on_commit_callbacks
):
    done, dropped, waiting = provisioned(crm, people, 3)
    otrs_server.set_state(done.ticket.ticket_id, "closed successful")
    otrs_server.set_state(dropped.ticket.ticket_id, "closed unsuccessful")
    otrs_server.set_state(waiting.ticket.ticket_id, "pending reminder")
    with django_capture_on_commit_callbacks(execute=True):
        assert poll(otrs).changed == 3
    assert (status(done), status(dropped), status(waiting)) == (
        "completed",
        "discontinued",
        "ticket_pending",
    )
    assert AccessRequest.objects.get(pk=done.request_id).status == "completed"
    assert AccessRequest.objects.get(pk=dropped.request_id).status == "failed"
    assert AccessRequest.objects.get(pk=dropped.request_id).result_summary == "1 discontinued"
    assert Account.objects.filter(identity__username="user0", endpoint=crm, active=True).exists()
    assert not Account.objects.filter(identity__username="user1").exists()
    ticket = Ticket.objects.get(pk=done.ticket_id)
    assert (ticket.state, ticket.state_type, ticket.is_open) == (
        "closed successful",
        "closed",
        False,
    )
    assert len(mailoutbox) == 2
    # A pending ticket that opens again goes back to ticket_open.
    otrs_server.set_state(waiting.ticket.ticket_id, "open")
    poll(otrs)
    assert status(waiting) == "ticket_open"


# How a poll cycle learns what changed, by the TicketStatusJSON it runs. Today the shipped
# package sweeps the open tickets with batched TicketGet; another way to poll (a search for
# what changed) adds an entry here and the same test holds it to the same contract.
POLL_DOCUMENTS = {
    "batched TicketGet": lambda document: document,
}


@pytest.mark.parametrize("poll_kind", sorted(POLL_DOCUMENTS))
def test_a_ticket_an_agent_closes_between_two_cycles_is_found_by_the_next(
    otrs_server, otrs, crm, people, poll_kind
):
    document = POLL_DOCUMENTS[poll_kind](otrs.ticket_status_json)
    Connection.objects.filter(pk=otrs.pk).update(ticket_status_json=document)
    closed, left = provisioned(crm, people, 2)
    poll(otrs)  # the first cycle learns the states of the new tickets
    assert poll(otrs).changed == 0  # a quiet cycle
    otrs_server.set_state(closed.ticket.ticket_id, "closed successful")
    result = poll(otrs)
    assert result.changed == 1
    assert (status(closed), status(left)) == ("completed", "ticket_open")


def test_a_merged_ticket_is_followed_to_its_target(otrs_server, otrs, crm, people):
    [task] = provisioned(crm, people)
    target = otrs_server.create_ticket(otrs_server.unique("the agent's main ticket"))
    target_id = int(target["TicketID"])
    otrs_server.merge(task.ticket.ticket_id, target_id)
    poll(otrs)
    task.refresh_from_db()
    assert task.ticket.ticket_id == target_id and task.status == "ticket_open"
    assert task.ticket.ticket_number == target["TicketNumber"]
    otrs_server.set_state(target_id, "closed successful")
    poll(otrs)
    assert status(task) == "completed"


# --- sessions --------------------------------------------------------------------------------


def test_a_session_otrs_ended_is_renewed_once_and_the_poll_goes_on(otrs_server, otrs, crm, people):
    [task] = provisioned(crm, people)
    first = ConnectionToken.objects.get(connection=otrs).token
    otrs_server.end_session(first)
    logins = calls(otrs, call_name=LOGIN_CALL)

    assert poll(otrs).tickets == 1

    assert calls(otrs, call_name=LOGIN_CALL) == logins + 1
    refused = ApiCall.objects.filter(connection=otrs, error__contains="AuthFail").latest("pk")
    assert "TicketGet.AuthFail" in refused.error and first not in refused.url
    second = ConnectionToken.objects.get(connection=otrs).token
    assert second and second != first
    answer = otrs_server.call("GET", f"/Ticket/{task.ticket.ticket_id}?SessionID={first}")
    assert answer.json()["Error"]["ErrorCode"] == "TicketGet.AuthFail"

    # A session near its declared lifetime is renewed before it is used, not after a refusal.
    ConnectionToken.objects.filter(connection=otrs).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    failures = calls(otrs, error__contains="AuthFail")
    assert poll(otrs).tickets == 1
    assert calls(otrs, call_name=LOGIN_CALL) == logins + 2
    assert calls(otrs, error__contains="AuthFail") == failures
