"""The ticket conversation, both ways, on the simulator and on the real Znuny 6.5
(`otrs_server`): a cancel reaches the ticket as a note and the cancel state, a ticket
reopened after completion sends its task back and flags the inventory, and the agent's
closing article comes back as the task's reason.

The connection is the shipped package with only the URL and the credentials set. Notes are
sent by calling the notes job's service, as the schedule would.
"""

from __future__ import annotations

import pytest
import requests
from django.utils import timezone

from connections.models import ApiCall, Connection
from tests import factories, simfixtures, test_browser
from tests.otrs_servers import OtrsServer
from tests.test_znuny_contract import poll, provisioned
from tickets import api, selectors, services
from tickets.models import (
    AccessRequest,
    Account,
    AccountEntitlement,
    Identity,
    ProvisioningTask,
    TaskEvent,
    Ticket,
    TicketNote,
)

pytestmark = pytest.mark.django_db

# The browser test's fixtures: Debian's Chromium, and django-q2 running jobs inline.
browser = test_browser.browser
inline_jobs = test_browser.inline_jobs


@pytest.fixture
def otrs(otrs_server) -> Connection:
    return factories.otrs_connection(
        otrs_server, user=otrs_server.user, password=otrs_server.password
    )


@pytest.fixture
def crm(otrs):
    return factories.endpoint(otrs, name="crm")


def timeline(task: ProvisioningTask) -> list[str]:
    return list(TaskEvent.objects.filter(task=task).order_by("id").values_list("reason", flat=True))


def fresh(task: ProvisioningTask) -> ProvisioningTask:
    return ProvisioningTask.objects.select_related("request").get(pk=task.pk)


def newest_articles(otrs_server, ticket_id, n: int = 1) -> list[dict]:
    ticket = otrs_server.ticket(ticket_id, AllArticles=1, ArticleOrder="DESC", ArticleLimit=n)
    return ticket["Article"]


def sim_server(sim) -> OtrsServer:
    """The simulator seen through the helper the both-servers tests use."""
    return OtrsServer(sim.base_url, simfixtures.USER, simfixtures.PASSWORD)


def agent_writes(otrs_server, ticket_id, subject: str, body: str) -> None:
    """An agent adds a note to the ticket, as from its zoom screen."""
    otrs_server.patch(
        ticket_id,
        {
            "Article": {
                "Subject": subject,
                "Body": body,
                "ContentType": "text/plain; charset=utf8",
                "CommunicationChannel": "Internal",
                "SenderType": "agent",
            }
        },
    )


# --- cancel reaches OTRS ----------------------------------------------------------------------


def test_a_cancel_adds_a_note_saying_who_and_why_and_sets_the_cancel_state(
    otrs_server, otrs, crm, people
):
    [task] = provisioned(crm, people)
    ticket_id = task.ticket.ticket_id
    people.olga.first_name, people.olga.last_name = "Olga", "Ivanova"
    people.olga.save()
    services.task_cancel(task=task, by=people.olga, why="Wrong application, see REQ-9")

    # The cancel itself made no call: the note is queued.
    note = TicketNote.objects.get(task=task)
    assert (fresh(task).status, note.status) == ("cancelled", "pending")
    assert not ApiCall.objects.filter(call_name="ticketUpdate").exists()
    assert otrs_server.ticket(ticket_id)["State"] == "new"

    assert services.notes_send_due() == "1 note(s) due, 1 sent"
    note.refresh_from_db()
    assert (note.status, note.state, note.attempts) == ("sent", "closed unsuccessful", 1)
    ticket = otrs_server.ticket(ticket_id)
    assert (ticket["State"], ticket["StateType"]) == ("closed unsuccessful", "closed")
    [article] = newest_articles(otrs_server, ticket_id)
    assert int(article["ArticleID"]) == note.article_id
    assert article["Subject"] == "Cancelled: Create account for user0 on CRM"
    assert "Cancelled by: Olga Ivanova" in article["Body"]  # the person, by name
    assert "Why: Wrong application, see REQ-9" in article["Body"]
    assert timeline(task)[-2:] == [
        f'note "Cancelled" queued for OTRS ticket {task.ticket}',
        f'OTRS ticket {task.ticket}: note "Cancelled" added and set its state to '
        "'closed unsuccessful'",
    ]
    [call] = ApiCall.objects.filter(call_name="ticketUpdate")
    assert (call.method, call.status_code, call.ref) == ("PATCH", 200, f"task:{task.pk}")
    assert ApiCall.objects.filter(call_name="ticketUpdate").count() == 1
    # Sending again finds nothing due: one note, one article.
    assert services.notes_send_due() == "no notes due"


