"""Storing what provisioning attempts found: the ticket of each task, or its failure.

A module of its own so provisioning.py (claims, the HTTP half, the run) stays readable:
this is the database half, one task at a time or a whole batch in a few statements.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from connections.client import CreatedTicket
from connections.errors import OTRSError
from connections.models import ApiCall

from ..limits import LEASE_OWNER
from ..models import AccessRequest, TaskEvent, Ticket
from ..models import ProvisioningTask as Task
from . import notifications
from .completion import _settle_request
from .context import agent_link
from .conversation import note_siblings_failed
from .transitions import Actor, TransitionError, _event, _event_row, _move, request_moved

log = logging.getLogger(__name__)


def backoff_delay(attempt: int) -> timedelta:
    """Exponential backoff with ±25% jitter: base, 2×base, 4×base … capped."""
    base = settings.PROVISION_BACKOFF_SECONDS
    delay = min(base * (2 ** max(attempt - 1, 0)), settings.PROVISION_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=delay * random.uniform(0.75, 1.25))


@dataclass
class AttemptOutcome:
    """What the HTTP half of one provisioning attempt found; nothing of it is stored yet."""

    created: CreatedTicket | None = None
    how: str = ""
    error: OTRSError | None = None
    clear_unknown: bool = False  # the create call surely never reached OTRS
    lost_lease: bool = False
    released: bool = False  # never sent: the run's time budget ran out first
    notes: tuple[str, ...] = ()  # why search hits were not adopted
    calls: list = field(default_factory=list)  # deferred ApiCall rows

    @classmethod
    def internal_error(cls, task_id: int, exc: BaseException, calls: list) -> AttemptOutcome:
        """Our bug or bad data: the failure is recorded on the task (never lost), the
        details go to the worker log."""
        log.error("provisioning task %s failed unexpectedly", task_id, exc_info=exc)
        # Only the exception's type reaches the task: its text could hold anything.
        error = OTRSError(f"internal error ({type(exc).__name__}); see the worker log")
        return cls(error=error, calls=calls)


def store_outcome(task: Task, attempt: AttemptOutcome, owner: str) -> str:
    """Store what one attempt found: the ticket, or the failure. Returns the new status."""
    actor = Actor.job(owner)
    TaskEvent.objects.bulk_create(_note_rows([(task, attempt)], actor))
    if attempt.lost_lease:
        return _lost_lease(task, owner)
    if attempt.released:
        return _release(task, owner)
    if attempt.error is not None:
        return _provision_failed(
            task, attempt.error, actor=actor, owner=owner, clear_unknown=attempt.clear_unknown
        )
    try:
        with transaction.atomic():
            return _store_ticket(task, attempt.created, how=attempt.how, owner=owner, actor=actor)
    except TransitionError as exc:
        # Cancelled, or taken over after the lease ran out, while the call was running:
        # the ticket exists in OTRS but belongs to nobody here. Say so where people look.
        _orphan_event(task, attempt.created, actor=actor, why=str(exc))
        return _current_status(task)


def _note_rows(results: Iterable[tuple[Task, AttemptOutcome]], actor: Actor) -> list[TaskEvent]:
    """The timeline rows saying why an attempt's search hits were not adopted."""
    return [
        _event_row(
            request_id=task.request_id,
            task_id=task.pk,
            from_status=Task.Status.CLAIMED,
            to=Task.Status.CLAIMED,
            reason=note,
            actor=actor,
        )
        for task, attempt in results
        for note in attempt.notes
    ]


def _release(task: Task, owner: str) -> str:
    """Hand back a claimed task whose call was never sent, as it was before the claim."""
    try:
        with transaction.atomic():
            _move(
                task,
                Task.Status.RETRY_WAIT,
                from_status=Task.Status.CLAIMED,
                guard={"lease_owner": owner[:LEASE_OWNER]},
                reason="not sent: the run's time budget ran out first; the next run takes it",
                actor=Actor.job(owner),
                attempts=max(task.attempts - 1, 0),
                outcome_unknown=task.outcome_unknown,
                next_attempt_at=timezone.now(),
                lease_until=None,
            )
    except TransitionError:
        return _lost_lease(task, owner)
    return Task.Status.RETRY_WAIT


