"""Retention of the OTRS call log: old ApiCall rows go in bounded batches, never those of a
task still in progress; TaskEvents stay; the call counters of /metrics keep every call."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connections.models import ApiCall, ApiCallTally
from tests.test_polling import open_tasks
from tickets import jobs, services
from tickets.models import JobRun, TaskEvent

pytestmark = pytest.mark.django_db


def call(connection, ref: str, days_old: float, duration_ms: int = 40) -> ApiCall:
    row = ApiCall.objects.create(
        connection=connection,
        ref=ref,
        call_name="call1",
        method="GET",
        url="http://otrs.example/Ticket",
        outcome="ok",
        duration_ms=duration_ms,
    )
    ApiCall.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(days=days_old))
    return row


def test_old_rows_go_in_batches_and_recent_ones_stay(settings, offline):
    connection = offline.security_system.service_desk_connection
    settings.APICALL_RETENTION_DAYS = 30
    old = [call(connection, f"poll:{connection.name}", 31 + i / 10) for i in range(11)]
    recent = [call(connection, f"poll:{connection.name}", 29) for _ in range(3)]
    result = services.api_calls_prune(batch=4)
    assert result.deleted == 11 and result.kept == 0 and result.finished
    assert set(ApiCall.objects.values_list("pk", flat=True)) == {r.pk for r in recent}
    assert not ApiCall.objects.filter(pk__in=[r.pk for r in old]).exists()
    assert str(result) == "11 call log rows older than 30 days deleted"


def test_calls_of_tasks_in_progress_stay_until_the_task_is_final(sim, connection, crm, people):
    first, second = open_tasks(crm, people, 2)
    ApiCall.objects.update(created_at=timezone.now() - timedelta(days=45))
    refresh = call(connection, f"refresh:{first.ticket_id}", 45)
    services.task_cancel(task=second, by=people.olga)

    result = services.api_calls_prune(batch=2)
    assert ApiCall.objects.filter(ref=f"task:{first.pk}").exists()
    assert ApiCall.objects.filter(pk=refresh.pk).exists()
    assert not ApiCall.objects.filter(ref=f"task:{second.pk}").exists()
    assert result.kept == ApiCall.objects.count()
    assert "kept for tasks still in progress" in str(result)

    services.task_cancel(task=first, by=people.olga)
    events = list(TaskEvent.objects.values_list("pk", flat=True))
    TaskEvent.objects.update(at=timezone.now() - timedelta(days=400))
    services.api_calls_prune(batch=2)
    assert not ApiCall.objects.exists()
    assert list(TaskEvent.objects.values_list("pk", flat=True)) == events  # all kept


def test_deleted_rows_stay_in_the_call_totals(settings, offline):
    connection = offline.security_system.service_desk_connection
    for ms in (10, 300, 70_000):
        call(connection, "poll:x", 40, duration_ms=ms)
    services.api_calls_prune()
    [tally] = ApiCallTally.objects.all()
    assert (tally.connection_name, tally.call_name, tally.outcome) == (
        connection.name,
        "call1",
        "ok",
    )
    assert tally.calls == 3 and tally.duration_ms == 70_310
    assert tally.buckets[0] == 1  # ≤ 25 ms
    assert tally.buckets[4] == 1  # ≤ 500 ms
    assert tally.buckets[-1] == 1  # over the last bound


def test_a_run_out_of_time_says_the_next_one_goes_on(offline):
    connection = offline.security_system.service_desk_connection
    call(connection, "poll:x", 40)
    result = services.api_calls_prune(budget_seconds=0)
    assert not result.finished and result.deleted == 0
    assert str(result).endswith("time budget spent, the next run goes on")


def test_the_job_records_its_run(offline):
    connection = offline.security_system.service_desk_connection
    call(connection, "poll:x", 40)
    summary = jobs.prune_api_calls(trigger="test")
    run = JobRun.objects.get(name="prune-api-calls")
    assert run.status == "ok" and run.trigger == "test" and run.summary == summary
    assert summary.startswith("1 call log row older than 30 days deleted")


def test_the_overview_names_every_job_in_words(client, offline, people):
    """Each job the worker runs shows a title and a summary a person reads, no code."""
    jobs.prune_api_calls(trigger="schedule")
    jobs.poll_job(trigger="schedule")
    jobs.send_ticket_notes(trigger="schedule")
    jobs.deliver_callbacks(trigger="schedule")
    client.force_login(people.olga)
    page = client.get("/").content.decode()
    table = page.split("Last run", 1)[1].split("</table>", 1)[0]
    for title in ("Call log retention", "Polling", "Ticket notes", "Callbacks to API clients"):
        assert f">{title}<" in table, title
    assert "0 call log rows older than 30 days deleted" in table
    assert "Prune" not in table and "(s)" not in table and "))" not in table


def test_retention_days_must_be_at_least_one():
    from tests.test_settings import _manage

    result = _manage("check", env={"DEBUG": "True", "APICALL_RETENTION_DAYS": "0"})
    assert result.returncode != 0
    assert "APICALL_RETENTION_DAYS is 0; it must be at least 1 (days)." in result.stderr


def test_the_command_runs_the_job_once(offline):
    from io import StringIO

    from django.core.management import call_command

    connection = offline.security_system.service_desk_connection
    call(connection, "poll:x", 40)
    out = StringIO()
    call_command("prune_api_calls", stdout=out)
    assert out.getvalue().startswith("1 call log row older than 30 days deleted")
    assert JobRun.objects.get(name="prune-api-calls").trigger == "command"