def test_a_cancel_with_note_only_leaves_the_state(otrs_server, otrs, crm, people):
    document = dict(otrs.ticket_status_json, cancelState="")
    Connection.objects.filter(pk=otrs.pk).update(ticket_status_json=document)
    [task] = provisioned(crm, people)
    services.request_cancel(
        access_request=task.request, by=people.olga, reason="The project was stopped"
    )
    services.notes_send_due()
    ticket_id = task.ticket.ticket_id
    assert otrs_server.ticket(ticket_id)["State"] == "new"
    [article] = newest_articles(otrs_server, ticket_id)
    assert "Why: The project was stopped" in article["Body"]
    assert timeline(task)[-1] == f'OTRS ticket {task.ticket}: note "Cancelled" added'


def test_a_note_otrs_refuses_with_an_error_in_http_200_fails_visibly_and_can_be_sent_again(
    otrs_server, otrs, crm, people
):
    Connection.objects.filter(pk=otrs.pk).update(
        ticket_status_json=dict(otrs.ticket_status_json, cancelState="no such state")
    )
    [task] = provisioned(crm, people)
    services.task_cancel(task=task, by=people.olga)
    services.notes_send_due()
    note = TicketNote.objects.get(task=task)
    assert note.status == "failed"  # OTRS's InvalidParameter is permanent: no blind retries
    assert "TicketUpdate.InvalidParameter" in note.last_error
    assert fresh(task).flag == 'the ticket was not told: the "Cancelled" note failed'
    assert [t.pk for t in selectors.overview().flagged] == [task.pk]  # though it is finished
    assert timeline(task)[-1].startswith('note "Cancelled" could not be added to the OTRS ticket')
    assert otrs_server.ticket(task.ticket.ticket_id)["State"] == "new"

    # The operator fixes the state and sends it again.
    Connection.objects.filter(pk=otrs.pk).update(
        ticket_status_json=dict(otrs.ticket_status_json, cancelState="closed unsuccessful")
    )
    services.note_retry(note=note, by=people.olga)
    services.notes_send_due()
    note.refresh_from_db()
    assert note.status == "sent"
    assert fresh(task).flag == ""
    assert otrs_server.ticket(task.ticket.ticket_id)["State"] == "closed unsuccessful"


# --- reopen is seen ---------------------------------------------------------------------------


