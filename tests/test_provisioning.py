"""The provisioning job against the simulator over real HTTP: create, retry, fail, reconcile."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import requests
from django.db import connection as db_connection
from django.utils import timezone

from tests import factories
from tests.simfixtures import create_ticket, login
from tickets import services
from tickets.models import AccessRequest, JobRun, ProvisioningTask, TaskEvent, Ticket

pytestmark = pytest.mark.django_db


def approved_task(endpoint, people, username="ada", **kw) -> ProvisioningTask:
    r = services.request_submit(
        beneficiary={"username": username, "first_name": "Ada", "email": f"{username}@example.com"},
        endpoint=endpoint,
        operation="create_account",
        requester=people.alice,
        **kw,
    )
    services.request_approve(access_request=r, by=people.bob)
    return r.tasks.get()


def sim_tickets(sim) -> list[dict]:
    return requests.get(sim.url + "/_sim/tickets", timeout=5).json()["tickets"]


@contextmanager
def cancelled_after(seconds: float, task: ProvisioningTask, by):
    """Cancel `task` from another thread (its own database connection) after `seconds`,
    while the body runs; the body's end waits for the cancel."""

    def cancel() -> None:
        try:
            services.task_cancel(task=ProvisioningTask.objects.get(pk=task.pk), by=by)
        finally:
            db_connection.close()

    timer = threading.Timer(seconds, cancel)
    timer.start()
    try:
        yield
    finally:
        timer.join()


def test_it_creates_one_ticket_with_the_correlation_key_in_the_title(sim, crm, people):
    task = approved_task(crm, people)
    result = services.provision_due(owner="t")
    assert result.claimed == 1
    task.refresh_from_db()
    assert task.status == "ticket_open" and not task.outcome_unknown
    [ticket] = sim_tickets(sim)
    assert task.correlation_key in ticket["Title"]
    assert task.ticket.ticket_id == int(ticket["TicketID"])
    assert task.ticket.ticket_number == ticket["TicketNumber"]
    assert task.ticket.agent_url.endswith(
        f"/otrs/index.pl?Action=AgentTicketZoom;TicketID={ticket['TicketID']}"
    )
    assert AccessRequest.objects.get(pk=task.request_id).status == "in_progress"
    statuses = list(TaskEvent.objects.filter(task=task).values_list("to_status", flat=True))
    assert statuses == ["new", "claimed", "ticket_open"]


def test_transient_failure_waits_with_backoff_then_succeeds(sim, crm, people, settings):
    settings.PROVISION_BACKOFF_SECONDS = 30
    task = approved_task(crm, people)
    sim.configure(fail_rate=1.0)
    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "retry_wait" and task.attempts == 1
    assert 20 <= (task.next_attempt_at - timezone.now()).total_seconds() <= 40
    assert task.last_error
    # Not due yet: a second run does nothing.
    sim.configure(fail_rate=0.0)
    assert services.provision_due(owner="t").claimed == 0
    ProvisioningTask.objects.filter(pk=task.pk).update(next_attempt_at=timezone.now())
    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "ticket_open" and task.attempts == 2
    assert len(sim_tickets(sim)) == 1


def test_tries_exhausted_fails_the_task_and_the_request(sim, connection, people):
    endpoint = factories.endpoint(connection, name="erp", tries=2)
    task = approved_task(endpoint, people)
    sim.configure(fail_rate=1.0)
    services.provision_due(owner="t")
    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "failed" and task.attempts == 2
    assert (
        "tries exhausted (2 of 2)"
        in TaskEvent.objects.filter(task=task, to_status="failed").get().reason
    )
    assert AccessRequest.objects.get(pk=task.request_id).status == "failed"


def test_otrs_validation_error_fails_at_once(sim, connection, people):
    endpoint = factories.endpoint(connection, name="bad", queue="NoSuchQueue")
    # The package puts the connection's default queue in the body; break it at the source.
    create = connection.create_ticket_json
    create["call"][0]["httpParams"]["Ticket"]["Queue"] = "NoSuchQueue"
    type(connection).objects.filter(pk=connection.pk).update(create_ticket_json=create)
    task = approved_task(endpoint, people)
    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "failed" and task.attempts == 1
    assert "TicketCreate.InvalidParameter" in task.last_error
    assert sim_tickets(sim) == []