def _store_ticket(task: Task, created, *, how: str, owner: str, actor: Actor) -> str:
    connection = task.connection
    ticket, new = Ticket.objects.get_or_create(
        connection=connection,
        ticket_id=created.ticket_id,
        defaults={
            "ticket_number": created.ticket_number,
            "create_article_id": created.article_id,
            "agent_url": agent_link(connection, created.ticket_id),
        },
    )
    if not new and Task.objects.filter(ticket=ticket).exclude(pk=task.pk).exists():
        # Another task already owns this ticket: never map one ticket to two tasks.
        return _provision_failed(
            task,
            OTRSError(
                f"ticket {created.ticket_id} already belongs to another task", permanent=True
            ),
            actor=actor,
            owner=owner,
            clear_unknown=False,
        )
    _move(
        task,
        Task.Status.TICKET_OPEN,
        from_status=Task.Status.CLAIMED,
        guard={"lease_owner": owner[:LEASE_OWNER]},
        reason=f"{how}: {ticket.ticket_number or ticket.ticket_id}",
        actor=actor,
        ticket=ticket,
        outcome_unknown=False,
        lease_until=None,
        last_error="",
        flag="",
    )
    TaskEvent.objects.bulk_create(_start_requests([task.request_id], actor))
    return Task.Status.TICKET_OPEN


def _start_requests(request_ids: Iterable[int], actor: Actor) -> list[TaskEvent]:
    """Move approved requests on to in progress: a first ticket of theirs exists (later
    ones find them in progress). Inside a transaction; returns the events to save."""
    starting = list(
        AccessRequest.objects.select_for_update()
        .filter(pk__in=set(request_ids), status=AccessRequest.Status.APPROVED)
        .values_list("pk", flat=True)
    )
    if starting:
        AccessRequest.objects.filter(pk__in=starting).update(
            status=AccessRequest.Status.IN_PROGRESS, updated_at=timezone.now()
        )
        request_moved.send(sender=AccessRequest, request_ids=starting)
    return [
        _event_row(
            request_id=pk,
            task_id=None,
            from_status=AccessRequest.Status.APPROVED,
            to=AccessRequest.Status.IN_PROGRESS,
            reason="first ticket created",
            actor=actor,
        )
        for pk in starting
    ]


def _provision_failed(
    task: Task, exc: OTRSError, *, actor: Actor, owner: str, clear_unknown: bool
) -> str:
    """Record a failed attempt: wait and retry while tries are left, else fail the task.

    Only the worker that still holds the lease may do this; one that lost it changes nothing.
    """
    task.refresh_from_db()
    message = str(exc.message)[:2000]
    guard = {"lease_owner": owner[:LEASE_OWNER]}
    fields: dict[str, Any] = {"last_error": message, "lease_until": None}
    if clear_unknown:
        fields["outcome_unknown"] = False
    try:
        with transaction.atomic():
            notifications.after_otrs_error(task.connection_id, exc)
            if exc.permanent or task.attempts >= task.max_attempts:
                why = (
                    "permanent error"
                    if exc.permanent
                    else f"tries exhausted ({task.attempts} of {task.max_attempts})"
                )
                _move(
                    task,
                    Task.Status.FAILED,
                    from_status=Task.Status.CLAIMED,
                    guard=guard,
                    reason=f"{why}: {message}",
                    actor=actor,
                    completed_at=timezone.now(),
                    **fields,
                )
                note_siblings_failed(task=task, actor=actor, why=f"{why}: {message}")
                _settle_request(task.request_id, actor=actor)
                return Task.Status.FAILED
            delay = backoff_delay(task.attempts)
            _move(
                task,
                Task.Status.RETRY_WAIT,
                from_status=Task.Status.CLAIMED,
                guard=guard,
                reason=f"will retry in {int(delay.total_seconds())} s: {message}",
                actor=actor,
                next_attempt_at=timezone.now() + delay,
                **fields,
            )
            return Task.Status.RETRY_WAIT
    except TransitionError:
        return _lost_lease(task, owner)


def _current_status(task: Task) -> str:
    return Task.objects.filter(pk=task.pk).values_list("status", flat=True).first() or ""


def _lost_lease(task: Task, owner: str) -> str:
    """The task was cancelled or taken over while this worker held it: leave it alone."""
    log.warning("task %s is no longer held by %s; leaving it as it is", task.pk, owner)
    return _current_status(task)


def _orphan_event(task: Task, created, *, actor: Actor, why: str) -> None:
    """A ticket was created for a task that moved on meanwhile: record it on the timeline."""
    with transaction.atomic():
        _event(
            request_id=task.request_id,
            task_id=task.pk,
            from_status="",
            to=_current_status(task),
            reason=(
                f"ticket {created.ticket_number or created.ticket_id} (TicketID {created.ticket_id}) "
                f"was created, but the task had moved on ({why}); the bridge does not follow "
                "this ticket; close it in OTRS"
            ),
            actor=actor,
        )


