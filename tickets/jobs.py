"""The django-q2 jobs, their bookkeeping, their schedules and every enqueue.

The only module that names a job: django-q2 imports a job by its dotted path, which
job_path() derives from the function, so a renamed job cannot leave a stale string behind.
Jobs are thin: they take ids, call a service in tickets.services and record the run.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q import tasks as q_tasks
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import Schedule

from connections.errors import OTRSError
from connections.models import Connection

from . import services
from .models import JobRun, ProvisioningTask, Ticket

# --- the jobs django-q2 runs -----------------------------------------------------------------


def provision_due_tasks(connection_id: int | None = None, trigger: str = "schedule"):
    """The WSRETRY equivalent: create tickets for due tasks."""
    return provision_job(trigger=trigger, connection_id=connection_id).summary


def poll_open_tickets(connection_id: int | None = None, trigger: str = "schedule"):
    """Poll open tickets and apply their states."""
    return poll_job(trigger=trigger, connection_id=connection_id).summary


def provision_task(task_id: int):
    """Instant provisioning of one task, queued at approval."""
    return provision_one(task_id=task_id)


def prune_api_calls(trigger: str = "schedule"):
    """Delete call log rows older than APICALL_RETENTION_DAYS (not those of open tasks)."""
    return record_job_run(PRUNE_SCHEDULE, trigger, services.api_calls_prune).summary


def refresh_ticket(ticket_pk: int, connection_name: str = ""):
    """Fetch one ticket's state now (queued by the OTRS webhook)."""
    return refresh_one(ticket_pk=ticket_pk, connection_name=connection_name)


def send_notification(kind: str, ref: int):
    """Send one notification email (queued when the change it tells of commits)."""
    return services.notifications.notification_send(kind=kind, ref=ref)


def send_ticket_notes(trigger: str = "schedule"):
    """Add the due notes to their tickets (cancels, failed siblings, …)."""
    return record_job_run("notes", trigger, services.notes_send_due).summary


def send_ticket_note(note_id: int):
    """Add one note to its ticket now (queued when the note is)."""
    return services.note_send(note_id=note_id)


def deliver_callbacks(trigger: str = "schedule"):
    """POST the due request documents to their API clients' callback URLs."""
    return record_job_run("callbacks", trigger, services.deliveries_send_due).summary


# The retention job's name: its run, its schedule and its title.
PRUNE_SCHEDULE = "prune-api-calls"

# What the console calls each job run, by the name its run is recorded under (the part
# before ":connection"), and a task's instant provisioning (a worker kind, no JobRun).
# record_job_run refuses a name without a title.
JOB_TITLES = {
    "provision": "Provisioning",
    "instant": "Instant provisioning",
    "poll": "Polling",
    "refresh": "Ticket refresh",
    "notes": "Ticket notes",
    "callbacks": "Callbacks to API clients",
    PRUNE_SCHEDULE: "Call log retention",
}


# --- queueing --------------------------------------------------------------------------------


def job_path(job: Callable) -> str:
    """The dotted path django-q2 imports `job` by, for a queued task or a schedule."""
    return f"{job.__module__}.{job.__qualname__}"


@lru_cache(maxsize=1)
def _broker():
    """One django-q2 broker per process. async_task otherwise builds a new one per task,
    and with Redis that is a new connection each time (10 ms instead of 6 per webhook)."""
    return get_broker()


def enqueue(job: Callable, *args, task_name: str = "") -> None:
    """Queue `job(*args)` on the worker cluster: on the process's broker, inside a
    transaction unless jobs run inline.

    Outside a transaction, django-q2's ORM broker closes and reopens the database
    connection twice per task (close_old_connections); with SQLite, where connections are
    not kept, that tripled the webhook's time (18 ms instead of 5 ms per call). Inside
    atomic() it writes on the caller's connection. In sync mode the job itself runs here
    and calls OTRS, which must never happen inside a transaction.
    """
    named = {"task_name": task_name} if task_name else {}
    if Conf.SYNC:
        q_tasks.async_task(job_path(job), *args, **named)
        return
    with transaction.atomic():
        q_tasks.async_task(job_path(job), *args, broker=_broker(), **named)


def queue_provisioning(sender, task_ids: list[int], **kwargs) -> None:
    """Queue provision_task for each task (connected to services.provisioning_wanted, which
    approval and retry send on commit for instant provisioning)."""
    for task_id in task_ids:
        enqueue(provision_task, task_id, task_name=f"provision-task-{task_id}")


def queue_notification(sender, kind: str, ref: int, **kwargs) -> None:
    """Queue send_notification (connected to services.notifications.notification_wanted)."""
    enqueue(send_notification, kind, ref, task_name=f"notify-{kind}-{ref}-{uuid.uuid4().hex[:6]}")


def queue_notes(sender, note_ids: list[int], **kwargs) -> None:
    """Queue send_ticket_note for each note (connected to services.notes_wanted)."""
    for note_id in note_ids:
        enqueue(send_ticket_note, note_id, task_name=f"ticket-note-{note_id}")


def queue_deliveries(sender, **kwargs) -> None:
    """Queue a deliveries run (connected to services.deliveries_wanted)."""
    enqueue(deliver_callbacks, "queued")


# --- bookkeeping and schedules ---------------------------------------------------------------