def test_dropped_response_is_reconciled_not_duplicated(sim, crm, people):
    task = approved_task(crm, people)
    sim.configure(drop_after_commit=1.0)
    services.provision_due(owner="t", limit=1)
    task.refresh_from_db()
    assert task.status == "retry_wait" and task.outcome_unknown
    assert len(sim_tickets(sim)) == 1  # OTRS has it; we do not know yet
    sim.configure(drop_after_commit=0.0)
    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "ticket_open"
    [ticket] = sim_tickets(sim)
    assert task.ticket.ticket_id == int(ticket["TicketID"])
    assert "adopted" in TaskEvent.objects.filter(task=task, to_status="ticket_open").get().reason
    stats = requests.get(sim.url + "/_sim/stats", timeout=5).json()
    assert stats["calls"]["TicketCreate"] == 1 and stats["calls"]["TicketSearch"] == 1


def test_expired_lease_is_reclaimed_with_a_search_first(sim, crm, people):
    task = approved_task(crm, people)
    # A worker claimed the task, sent TicketCreate and died before storing the answer.
    claimed = services.task_claim_next(owner="dead-worker")
    context = services.task_context(claimed.pk)
    sid = login(sim)
    create_ticket(sim, sid, f"[{context['correlationKey']}] created by the dead worker")
    ProvisioningTask.objects.filter(pk=task.pk).update(
        lease_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    services.provision_due(owner="rescuer")
    task.refresh_from_db()
    assert task.status == "ticket_open" and task.attempts == 2
    assert len(sim_tickets(sim)) == 1
    assert (
        "lease ran out" in TaskEvent.objects.filter(task=task, actor_label="rescuer").first().reason
    )


def test_a_claimed_task_is_not_claimed_twice(sim, crm, people):
    approved_task(crm, people)
    first = services.task_claim_next(owner="w1")
    assert first is not None
    assert services.task_claim_next(owner="w2") is None


def test_instant_provisioning_creates_the_ticket_at_approval(
    sim, connection, people, q_sync, django_capture_on_commit_callbacks
):
    endpoint = factories.endpoint(connection, name="fast", instant=True)
    with django_capture_on_commit_callbacks(execute=True):
        task = approved_task(endpoint, people)
    task.refresh_from_db()
    assert task.status == "ticket_open"
    assert Ticket.objects.count() == 1


def test_hostile_values_reach_otrs_intact(sim, crm, people):
    hostile = 'Robert"); DROP TABLE--\\ "} ${access_token} \n\u2603 @PASSWORD@'
    task = approved_task(crm, people, username="bobby", justification=hostile)
    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "ticket_open"
    detail = requests.get(f"{sim.url}/_sim/tickets/{task.ticket.ticket_id}", timeout=5).json()
    body = detail["Article"][0]["Body"] if "Article" in detail else detail["Articles"][0]["Body"]
    assert hostile in body
    assert "bridge-demo-password" not in body


def test_a_worker_that_lost_its_lease_writes_nothing(sim, crm, people):
    task = approved_task(crm, people)
    slow = services.task_claim_next(owner="slow-worker")
    # The slow worker's lease runs out and another worker takes the task over.
    ProvisioningTask.objects.filter(pk=task.pk).update(
        lease_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    rescuer = services.task_claim_next(owner="rescuer")
    assert rescuer.pk == task.pk
    # The slow worker now goes on with its stale copy: it must neither create nor move.
    assert services.task_provision(task=slow, owner="slow-worker") == "claimed"
    assert sim_tickets(sim) == []
    assert services.task_provision(task=rescuer, owner="rescuer") == "ticket_open"
    assert len(sim_tickets(sim)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_task_cancelled_during_its_create_call_records_the_orphan_ticket(sim, crm, people):
    task = approved_task(crm, people)
    claimed = services.task_claim_next(owner="w")
    sim.configure(latency_ms=300)
    with cancelled_after(0.1, task, people.olga):
        status = services.task_provision(task=claimed, owner="w")
    assert status == "cancelled"
    [ticket] = sim_tickets(sim)
    note = TaskEvent.objects.filter(task=task, reason__contains="the bridge does not follow").get()
    assert ticket["TicketNumber"] in note.reason


def _approve_many(endpoint, people, count: int) -> list[ProvisioningTask]:
    return [approved_task(endpoint, people, username=f"user{n}") for n in range(count)]


@pytest.mark.django_db(transaction=True)
def test_a_run_with_workers_claims_and_stores_in_batches(sim, crm, people):
    from django.db import connection as db_connection
    from django.test.utils import CaptureQueriesContext

    from connections.models import ApiCall

    tasks = _approve_many(crm, people, 12)
    with CaptureQueriesContext(db_connection) as queries:
        result = services.provision_due(owner="t", workers=4)

    assert result.by_status == {"ticket_open": 12}
    assert len(sim_tickets(sim)) == 12 and Ticket.objects.count() == 12
    for task in tasks:
        task.refresh_from_db()
        assert task.status == "ticket_open" and not task.outcome_unknown
        assert task.lease_until is None and task.ticket.ticket_number
        statuses = list(TaskEvent.objects.filter(task=task).values_list("to_status", flat=True))
        assert statuses == ["new", "claimed", "ticket_open"]
        assert AccessRequest.objects.get(pk=task.request_id).status == "in_progress"
    # Every call is logged, though the rows were written in bulk: 12 creates and 1 login.
    logged = ApiCall.objects.filter(ref__startswith="task:", outcome="ok")
    assert logged.count() == 13 and logged.filter(call_name__startswith="token:").count() == 1
    # One task at a time takes about twenty statements; a batch takes about ten, BEGIN
    # and COMMIT included, whatever its size.
    assert len(queries) <= 4 * 12, len(queries)


@pytest.mark.django_db(transaction=True)
def test_a_task_cancelled_while_its_batch_was_in_flight_keeps_its_orphan_note(sim, crm, people):
    tasks = _approve_many(crm, people, 3)
    sim.configure(latency_ms=400)
    with cancelled_after(0.15, tasks[1], people.olga):
        result = services.provision_due(owner="t", workers=3)

    assert result.by_status == {"ticket_open": 2, "cancelled": 1}
    statuses = [ProvisioningTask.objects.get(pk=t.pk).status for t in tasks]
    assert statuses == ["ticket_open", "cancelled", "ticket_open"]
    assert len(sim_tickets(sim)) == 3 and Ticket.objects.count() == 2
    assert TaskEvent.objects.filter(
        task=tasks[1], reason__contains="the bridge does not follow"
    ).exists()


def test_a_failing_later_create_call_never_leads_to_a_second_ticket(sim, connection, people):
    """CreateTicketJSON may hold more calls after TicketCreate. When one of them fails,
    the ticket exists all the same: the task keeps its mark and the retry adopts it."""
    documents = connection.create_ticket_json
    first = documents["call"][0]
    documents["call"].append(
        {
            "name": "Followup",
            "connection": first["connection"],
            "url": first["url"].rsplit("/", 1)[0] + "/NoSuchRoute",
            "httpMethod": "GET",
            "successResponses": {"statusCode": [200]},
        }
    )
    connection.create_ticket_json = documents
    connection.save()
    endpoint = factories.endpoint(connection, name="crm")
    task = approved_task(endpoint, people)

    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "failed" and task.outcome_unknown, task.last_error
    assert len(sim_tickets(sim)) == 1

    # The operator fixes the package and retries: the ticket is found, not made again.
    documents["call"].pop()
    connection.create_ticket_json = documents
    connection.save()
    services.task_retry(task=task, by=people.olga)
    services.provision_due(owner="t")
    task.refresh_from_db()
    assert task.status == "ticket_open"
    assert len(sim_tickets(sim)) == 1
    assert "adopted" in task.events.filter(to_status="ticket_open").get().reason


@pytest.mark.django_db(transaction=True)
def test_a_task_cancelled_while_it_waited_behind_a_slow_otrs_gets_no_ticket(sim, crm, people):
    """Claimed tasks queue behind the calls in flight. One that waited long is checked
    against the database before its create call, so a cancel meanwhile is honoured."""
    tasks = _approve_many(crm, people, 3)
    sim.configure(latency_ms=1200)
    with cancelled_after(0.5, tasks[2], people.olga):
        result = services.provision_due(owner="t", workers=1)

    assert result.by_status == {"ticket_open": 2, "cancelled": 1}
    assert len(sim_tickets(sim)) == 2
    assert not TaskEvent.objects.filter(reason__contains="the bridge does not follow").exists()


def test_claimed_tasks_left_when_the_time_budget_runs_out_are_handed_back(sim, crm, people):
    """A run claims ahead of its calls. Behind a slow OTRS the budget runs out first: the
    tasks not yet sent go back, unsent and with their try not counted, for the next run."""
    import time

    tasks = _approve_many(crm, people, 6)
    sim.configure(latency_ms=300)
    started = time.monotonic()
    result = services.provision_due(owner="t", budget_seconds=0.5)
    elapsed = time.monotonic() - started

    opened = result.by_status.get("ticket_open", 0)
    assert 1 <= opened < 6 and result.by_status.get("retry_wait") == 6 - opened
    assert elapsed < 0.5 + 3 * 0.3, elapsed
    assert len(sim_tickets(sim)) == opened
    handed_back = ProvisioningTask.objects.filter(pk__in=[t.pk for t in tasks], status="retry_wait")
    for task in handed_back:
        assert task.attempts == 0 and task.next_attempt_at <= timezone.now()
        assert task.events.filter(reason__contains="time budget ran out").exists()
    # The next run takes them.
    sim.configure(latency_ms=0)
    services.provision_due(owner="t")
    assert len(sim_tickets(sim)) == 6


def test_tickets_go_to_the_endpoints_queue_or_the_packages_default(sim, connection, people):
    from connections.models import Endpoint

    erp = factories.endpoint(connection, name="erp", queue="Misc")
    crm = factories.endpoint(connection, name="crm")
    Endpoint.objects.filter(pk=crm.pk).update(attributes={})  # no queue attribute
    on_erp = approved_task(erp, people, username="ada")
    on_crm = approved_task(crm, people, username="bea")
    services.provision_due(owner="t")

    queues = {}
    for task in (on_erp, on_crm):
        task.refresh_from_db()
        detail = requests.get(f"{sim.url}/_sim/tickets/{task.ticket.ticket_id}", timeout=5).json()
        queues[task.pk] = detail["Queue"]
    # The package was imported with QUEUE left at its default, Raw.
    assert queues == {on_erp.pk: "Misc", on_crm.pk: "Raw"}


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_dies_neither_stops_the_run_nor_loses_its_task(
    sim, crm, people, monkeypatch, settings
):
    """A bug outside the attempt's own error handling kills the worker's call: the run
    goes on, and the task records the failure and searches before its next create."""
    from tickets.services import provisioning

    settings.PROVISION_BACKOFF_SECONDS = 30
    tasks = _approve_many(crm, people, 3)
    send = provisioning._send_attempt

    def dies_for_the_second(task, *args, **kwargs):
        if task.pk == tasks[1].pk:
            raise RuntimeError("a bug")
        return send(task, *args, **kwargs)

    monkeypatch.setattr(provisioning, "_send_attempt", dies_for_the_second)
    outcome = {}

    def run() -> None:
        try:
            outcome["result"] = services.provision_due(owner="t", workers=2)
        finally:
            db_connection.close()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "the run waited for a worker that had died"
    assert outcome["result"].by_status == {"ticket_open": 2, "retry_wait": 1}
    died = ProvisioningTask.objects.get(pk=tasks[1].pk)
    assert died.status == "retry_wait" and died.outcome_unknown
    assert died.last_error == "internal error (RuntimeError); see the worker log"


@pytest.mark.django_db(transaction=True)
def test_every_worker_thread_closes_its_database_connections(sim, crm, people, monkeypatch):
    from tickets.services import provisioning

    _approve_many(crm, people, 2)
    closed_in = []
    close_all = provisioning.db_connections.close_all

    def recording_close_all() -> None:
        closed_in.append(threading.current_thread().name)
        close_all()

    monkeypatch.setattr(provisioning.db_connections, "close_all", recording_close_all)
    services.provision_due(owner="t", workers=3)
    assert len(closed_in) == len(set(closed_in)) == 3
    assert all(name.startswith("provision") for name in closed_in)


# --- how many threads a run may use ----------------------------------------------------------


@pytest.mark.parametrize("workers", ["100000", "65", "0", "-3"])
def test_the_command_refuses_a_thread_count_out_of_bounds_with_a_message(workers):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as caught:
        call_command("provision", "--workers", workers)

    assert str(caught.value) == (
        f"--workers: a provisioning run uses 1 to 64 threads (PROVISION_THREADS_MAX), not {workers}"
    )
    assert not JobRun.objects.exists()


def test_the_maximum_applies_to_the_setting_and_every_caller(settings):
    from tickets import jobs

    assert jobs.provision_threads(None) == settings.PROVISION_THREADS
    assert jobs.provision_threads(64) == 64
    settings.PROVISION_THREADS = 500  # bypassing the start-up check
    with pytest.raises(ValueError, match="uses 1 to 64 threads"):
        jobs.provision_job(trigger="test")
    assert not JobRun.objects.exists()


def test_the_command_runs_at_the_maximum(capsys):
    from django.core.management import call_command

    call_command("provision", "--workers", "64")

    assert JobRun.objects.get().status == JobRun.Status.OK
