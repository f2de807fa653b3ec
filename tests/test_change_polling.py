"""A poll cycle that costs what changed: the change search, the watermark, the full sweep.

The cases that depend on how OTRS reads its change-time filters run on the simulator and
on the real Znuny (tests.znuny.server).
"""

from __future__ import annotations

import copy
import math
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone

from connections.client import TicketClient
from connections.documents import ChangeSearchSpec
from connections.errors import OTRSError
from connections.models import ApiCall, PollWatermark
from connections.spec import SpecError, validate_documents
from tests import factories
from tests.bridge_servers import server  # noqa: F401  (fixture)
from tests.engine_fixtures import documents
from tests.simfixtures import (
    create_ticket,
    login,
)
from tests.test_polling import calls, open_tasks, poll, set_state
from tests.test_provisioning import approved_task
from tickets import services
from tickets.models import ProvisioningTask, Ticket

pytestmark = pytest.mark.django_db

BASE = "https://otrs.example.com/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
OTRS_TIME = "%Y-%m-%d %H:%M:%S"


def _change_search(connection, **changes) -> None:
    """Edit the connection's changeSearchCall (None as a value removes the key)."""
    document = copy.deepcopy(connection.ticket_status_json)
    call = document["changeSearchCall"]
    for key, value in changes.items():
        if value is None:
            call.pop(key, None)
        else:
            call[key] = value
    type(connection).objects.filter(pk=connection.pk).update(ticket_status_json=document)
    connection.refresh_from_db()


def _by_date(connection) -> None:
    """Changes after the exact watermark, to the second: a test then sees only its changes
    (the shipped package asks by minutes, with two minutes of overlap)."""
    url = connection.ticket_status_json["changeSearchCall"]["url"].replace(
        "TicketLastChangeTimeNewerMinutes=${changedMinutes}",
        "TicketLastChangeTimeNewerDate=${changedSince}",
    )
    _change_search(connection, url=url, overlapSeconds=0)


def _delta(before: dict, after: dict) -> dict:
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def _mark(connection) -> PollWatermark:
    return PollWatermark.objects.get(connection=connection)


@pytest.fixture
def tickets(sim, connection, crm, people):
    """Three open tickets, then a first cycle (a full sweep) a second later."""
    type(connection).objects.filter(pk=connection.pk).update(batch_size=2)
    _by_date(connection)
    tasks = open_tasks(crm, people, 3)
    time.sleep(1.1)  # OTRS's change times count seconds: the watermark comes after these
    first = poll(connection)
    assert first.how == "all open tickets read, as this is the first cycle"
    assert first.tickets == 3
    return tasks


def test_a_quiet_cycle_makes_one_call_and_a_change_costs_one_batch(sim, connection, tickets):
    before = calls(sim)
    quiet = poll(connection)
    assert _delta(before, calls(sim)) == {"TicketSearch": 1}
    assert quiet.tickets == 0 and quiet.how.startswith("0 changed in OTRS since ")

    done = tickets[1]
    set_state(sim, done.ticket.ticket_id, "closed successful")
    before = calls(sim)
    busy = poll(connection)
    # One batch of ours, and the closing ticket's newest articles (the agent's reason).
    assert _delta(before, calls(sim)) == {"TicketSearch": 1, "TicketGet": 2}
    assert (busy.tickets, busy.changed) == (1, 1)
    assert ProvisioningTask.objects.get(pk=done.pk).status == "completed"


def test_the_tickets_of_others_in_the_answer_are_left_alone(sim, connection, tickets):
    create_ticket(sim, login(sim), "a ticket the bridge does not follow")
    before = calls(sim)
    result = poll(connection)
    assert _delta(before, calls(sim)) == {"TicketSearch": 1}
    assert result.how.startswith("1 changed in OTRS") and result.tickets == 0