def test_a_ticket_reopened_after_completion_reopens_its_task_and_flags_the_inventory(
    otrs_server, otrs, crm, people
):
    [task] = provisioned(crm, people)
    ticket_id = task.ticket.ticket_id
    poll(otrs)  # the first cycle sweeps and sets the watermark; later ones ask for changes
    otrs_server.set_state(ticket_id, "closed successful")
    poll(otrs)
    task = fresh(task)
    assert (task.status, task.request.status) == ("completed", "completed")
    account = Account.objects.get(identity__username="user0", endpoint=crm, active=True)
    assert account.unconfirmed_by is None

    otrs_server.set_state(ticket_id, "open")
    result = poll(otrs)
    assert result.changed == 1, result
    task = fresh(task)
    assert (task.status, task.request.status) == ("ticket_open", "in_progress")
    assert task.flag == ProvisioningTask.REOPENED_FLAG
    assert task.completed_at is None
    account.refresh_from_db()
    assert account.unconfirmed_by_id == task.pk and account.active  # flagged, not undone
    assert [t.pk for t in selectors.overview().flagged] == [task.pk]
    assert timeline(task)[-1] == (
        f"OTRS ticket {task.ticket} was reopened (state 'open') after the task was completed; "
        "the access it recorded is marked unconfirmed until the ticket closes again"
    )
    request_events = TaskEvent.objects.filter(request=task.request, task=None).order_by("id")
    assert request_events.last().to_status == "in_progress"

    otrs_server.set_state(ticket_id, "closed successful")
    poll(otrs)
    task = fresh(task)
    assert (task.status, task.request.status, task.flag) == ("completed", "completed", "")
    account.refresh_from_db()
    assert account.unconfirmed_by is None
    assert selectors.overview().flagged == []


def test_a_reopened_grant_flags_its_entitlement_and_a_pending_state_is_no_reopen(
    otrs_server, otrs, crm, people
):
    grace = Identity.objects.create(username="grace", first_name="Grace", email="g@example.com")
    Account.objects.create(identity=grace, endpoint=crm, name="grace")
    r = services.request_submit(
        beneficiary=grace,
        endpoint=crm,
        operation="add_access",
        entitlements=["crm-read", "crm-write"],
        requester=people.alice,
    )
    services.request_approve(access_request=r, by=people.bob)
    services.provision_due(owner="test")
    read, write = r.tasks.order_by("id")
    poll(otrs)
    for task in (read, write):
        otrs_server.set_state(fresh(task).ticket.ticket_id, "closed successful")
    poll(otrs)
    assert AccessRequest.objects.get(pk=r.pk).status == "completed"
    # An agent sets a pending state on one closed ticket: pending keeps its handling.
    otrs_server.set_state(fresh(write).ticket.ticket_id, "pending reminder")
    poll(otrs)
    assert fresh(write).status == "completed"
    # A reopened one: only its own entitlement is unconfirmed.
    otrs_server.set_state(fresh(read).ticket.ticket_id, "open")
    poll(otrs)
    assert fresh(read).status == "ticket_open"
    flagged = AccountEntitlement.objects.filter(unconfirmed_by__isnull=False)
    assert list(flagged.values_list("entitlement", flat=True)) == ["crm-read"]


# --- the agent's reason -----------------------------------------------------------------------