class _BatchConflict(Exception):
    """A batch store met a row that moved on; the batch is stored task by task instead."""


def store_outcomes(
    results: list[tuple[Task, AttemptOutcome]], owner: str
) -> list[tuple[Task, str]]:
    """Store the outcome of many attempts with a handful of statements.

    Created tickets are stored together: one INSERT of the tickets, one UPDATE of the
    tasks (still guarded by status and lease owner), one INSERT of the events, in one
    transaction. Should any row have moved on (cancelled meanwhile, a ticket already
    known), that transaction is undone and each task takes the one-by-one path, which
    says exactly what happened. Failures always take that path.
    """
    calls = [call for _, attempt in results for call in attempt.calls]
    batch = [(t, a) for t, a in results if a.created is not None and not a.lost_lease]
    created = [(t, a.created, a.how) for t, a in batch if a.created is not None]
    done: list[tuple[Task, str]] = []
    if created:
        try:
            with transaction.atomic():
                ApiCall.objects.bulk_create(calls)
                TaskEvent.objects.bulk_create(_note_rows(batch, Actor.job(owner)))
                _store_tickets(created, owner)
            done = [(task, Task.Status.TICKET_OPEN) for task, _, _ in created]
            calls = []
        except (_BatchConflict, DatabaseError) as exc:
            if not isinstance(exc, _BatchConflict | IntegrityError):
                log.warning("storing a batch failed (%s); storing task by task", exc)
            for call in calls:
                call.pk = None
    try:
        ApiCall.objects.bulk_create(calls)
    except DatabaseError:
        log.exception("could not write %d call log rows", len(calls))
    stored = {task.pk for task, _ in done}
    for task, attempt in results:
        if task.pk not in stored:
            try:
                status = store_outcome(task, attempt, owner)
            except DatabaseError:
                # The database failed us: the task stays claimed (and marked unknown), so
                # once its lease runs out a worker searches OTRS before creating anything.
                log.exception("could not store the outcome of task %s", task.pk)
                status = Task.Status.CLAIMED
            done.append((task, status))
    return done


def _store_tickets(created: list[tuple[Task, CreatedTicket, str]], owner: str) -> None:
    """Store the tickets the tasks created: (task, ticket, how it was found) each."""
    actor = Actor.job(owner)
    # A ticket already known (adopted twice, say) breaks the unique (connection, TicketID)
    # constraint: IntegrityError, and the batch is stored task by task.
    tickets = Ticket.objects.bulk_create(
        Ticket(
            connection_id=task.connection_id,
            ticket_id=made.ticket_id,
            ticket_number=made.ticket_number,
            create_article_id=made.article_id,
            agent_url=agent_link(task.connection, made.ticket_id),
        )
        for task, made, _ in created
    )
    if any(ticket.pk is None for ticket in tickets):  # a database that returns no ids
        raise _BatchConflict("the new tickets' ids are unknown")
    now = timezone.now()
    moved = Task.objects.filter(
        pk__in=[task.pk for task, _, _ in created],
        status=Task.Status.CLAIMED,
        lease_owner=owner[:LEASE_OWNER],
    ).update(
        status=Task.Status.TICKET_OPEN,
        # CASE id WHEN <task> THEN <ticket> …: the same as Case(When(pk=…)), which Django
        # resolves per row at a cost that rivals the whole rest of the batch.
        ticket_id=RawSQL(
            "CASE id " + "WHEN %s THEN %s " * len(created) + "END",
            [n for (task, _, _), t in zip(created, tickets, strict=True) for n in (task.pk, t.pk)],
        ),
        outcome_unknown=False,
        lease_until=None,
        last_error="",
        flag="",
        updated_at=now,
    )
    if moved != len(created):
        raise _BatchConflict("a task moved on")
    events = [
        _event_row(
            request_id=task.request_id,
            task_id=task.pk,
            from_status=Task.Status.CLAIMED,
            to=Task.Status.TICKET_OPEN,
            reason=f"{how}: {made.ticket_number or made.ticket_id}",
            actor=actor,
        )
        for task, made, how in created
    ]
    events += _start_requests([task.request_id for task, _, _ in created], actor)
    TaskEvent.objects.bulk_create(events)
    for (task, _, _), ticket in zip(created, tickets, strict=True):
        task.status, task.ticket = Task.Status.TICKET_OPEN, ticket
