"""Status polling against the simulator: batches, flags, missing tickets, schedules.

How an agent's states and merges reach the tasks is in test_znuny_contract.py, which runs
against the simulator and the real Znuny."""

from __future__ import annotations

import math

import pytest
import requests
from django.utils import timezone

from tests import factories
from tests.test_provisioning import approved_task
from tickets import jobs, services
from tickets.models import Account, ProvisioningTask, TaskEvent, Ticket

pytestmark = pytest.mark.django_db


def set_state(sim, ticket_id: int, state: str) -> None:
    response = requests.post(
        f"{sim.url}/_sim/tickets/{ticket_id}/state", json={"state": state}, timeout=5
    )
    assert response.status_code == 200, response.text


def calls(sim) -> dict:
    return requests.get(sim.url + "/_sim/stats", timeout=5).json()["calls"]


def open_tasks(endpoint, people, n: int) -> list[ProvisioningTask]:
    tasks = [approved_task(endpoint, people, username=f"user{i}") for i in range(n)]
    services.provision_due(owner="t")
    for task in tasks:
        task.refresh_from_db()
        assert task.status == "ticket_open"
    return tasks


def poll(connection) -> services.PollResult:
    connection.refresh_from_db()
    return services.tickets_poll(connection=connection)


def test_one_status_call_per_batch(sim, connection, crm, people):
    type(connection).objects.filter(pk=connection.pk).update(batch_size=3)
    open_tasks(crm, people, 7)
    before = calls(sim)
    result = poll(connection)
    after = calls(sim)
    assert result.tickets == 7
    gets = (after["TicketGet"] - before["TicketGet"]) + (
        after["TicketGetList"] - before["TicketGetList"]
    )
    assert gets == math.ceil(7 / 3)
    assert after["SessionCreate"] == before["SessionCreate"]  # the session is reused
    assert Ticket.objects.filter(last_polled_at__isnull=True).count() == 0


def test_unmapped_state_keeps_the_task_open_and_flags_it(sim, connection, crm, people):
    status_doc = connection.ticket_status_json
    del status_doc["call"][0]["statusMap"]["pending reminder"]
    type(connection).objects.filter(pk=connection.pk).update(ticket_status_json=status_doc)
    [task] = open_tasks(crm, people, 1)
    set_state(sim, task.ticket.ticket_id, "pending reminder")
    poll(connection)
    task.refresh_from_db()
    assert task.status == "ticket_open"
    assert task.flag == "unmapped state: pending reminder"
    assert TaskEvent.objects.filter(task=task, reason__contains="does not list").count() == 1
    # A second poll does not repeat the event.
    Ticket.objects.filter(pk=task.ticket_id).update(state="")
    poll(connection)
    assert TaskEvent.objects.filter(task=task, reason__contains="does not list").count() == 1


def test_old_open_ticket_is_flagged_stale_and_still_polled(sim, connection, crm, people):
    [task] = open_tasks(crm, people, 1)
    Ticket.objects.filter(pk=task.ticket_id).update(
        created_at=timezone.now() - timezone.timedelta(days=30)
    )
    result = poll(connection)
    task.refresh_from_db()
    assert task.flag.startswith("stale") and task.status == "ticket_open"
    assert result.tickets == 1


def test_a_ticket_missing_in_otrs_does_not_block_the_batch(sim, connection, crm, people):
    a, b = open_tasks(crm, people, 2)
    ghost = Ticket.objects.create(connection=connection, ticket_id=987654, ticket_number="ghost")
    set_state(sim, a.ticket.ticket_id, "closed successful")
    result = poll(connection)
    assert result.missing == 1
    assert ProvisioningTask.objects.get(pk=a.pk).status == "completed"
    ghost.refresh_from_db()
    assert ghost.is_open and ghost.last_polled_at is not None


def test_refresh_one_ticket_now(sim, connection, crm, people):
    [task] = open_tasks(crm, people, 1)
    set_state(sim, task.ticket.ticket_id, "closed successful")
    jobs.refresh_one(ticket_pk=task.ticket_id)
    assert ProvisioningTask.objects.get(pk=task.pk).status == "completed"


def test_schedules_are_registered_once_by_name(connection):
    from django_q.models import Schedule

    for _ in range(3):
        jobs.schedules_sync()
    names = list(Schedule.objects.order_by("name").values_list("name", "minutes"))
    assert names == [
        ("callbacks", 1),
        ("notes", 1),
        (f"poll:{connection.name}", connection.poll_minutes),
        (f"provision:{connection.name}", connection.provision_minutes),
        (jobs.PRUNE_SCHEDULE, 60),
    ]
    type(connection).objects.filter(pk=connection.pk).update(poll_minutes=7)
    jobs.schedules_sync()
    assert Schedule.objects.get(name=f"poll:{connection.name}").minutes == 7
    assert Schedule.objects.count() == 5


def test_registered_and_queued_job_paths_import_the_jobs(connection):
    from django.utils.module_loading import import_string
    from django_q.models import Schedule

    jobs.schedules_sync()
    for schedule in Schedule.objects.all():
        assert import_string(schedule.func) in (
            jobs.provision_due_tasks,
            jobs.poll_open_tickets,
            jobs.send_ticket_notes,
            jobs.deliver_callbacks,
            jobs.prune_api_calls,
        )
    for job in (jobs.provision_task, jobs.refresh_ticket, jobs.send_ticket_note):
        assert import_string(jobs.job_path(job)) is job


def test_duplicate_schedules_are_merged_into_one_that_is_up_to_date(connection):
    from django_q.models import Schedule

    for _ in range(2):
        Schedule.objects.create(
            name=f"poll:{connection.name}", func=jobs.job_path(jobs.poll_open_tickets), minutes=99
        )
    jobs.schedules_sync()
    [kept] = Schedule.objects.filter(name=f"poll:{connection.name}")
    assert kept.minutes == connection.poll_minutes and kept.args == f"({connection.pk},)"


def test_poll_job_records_its_run(sim, connection, crm, people):
    open_tasks(crm, people, 1)
    run = jobs.poll_job(trigger="test")
    assert run.status == "ok" and "1 ticket polled" in run.summary
    sim.configure(fail_rate=1.0)
    Ticket.objects.update(last_polled_at=None)
    run = jobs.poll_job(trigger="test")
    assert run.status == "failed" and run.summary


def test_factories_user_roles(db):
    person = factories.user("zed", "operators")
    assert person.has_perm("tickets.operate_tasks") and not person.has_perm(
        "tickets.approve_accessrequest"
    )


def test_a_ticket_whose_outcome_cannot_be_stored_does_not_stop_the_others(
    sim, connection, crm, people
):
    """Two people were granted the same account name at once; the second completion breaks
    the one-active-account rule. That ticket is reported; the rest of the cycle goes on."""
    first = approved_task(crm, people, username="ann", account_name="shared")
    second = approved_task(crm, people, username="bea", account_name="shared")
    third = approved_task(crm, people, username="cy")
    services.provision_due(owner="t")
    for task in (first, second, third):
        task.refresh_from_db()
        set_state(sim, task.ticket.ticket_id, "closed successful")

    result = poll(connection)

    statuses = {t.pk: ProvisioningTask.objects.get(pk=t.pk).status for t in (first, second, third)}
    assert statuses == {first.pk: "completed", second.pk: "ticket_open", third.pk: "completed"}
    [error] = result.errors
    assert f"ticket {second.ticket.ticket_id}" in error and "IntegrityError" in error
    assert Account.objects.filter(name="shared", active=True).count() == 1