def test_the_agents_closing_article_is_the_tasks_reason_on_the_timeline_and_in_the_api(
    otrs_server, otrs, crm, people, client, q_sync, mailoutbox, django_capture_on_commit_callbacks
):
    iga, token = api.api_client_create(name=otrs_server.unique("iga"), trusted=True)
    answer = client.post(
        "/api/v1/requests",
        data={
            "beneficiary": {"username": "lin", "email": "lin@example.com"},
            "endpoint": "crm",
            "operation": "create_account",
            "upstream_approver": "manager: grace",
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 201, answer.content
    request_id = answer.json()["id"]
    services.provision_due(owner="test")
    task = ProvisioningTask.objects.get(request_id=request_id)
    ticket_id = task.ticket.ticket_id
    # The bridge's own note is newer than the agent's article at the end: it is skipped.
    agent_writes(
        otrs_server,
        ticket_id,
        "closed unsuccessful: no licence left",
        "We have no CRM licence left.\nAsk procurement; <b>reopen</b> when one is bought.",
    )
    services.note_ticket(
        task=task, kind="identity_changed", actor=services.Actor.job("test"), why="new email"
    )
    services.notes_send_due()
    otrs_server.set_state(ticket_id, "closed unsuccessful")
    with django_capture_on_commit_callbacks(execute=True):
        poll(otrs)
    task = fresh(task)
    assert task.status == "discontinued"
    [email] = mailoutbox
    assert f"{ProvisioningTask.OUTCOME_LABEL}: closed unsuccessful: no licence left: We" in (
        email.body
    )
    assert ProvisioningTask.OUTCOME_LABEL == "The agent wrote"
    assert task.outcome_subject == "closed unsuccessful: no licence left"
    assert task.outcome_reason == (
        "We have no CRM licence left. Ask procurement; <b>reopen</b> when one is bought."
    )
    assert timeline(task)[-1] == (
        "OTRS state 'closed unsuccessful' → discontinued; the agent wrote "
        '"closed unsuccessful: no licence left": We have no CRM licence left. Ask '
        "procurement; <b>reopen</b> when one is bought."
    )
    document = client.get(
        f"/api/v1/requests/{request_id}", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()
    assert document["tasks"][0]["reason"] == {
        "subject": "closed unsuccessful: no licence left",
        "excerpt": task.outcome_reason,
    }
    # The console escapes what the agent wrote, under the same words.
    client.force_login(people.olga)
    page = client.get(task.request.get_absolute_url()).content.decode()
    assert "no licence left" in page and "<b>reopen</b>" not in page
    assert "<strong>The agent wrote:</strong>" in page


def test_a_close_with_no_agent_article_leaves_the_reason_empty(
    otrs_server, otrs, crm, people, client, q_sync, mailoutbox, django_capture_on_commit_callbacks
):
    """The article TicketCreate wrote is the bridge's own text (sent as an agent's): an
    agent who closes the ticket without writing gives no reason."""
    [task] = provisioned(crm, people)
    ticket_id = task.ticket.ticket_id
    poll(otrs)
    otrs_server.set_state(ticket_id, "closed successful")
    with django_capture_on_commit_callbacks(execute=True):
        poll(otrs)
    task = fresh(task)
    assert task.status == "completed"
    assert (task.outcome_subject, task.outcome_reason) == ("", "")
    assert timeline(task)[-1] == "OTRS state 'closed successful' → completed"
    [first] = otrs_server.ticket(ticket_id, AllArticles=1)["Article"]
    assert first["SenderType"] == "agent"  # what made it look like the agent's
    assert task.ticket.create_article_id == int(first["ArticleID"])  # from TicketCreate's answer
    [email] = [m for m in mailoutbox if "completed" in m.subject]
    assert ProvisioningTask.OUTCOME_LABEL not in email.body
    client.force_login(people.olga)
    assert (
        ProvisioningTask.OUTCOME_LABEL
        not in client.get(task.request.get_absolute_url()).content.decode()
    )


def test_a_ticket_adopted_after_a_lost_answer_does_not_take_its_create_text_as_the_reason(
    otrs_server, otrs, crm, people
):
    """A ticket found by its correlation key after TicketCreate's answer was lost has no
    create ArticleID kept; its first article is still known as the bridge's own."""
    [task, other] = provisioned(crm, people, 2)
    # As adopted: TicketSearch found them, so no create ArticleID was kept.
    Ticket.objects.filter(pk__in=[task.ticket.pk, other.ticket.pk]).update(create_article_id=None)
    ticket_id = task.ticket.ticket_id
    poll(otrs)
    otrs_server.set_state(ticket_id, "closed successful")
    poll(otrs)
    task = fresh(task)
    assert task.status == "completed"
    assert (task.outcome_subject, task.outcome_reason) == ("", "")

    # An agent's article written after it is still read as the reason.
    agent_writes(otrs_server, other.ticket.ticket_id, "Done", "Account created by hand")
    otrs_server.set_state(other.ticket.ticket_id, "closed successful")
    poll(otrs)
    other = fresh(other)
    assert (other.outcome_subject, other.outcome_reason) == ("Done", "Account created by hand")


# --- hostile input ----------------------------------------------------------------------------


def test_a_hostile_closing_article_and_a_hostile_reason_stay_plain_bounded_text(
    sim, connection, people, client
):
    crm = factories.endpoint(connection, name="crm")
    [task, other] = provisioned(crm, people, 2)
    # The reason a person types goes into the article as a value: never rendered again.
    services.task_cancel(task=task, by=people.olga, why="${access_token} {{ secret }} \x00")
    services.notes_send_due()
    assert TicketNote.objects.get(task=task).status == "sent"
    sent = ApiCall.objects.get(call_name="ticketUpdate")
    assert "${access_token} {{ secret }}" in sent.request_excerpt

    # The agent's article: markup, a NUL PostgreSQL cannot store, far too long.
    body = "<script>alert(1)</script>\x00" + "x" * 50_000
    sim_agent_patch(
        sim,
        other.ticket.ticket_id,
        {
            "Article": {
                "Subject": "done\nwith a line break",
                "Body": body,
                "ContentType": "text/plain; charset=utf8",
                "CommunicationChannel": "Internal",
                "SenderType": "agent",
            },
            "Ticket": {"State": "closed successful"},
        },
    )
    poll(connection)
    other = fresh(other)
    assert other.status == "completed"
    assert other.outcome_subject == "done with a line break"
    assert len(other.outcome_reason) == 1000 and other.outcome_reason.endswith("…")
    assert "\x00" not in other.outcome_reason
    client.force_login(people.olga)
    page = client.get(other.request.get_absolute_url()).content.decode()
    assert "done with a line break" in page
    assert "<script>alert(1)</script>" not in page


def sim_agent_patch(sim, ticket_id: int, body: dict) -> None:
    """A TicketUpdate as an agent of the simulator, in its own session."""
    session = requests.post(
        sim.base_url + "/Session",
        json={"UserLogin": factories.SIM_USER, "Password": factories.SIM_PASSWORD},
        timeout=10,
    ).json()["SessionID"]
    answer = requests.patch(
        f"{sim.base_url}/Ticket/{ticket_id}", json={"SessionID": session, **body}, timeout=10
    ).json()
    assert "Error" not in answer, answer


def test_a_note_while_otrs_is_down_waits_and_is_tried_again(sim, connection, people):
    crm = factories.endpoint(connection, name="crm")
    [task] = provisioned(crm, people)
    services.task_cancel(task=task, by=people.olga, why="duplicate")
    sim.shutdown()
    assert services.notes_send_due() == "1 note(s) due, 0 sent"
    note = TicketNote.objects.get(task=task)
    assert (note.status, note.attempts) == ("pending", 1)
    assert not note.maybe_added  # refused before sending: the next try need not search
    assert "Connection refused" in note.last_error or "Cannot reach" in note.last_error
    assert timeline(task)[-1].startswith(
        'note "Cancelled" not added yet (try 1 of 8), will try again in 60 s: '
    )
    assert services.notes_send_due() == "no notes due"  # not before its time


def test_a_note_whose_answer_was_lost_is_found_in_the_ticket_and_not_added_twice(
    sim, connection, people
):
    crm = factories.endpoint(connection, name="crm")
    [task] = provisioned(crm, people)
    ticket_id = task.ticket.ticket_id
    services.task_cancel(task=task, by=people.olga, why="duplicate")
    sim.configure(drop_after_commit=1.0)
    assert services.notes_send_due() == "1 note(s) due, 0 sent"
    note = TicketNote.objects.get(task=task)
    assert (note.status, note.attempts, note.maybe_added) == ("pending", 1, True)
    # OTRS added the article and set the state; only its answer never arrived.
    server = sim_server(sim)
    assert server.ticket(ticket_id)["State"] == "closed unsuccessful"

    sim.configure(drop_after_commit=0.0)
    TicketNote.objects.filter(pk=note.pk).update(next_attempt_at=timezone.now())
    assert services.notes_send_due() == "1 note(s) due, 1 sent"
    cancelled = [
        article
        for article in newest_articles(server, ticket_id, n=10)
        if article["Subject"].startswith("Cancelled:")
    ]
    assert len(cancelled) == 1
    note.refresh_from_db()
    assert (note.status, note.article_id) == ("sent", int(cancelled[0]["ArticleID"]))
    assert ApiCall.objects.filter(call_name="ticketUpdate").count() == 1  # the lost one
    assert timeline(task)[-1] == (
        f'OTRS ticket {task.ticket}: note "Cancelled" added and set its state to '
        "'closed unsuccessful' (by an earlier try whose answer was lost)"
    )


def test_a_failing_article_read_never_keeps_a_note_from_being_sent(sim, connection, people):
    crm = factories.endpoint(connection, name="crm")
    [task] = provisioned(crm, people)
    services.task_cancel(task=task, by=people.olga, why="duplicate")
    sim.configure(drop_after_commit=1.0)
    services.notes_send_due()
    sim.configure(drop_after_commit=0.0)
    # The read of the ticket's articles now answers 404: it cannot say whether the lost try
    # added the article, so the note is sent again rather than failed.
    document = connection.ticket_status_json
    document["closingArticleCall"]["url"] = document["closingArticleCall"]["url"].replace(
        "/Ticket/", "/NoSuchRoute/"
    )
    Connection.objects.filter(pk=connection.pk).update(ticket_status_json=document)
    note = TicketNote.objects.get(task=task)
    TicketNote.objects.filter(pk=note.pk).update(next_attempt_at=timezone.now())
    assert services.notes_send_due() == "1 note(s) due, 1 sent"
    assert ApiCall.objects.filter(call_name="closingArticle", outcome="ok").count() == 0
    assert timeline(task)[-1] == (
        f'OTRS ticket {task.ticket}: note "Cancelled" added and set its state to '
        "'closed unsuccessful'"
    )


# --- the documents ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"notes": {"bye": {"subject": "s", "body": "b"}}},
            "TicketStatusJSON: notes.bye: unknown kind of note; the kinds are cancelled, "
            "sibling_failed, beneficiary_left, identity_changed",
        ),
        (
            {"notes": {"cancelled": {"subject": "s", "body": "${access_token}"}}},
            "TicketStatusJSON: notes.cancelled.body: ${access_token}: unknown variable here",
        ),
        (
            {"notes": {"cancelled": {"subject": "s"}}},
            "TicketStatusJSON: notes.cancelled: body is required",
        ),
        ({"cancelState": 3}, "TicketStatusJSON: cancelState: must be a string, not a number"),
        (
            {"updateTicketCall": None, "cancelState": "closed unsuccessful"},
            "TicketStatusJSON: cancelState: needs an updateTicketCall to send it",
        ),
        (
            {"closingArticleCall": {"name": "x", "connection": "otrsSession", "url": "http://h/"}},
            "TicketStatusJSON: closingArticleCall: must use ${ticketID}",
        ),
    ],
)
def test_a_wrong_conversation_document_is_refused_naming_the_place(otrs_offline, change, message):
    from connections.spec import SpecError, validate_documents

    status = {**otrs_offline.ticket_status_json, **change}
    status = {key: value for key, value in status.items() if value is not None}
    with pytest.raises(SpecError) as refused:
        validate_documents(
            connection_json=otrs_offline.connection_json,
            create_ticket_json=otrs_offline.create_ticket_json,
            ticket_status_json=status,
        )
    assert any(line.startswith(message) for line in refused.value.errors), refused.value.errors