@pytest.mark.parametrize("failure", ["the status call", "storing the state"])
def test_the_watermark_moves_only_after_the_changes_are_applied(
    sim, connection, tickets, monkeypatch, failure
):
    mark = _mark(connection)
    done = tickets[0]
    set_state(sim, done.ticket.ticket_id, "closed successful")
    if failure == "the status call":

        def refuse(*args, **kwargs):
            raise OTRSError("OTRS answered HTTP 503: busy")

        monkeypatch.setattr(TicketClient, "ticket_statuses", refuse)
    else:

        def break_db(**kwargs):
            raise DatabaseError("disk full")

        monkeypatch.setattr("tickets.services.polling.ticket_apply_status", break_db)

    failed = poll(connection)

    assert failed.errors and _mark(connection).changed_since == mark.changed_since
    assert ProvisioningTask.objects.get(pk=done.pk).status == "ticket_open"
    monkeypatch.undo()
    healed = poll(connection)
    assert not healed.errors and healed.how.startswith("1 changed")
    assert ProvisioningTask.objects.get(pk=done.pk).status == "completed"
    assert _mark(connection).changed_since > mark.changed_since


def test_every_open_ticket_is_swept_again_on_its_cadence(sim, connection, tickets):
    type(connection).objects.filter(pk=connection.pk).update(full_sweep_minutes=30)
    PollWatermark.objects.filter(connection=connection).update(
        full_sweep_at=timezone.now() - timedelta(minutes=31)
    )
    before = calls(sim)
    result = poll(connection)
    assert result.how == "all open tickets read, as every 30 min" and result.tickets == 3
    assert _delta(before, calls(sim)) == {"TicketGet": math.ceil(3 / 2)}
    mark = _mark(connection)
    assert mark.full_sweep_at == mark.changed_since > timezone.now() - timedelta(minutes=1)
    assert poll(connection).how.startswith("0 changed")


def test_a_clock_that_went_back_means_a_sweep(sim, connection, tickets):
    PollWatermark.objects.filter(connection=connection).update(
        changed_since=timezone.now() + timedelta(hours=1)
    )
    result = poll(connection)
    assert result.how == "all open tickets read, as the clock went back since the last cycle"
    assert result.tickets == 3 and _mark(connection).changed_since <= timezone.now()


def test_a_failed_change_search_means_a_sweep_in_the_same_cycle(sim, connection, tickets):
    url = connection.ticket_status_json["changeSearchCall"]["url"]
    _change_search(connection, url=url.replace("/Ticket?", "/TicketChanges?"))
    done = tickets[2]
    set_state(sim, done.ticket.ticket_id, "closed successful")

    result = poll(connection)

    assert (
        result.how == "all open tickets read, as the change search failed" and result.tickets == 3
    )
    [error] = result.errors
    assert "OTRS has no operation for this URL" in error
    assert ProvisioningTask.objects.get(pk=done.pk).status == "completed"


def test_a_change_search_answer_at_its_limit_is_not_trusted(sim, connection, tickets):
    _change_search(connection, limit=2)
    for task in tickets[:2]:
        set_state(sim, task.ticket.ticket_id, "pending reminder")

    result = poll(connection)

    assert result.how.startswith(
        "all open tickets read, as the change search answered as many ids as its"
    )
    assert result.tickets == 3 and result.changed == 2


def test_a_status_document_without_a_change_search_sweeps_every_cycle(sim, connection, crm, people):
    document = copy.deepcopy(connection.ticket_status_json)
    del document["changeSearchCall"]
    type(connection).objects.filter(pk=connection.pk).update(ticket_status_json=document)
    open_tasks(crm, people, 2)
    for _ in range(2):
        before = calls(sim)
        result = poll(connection)
        assert result.how == "" and result.tickets == 2
        assert _delta(before, calls(sim)) == {"TicketGet": 1}
    # No watermark: only when the last good poll ended (for readiness and /metrics).
    mark = PollWatermark.objects.get(connection=connection)
    assert mark.changed_since is None and mark.full_sweep_at is None
    assert mark.polled_ok_at is not None


# --- the variables and the document -------------------------------------------------------