def record_job_run(name: str, trigger: str, work: Callable[[], object]) -> JobRun:
    """Run one job and record it: a row before it starts, the outcome after (practice 9)."""
    assert name.partition(":")[0] in JOB_TITLES, f"{name} has no title in JOB_TITLES"
    run = JobRun.objects.create(name=name, trigger=trigger)
    try:
        outcome = work()
    except OTRSError as exc:
        JobRun.objects.filter(pk=run.pk).update(
            status=JobRun.Status.FAILED, error=exc.message, finished_at=timezone.now()
        )
    except Exception:
        JobRun.objects.filter(pk=run.pk).update(
            status=JobRun.Status.ERRORED,
            error=traceback.format_exc()[-4000:],
            finished_at=timezone.now(),
        )
        raise
    else:
        failed = bool(getattr(outcome, "errors", None))
        JobRun.objects.filter(pk=run.pk).update(
            status=JobRun.Status.FAILED if failed else JobRun.Status.OK,
            summary=str(outcome)[:300],
            finished_at=timezone.now(),
        )
    run.refresh_from_db()
    return run


def provision_threads(workers: int | None) -> int:
    """The thread count of a provisioning run: `workers`, or PROVISION_THREADS when None.

    Raises ValueError naming the bound when it is not 1 to PROVISION_THREADS_MAX.
    """
    threads = settings.PROVISION_THREADS if workers is None else workers
    if not 1 <= threads <= settings.PROVISION_THREADS_MAX:
        raise ValueError(
            f"a provisioning run uses 1 to {settings.PROVISION_THREADS_MAX} threads "
            f"(PROVISION_THREADS_MAX), not {threads}"
        )
    return threads


def provision_job(
    *, trigger: str, connection_id: int | None = None, progress=None, workers: int | None = None
) -> JobRun:
    threads = provision_threads(workers)
    connection = Connection.objects.get(pk=connection_id) if connection_id else None
    name = f"provision:{connection.name}" if connection else "provision"
    return record_job_run(
        name,
        trigger,
        lambda: services.provision_due(
            owner=services.worker_name(name),
            workers=threads,
            connection=connection,
            progress=progress,
        ),
    )


@dataclass
class PollAllResult:
    results: dict[str, services.PollResult] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [f"{name}: {e}" for name, r in self.results.items() for e in r.errors]

    def __str__(self) -> str:
        return "; ".join(f"{name}: {r}" for name, r in self.results.items()) or "no connections"


def poll_job(*, trigger: str, connection_id: int | None = None, progress=None) -> JobRun:
    connections = Connection.objects.filter(enabled=True)
    if connection_id:
        connections = connections.filter(pk=connection_id)
    name = "poll" if connection_id is None else f"poll:{connections.first()}"

    def work() -> PollAllResult:
        out = PollAllResult()
        for connection in connections:
            out.results[connection.name] = services.tickets_poll(
                connection=connection, progress=progress
            )
        return out

    return record_job_run(name, trigger, work)


def schedules_sync() -> int:
    """Register one provisioning and one polling schedule per connection, and the retention
    job's, by name.

    Idempotent: running it any number of times leaves one schedule of each name, with the
    connection's current interval. Schedules of deleted connections are removed.
    """
    wanted: dict[str, tuple[str, Connection | None, int]] = {}
    for connection in Connection.objects.all():
        wanted[f"provision:{connection.name}"] = (
            job_path(provision_due_tasks),
            connection,
            connection.provision_minutes,
        )
        wanted[f"poll:{connection.name}"] = (
            job_path(poll_open_tickets),
            connection,
            connection.poll_minutes,
        )
    # The retention job, once an hour: each run has only an hour's rows to delete.
    wanted[PRUNE_SCHEDULE] = (job_path(prune_api_calls), None, 60)
    for name, (func, target, minutes) in wanted.items():
        # Duplicates (left by an older version, say) go first, so the one kept is updated.
        keep = Schedule.objects.filter(name=name).order_by("id").values_list("pk", flat=True)[:1]
        Schedule.objects.filter(name=name).exclude(pk__in=list(keep)).delete()
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "args": f"({target.pk},)" if target else "()",
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
    stale = Schedule.objects.filter(
        Q(name__startswith="provision:") | Q(name__startswith="poll:")
    ).exclude(name__in=wanted)
    stale.delete()
    # The outboxes of every connection and client: notes to tickets, callbacks upstream.
    for name, job in (("notes", send_ticket_notes), ("callbacks", deliver_callbacks)):
        keep = Schedule.objects.filter(name=name).order_by("id").values_list("pk", flat=True)[:1]
        Schedule.objects.filter(name=name).exclude(pk__in=list(keep)).delete()
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": job_path(job),
                "args": "()",
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
            },
        )
    return len(wanted) + 2


def provision_one(*, task_id: int) -> str:
    """Provision one task now if it is still due (instant provisioning, retry button)."""
    owner = services.worker_name("instant")
    task = ProvisioningTask.objects.filter(pk=task_id).first()
    if task is None or task.status not in ProvisioningTask.DUE:
        return f"task {task_id} is not due"
    claimed = services.task_claim_next_specific(task_id=task_id, owner=owner)
    if claimed is None:
        return f"task {task_id} was taken by another worker"
    return services.task_provision(task=claimed, owner=owner)


def refresh_one(*, ticket_pk: int, connection_name: str = "") -> str:
    """Fetch one ticket's state now; `connection_name` says the webhook of that connection asked."""
    ticket = Ticket.objects.select_related("connection").filter(pk=ticket_pk).first()
    if ticket is None:
        return f"ticket {ticket_pk} is not tracked"
    actor = (
        services.Actor.webhook(ticket.connection)
        if connection_name
        else services.Actor.job("refresh")
    )
    try:
        changed = services.ticket_refresh(ticket=ticket, actor=actor)
    except OTRSError as exc:
        return f"ticket {ticket} not refreshed: {exc.message}"
    except services.TransitionError as exc:
        return f"ticket {ticket} not applied: {exc}"
    return f"ticket {ticket} {'updated' if changed else 'not found in OTRS'}"