@pytest.fixture
def otrs_offline(db) -> Connection:
    from types import SimpleNamespace

    return factories.otrs_connection(SimpleNamespace(base_url="http://127.0.0.1:9/otrs"))


@pytest.mark.parametrize(
    "state, state_type, outcome, reopened",
    [
        ("in progress (renamed)", "open", None, True),  # a state an admin added: its type counts
        ("new", "new", "open", True),
        ("pending auto close+", "pending auto", "pending", False),
        ("pending reminder", "pending reminder", "pending", False),
        ("merged", "merged", "open", False),
        ("removed", "removed", "discontinued", False),
    ],
)
def test_only_a_state_of_type_new_or_open_reopens_a_finished_task(
    sim, connection, people, state, state_type, outcome, reopened
):
    from connections.errors import TicketStatus

    crm = factories.endpoint(connection, name="crm")
    [task] = provisioned(crm, people)
    ticket = task.ticket
    closed = TicketStatus(
        ticket.ticket_id, "1", "closed successful", "closed", None, "completed", None
    )
    services.ticket_apply_status(ticket=ticket, status=closed, actor=services.Actor.job("test"))
    assert fresh(task).status == "completed"
    ticket.refresh_from_db()
    later = TicketStatus(ticket.ticket_id, "1", state, state_type, None, outcome, None)
    services.ticket_apply_status(ticket=ticket, status=later, actor=services.Actor.job("test"))
    assert fresh(task).status == ("ticket_open" if reopened else "completed")
    assert fresh(task).request.status == ("in_progress" if reopened else "completed")