def _spec(**changes) -> ChangeSearchSpec:
    values = {
        "call": None,
        "ticket_list_path": "TicketID",
        "limit": 500,
        "overlap_seconds": 120,
        "time_zone": "UTC",
    }
    return ChangeSearchSpec(**{**values, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "since", "expected"),
    [
        # 10 min since the watermark, plus 2 min of overlap: 12 minutes, from 11:48:00.
        (
            _spec(),
            "2026-12-01 11:50:00",
            {"changedSince": "2026-12-01 11:48:00", "changedMinutes": 12},
        ),
        # Minutes round up: 10 min 1 s back is 11 minutes.
        (
            _spec(overlap_seconds=0),
            "2026-12-01 11:49:59",
            {"changedSince": "2026-12-01 11:49:59", "changedMinutes": 11},
        ),
        # OTRS reads a date in its OTRSTimeZone.
        (
            _spec(time_zone="Europe/Berlin", overlap_seconds=0),
            "2026-12-01 11:50:00",
            {"changedSince": "2026-12-01 12:50:00", "changedMinutes": 10},
        ),
        # Never 0 minutes: NewerMinutes=0 reads as no filter at all over GET.
        (_spec(overlap_seconds=0), "2026-12-01 12:00:00", {"changedMinutes": 1}),
    ],
)
def test_the_change_search_variables(spec, since, expected):
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    variables = spec.variables(datetime.strptime(since, OTRS_TIME).replace(tzinfo=UTC), now)
    assert {k: variables[k] for k in expected} == expected
    assert variables["limit"] == 500


def _status_errors(**changes) -> list[str]:
    docs = documents(BASE)
    docs["ticket_status_json"]["changeSearchCall"] = {
        "name": "changed",
        "connection": "otrs",
        "url": f"{BASE}/Ticket?TicketLastChangeTimeNewerMinutes=${{changedMinutes}}"
        "&Limit=${limit}&SessionID=${access_token}",
        "httpMethod": "GET",
        "ticketListPath": "TicketID",
        **changes,
    }
    try:
        validate_documents(**docs)
    except SpecError as exc:
        return exc.errors
    return []


def test_the_shipped_change_search_validates():
    assert _status_errors() == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"url": f"{BASE}/Ticket?Limit=10&SessionID=${{access_token}}"},
            "TicketStatusJSON: changeSearchCall: must use ${changedMinutes} or ${changedSince}, "
            "or it answers with every ticket, changed or not",
        ),
        (
            {"url": f"{BASE}/Ticket?TicketLastChangeTimeNewerDate=${{since}}"},
            "TicketStatusJSON: changeSearchCall.url: ${since}: unknown variable here; allowed are "
            "${access_token}, ${changedMinutes}, ${changedSince}, ${limit}, "
            "${connection.password}, ${connection.userName}",
        ),
        (
            {"timeZone": "Mars/Olympus"},
            "TicketStatusJSON: changeSearchCall.timeZone: 'Mars/Olympus' is not a time zone name "
            "(e.g. UTC or Europe/Berlin): OTRS's OTRSTimeZone, in which it reads ${changedSince}",
        ),
        (
            {"ticketListPath": None},
            "TicketStatusJSON: changeSearchCall: ticketListPath is required",
        ),
        (
            {
                "url": "http://169.254.169.254/otrs/Ticket?TicketLastChangeTimeNewerMinutes=${changedMinutes}"
            },
            "TicketStatusJSON: changeSearchCall.url: 169.254.169.254 is in the refused network",
        ),
        (
            {"limit": 0},
            "TicketStatusJSON: changeSearchCall.limit: must be between 1 and 100000, not 0",
        ),
        (
            {"overlapSeconds": 7200},
            "TicketStatusJSON: changeSearchCall.overlapSeconds: must be between 0 and 3600, not 7200",
        ),
    ],
)
def test_each_defect_of_the_change_search_is_named(changes, expected):
    assert any(error.startswith(expected) for error in _status_errors(**changes))


# --- on both servers ------------------------------------------------------------------------


def test_a_ticket_closed_by_an_agent_between_two_cycles_is_found(server, people):  # noqa: F811
    connection = factories.otrs_connection(
        server, name=f"otrs-{uuid.uuid4().hex[:8]}", user=server.user, password=server.password
    )
    endpoint = factories.endpoint(connection, name=f"crm-{uuid.uuid4().hex[:8]}")
    tasks = [approved_task(endpoint, people, username=f"u{uuid.uuid4().hex[:8]}") for _ in range(2)]
    services.provision_due(owner="t", connection=connection)
    assert poll(connection).how.startswith("all open tickets read")
    done = ProvisioningTask.objects.get(pk=tasks[0].pk)

    server.otrs.set_state(done.ticket.ticket_id, "closed successful")  # an agent closes it
    since = ApiCall.objects.order_by("-id").values_list("id", flat=True).first()
    result = poll(connection)

    assert re.match(r"\d+ changed in OTRS since ", result.how), result.how
    assert ProvisioningTask.objects.get(pk=done.pk).status == "completed"
    made = list(
        ApiCall.objects.filter(connection=connection, id__gt=since)
        .order_by("id")
        .values_list("call_name", flat=True)
    )
    # One search, one batch of ours, and the closed ticket's newest articles (its reason).
    assert made == ["changedTickets", "ticketStatus", "closingArticle"]
    assert Ticket.objects.get(pk=done.ticket_id).is_open is False


def test_the_change_time_filters_read_as_znuny_reads_them(server):  # noqa: F811
    left, changed = (
        server.create_ticket(f"change filters {uuid.uuid4().hex[:8]}") for _ in range(2)
    )
    time.sleep(2.1)
    server.otrs.set_state(changed, "open")
    at = server.ticket(changed)["Changed"]
    earlier = (datetime.strptime(at, OTRS_TIME) - timedelta(seconds=1)).strftime(OTRS_TIME)
    later = (datetime.strptime(at, OTRS_TIME) + timedelta(seconds=1)).strftime(OTRS_TIME)
    hour_ahead = (datetime.strptime(at, OTRS_TIME) + timedelta(hours=1)).strftime(OTRS_TIME)
    ours = {"TicketID": [left, changed]}

    def found(**filters) -> list[int]:
        answer = server.otrs.get("/Ticket", **ours, **filters)
        return sorted(int(i) for i in answer.get("TicketID", []))

    for prefix in ("TicketLastChangeTime", "TicketChangeTime"):
        # Inclusive, to the second: the change itself counts, a second later nothing.
        # TicketChangeTime reads the ticket's history, whose lines an update that straddles
        # a second writes in the second before the ticket's own change time (seen on Znuny).
        since = at if prefix == "TicketLastChangeTime" else earlier
        assert found(**{f"{prefix}NewerDate": since}) == [changed], prefix
        assert found(**{f"{prefix}NewerDate": later}) == [], prefix
        # A date in the future (a local time ahead of UTC, say) finds nothing at all.
        assert found(**{f"{prefix}NewerDate": hour_ahead}) == [], prefix
        # Only OTRS's own format: ISO 8601 is refused, and the search answers nothing.
        assert found(**{f"{prefix}NewerDate": at.replace(" ", "T") + "Z"}) == [], prefix
        # Minutes count back from the server's clock; a non-number counts as 0 (now).
        assert changed in found(**{f"{prefix}NewerMinutes": 1}), prefix
        assert found(**{f"{prefix}OlderMinutes": "abc"}) == sorted([left, changed]), prefix


def test_the_full_sweep_cadence_comes_with_the_package_and_goes_with_an_export(sim):
    from connections.packages import export_package

    connection = factories.otrs_connection(sim)
    assert connection.full_sweep_minutes == 60
    type(connection).objects.filter(pk=connection.pk).update(full_sweep_minutes=15)

    [exported] = export_package([connection.name])["connections"]

    assert exported["full_sweep_minutes"] == 15
    assert "changeSearchCall" in exported["ticketStatusJSON"]