# --- in the browser ---------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_operator_cancels_in_the_browser_and_sends_a_refused_note_again(
    browser,
    live_server,
    sim,
    inline_jobs,  # noqa: F811
):
    """The operator cancels a task, saying why; OTRS refuses the note (a state it does not
    know); the operator sees why on the request's page, the admin fixes the state, and "Send note
    again" gets the note and the state onto the ticket."""
    from playwright.sync_api import expect

    connection = factories.otrs_connection(sim)
    Connection.objects.filter(pk=connection.pk).update(
        ticket_status_json=dict(connection.ticket_status_json, cancelState="no such state")
    )
    crm = factories.endpoint(connection, name="crm")
    factories.user("olga", "operators")
    r = services.request_submit(
        beneficiary={"username": "grace"},
        endpoint=crm,
        operation="create_account",
        requester=factories.user("alice", "requesters"),
    )
    services.request_approve(access_request=r, by=factories.user("carol", "approvers"))
    services.provision_due(owner="test")
    task = ProvisioningTask.objects.get(request=r)
    assert task.status == "ticket_open", task.last_error

    base = live_server.url
    olga = test_browser.log_in(browser, base, "olga")
    olga.goto(base + r.get_absolute_url())
    olga.locator(f"#task-{task.pk}").get_by_text("Cancel task", exact=True).click()
    olga.locator(f"#task-{task.pk}").get_by_role("textbox").fill("Wrong application, see REQ-9")
    olga.get_by_role("button", name="Yes, cancel task").click()
    card = olga.locator(f"#task-{task.pk}")
    expect(card).to_contain_text("the ticket was not told", timeout=20_000)
    expect(card).to_contain_text("Ticket->StateID or Ticket->State parameter is invalid")

    Connection.objects.filter(pk=connection.pk).update(
        ticket_status_json=dict(connection.ticket_status_json, cancelState="closed unsuccessful")
    )
    card.get_by_text("Send note again", exact=True).click()
    olga.get_by_role("button", name="Yes, send it again").click()
    expect(olga.locator(".message-success")).to_contain_text("queued again")
    expect(olga.locator(".timeline")).to_contain_text(
        "note \"Cancelled\" added and set its state to 'closed unsuccessful'", timeout=20_000
    )
    expect(olga.locator(f"#task-{task.pk}")).not_to_contain_text("the ticket was not told")
    assert TicketNote.objects.get(task=task).status == "sent"
    # The reason typed in the dialog is in the ticket's article.
    [article] = newest_articles(sim_server(sim), task.ticket.ticket_id)
    assert "Why: Wrong application, see REQ-9" in article["Body"]
