"""Following tickets: the poll cycle, applying a ticket's state to its task, the one-ticket
refresh (webhook, button) and the stale flags."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.utils import timezone

from connections.client import TicketClient
from connections.errors import Article, OTRSError, TicketStatus
from connections.models import Connection, PollWatermark

from ..models import ProvisioningTask as Task
from ..models import Ticket
from . import conversation, notifications, reopening
from .completion import _record_access, _settle_request
from .context import agent_link
from .transitions import Actor, TransitionError, _move, _task_event

log = logging.getLogger(__name__)

# TicketIDs per `IN (...)` query when picking our tickets out of a change search's answer
# (SQLite allows 999 parameters per statement in older builds).
_IDS_PER_QUERY = 500


@dataclass
class PollResult:
    tickets: int = 0
    changed: int = 0
    missing: int = 0
    errors: list[str] = field(default_factory=list)
    # How a cycle with a change search went ("" for a status document without one).
    how: str = ""

    def __str__(self) -> str:
        text = f"{self.tickets} ticket{'s' if self.tickets != 1 else ''} polled, {self.changed} changed"
        if self.missing:
            text += f", {self.missing} not found"
        if self.errors:
            errors = len(self.errors)
            text += f", {errors} error{'s' if errors != 1 else ''}: {self.errors[0]}"
        if self.how:
            text += f" ({self.how})"
        return text


def tickets_poll(
    *,
    connection: Connection,
    progress: Callable[[int], None] | None = None,
    budget_seconds: float | None = None,
) -> PollResult:
    """One poll cycle of a connection.

    With a changeSearchCall in its TicketStatusJSON, the cycle asks OTRS which tickets
    changed since the connection's watermark and fetches only ours among them; a sweep
    of every open ticket runs on its own slower cadence and whenever the watermark cannot
    be trusted. Without one, every cycle is that sweep.
    """
    result = PollResult()
    started = timezone.now()
    budget = settings.JOB_TIME_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    cycle = _Cycle(connection, result, time.monotonic() + budget, progress)
    try:
        client = TicketClient(connection)
    except OTRSError as exc:
        result.errors.append(exc.message)
        notifications.after_otrs_error(connection.pk, exc)
        return result
    if client.documents.status.change_search is None:
        cycle.sweep(client, started)
    else:
        _poll_changes(client, cycle, started)
    flag_stale_tasks(connection=connection)
    if not result.errors:
        # Readiness and /metrics read this: the connection is still followed. A cycle with
        # nothing to fetch counts too: nothing was left unread.
        mark, _ = PollWatermark.objects.get_or_create(connection=connection)
        PollWatermark.objects.filter(pk=mark.pk).update(polled_ok_at=timezone.now())
    return result


def _poll_changes(client: TicketClient, cycle: _Cycle, started: datetime) -> None:
    """Fetch the tickets that changed since the watermark; sweep when it cannot be trusted.

    The watermark moves to this cycle's start only once every change read was applied,
    so a cycle cut short (an error, the time budget) is asked again by the next one.
    """
    connection = cycle.connection
    mark, _ = PollWatermark.objects.get_or_create(connection=connection)
    why = _sweep_due(mark, connection, started)
    changed: list[int] | None = None
    if why is None:
        assert mark.changed_since is not None  # _sweep_due checked it
        try:
            changed = client.changed_tickets(
                mark.changed_since, started, ref=f"poll:{connection.name}"
            )
        except OTRSError as exc:
            cycle.result.errors.append(exc.message)
            why = "as the change search failed"
        if changed is None:
            why = why or "as the change search answered as many ids as its limit, maybe cut short"
    if changed is None:
        cycle.result.how = f"all open tickets read, {why}"
        if cycle.sweep(client, started):
            PollWatermark.objects.filter(pk=mark.pk).update(
                changed_since=started, full_sweep_at=started
            )
        return
    cycle.result.how = (
        f"{len(changed)} changed in OTRS since {mark.changed_since:%Y-%m-%d %H:%M:%S %Z}"
    )
    if cycle.poll_ids(client, changed):
        PollWatermark.objects.filter(pk=mark.pk).update(changed_since=started)


def _sweep_due(mark: PollWatermark, connection: Connection, now: datetime) -> str | None:
    """Why this cycle must sweep every open ticket instead of asking for changes, if it must."""
    if mark.changed_since is None:
        return "as this is the first cycle"
    if now < mark.changed_since:
        return "as the clock went back since the last cycle"
    every = timedelta(minutes=connection.full_sweep_minutes)
    if mark.full_sweep_at is None or now - mark.full_sweep_at >= every:
        return f"as every {connection.full_sweep_minutes} min"
    return None


@dataclass
class _Cycle:
    """What one poll cycle shares: the connection, the result so far and the time left."""

    connection: Connection
    result: PollResult
    deadline: float
    progress: Callable[[int], None] | None

    def sweep(self, client: TicketClient, started: datetime) -> bool:
        """Poll every open ticket, oldest-polled first, one status call per batch; True
        when every one was read and stored.

        Only one batch of ids is in memory at a time, so memory stays flat however many
        tickets are open. A ticket is polled at most once per cycle.
        """
        batch = max(1, self.connection.batch_size)
        pending = Ticket.objects.filter(connection=self.connection, is_open=True).filter(
            Q(last_polled_at__isnull=True) | Q(last_polled_at__lt=started)
        )
        complete = True
        while time.monotonic() < self.deadline:
            chunk = list(
                pending.order_by(F("last_polled_at").asc(nulls_first=True), "id").values_list(
                    "pk", "ticket_id", "state"
                )[:batch]
            )
            if not chunk:
                return complete
            try:
                complete = self.poll_batch(client, chunk) and complete
            except OTRSError:
                return False
        return False

    def poll_ids(self, client: TicketClient, ticket_ids: list[int]) -> bool:
        """Poll our open tickets among `ticket_ids`; True when every one was read and stored."""
        ours: list[tuple[int, int, str]] = []
        for start in range(0, len(ticket_ids), _IDS_PER_QUERY):
            ours += (
                Ticket.objects.filter(
                    connection=self.connection,
                    ticket_id__in=ticket_ids[start : start + _IDS_PER_QUERY],
                )
                .filter(reopening.watched(timezone.now()))
                .values_list("pk", "ticket_id", "state")
            )
        batch = max(1, self.connection.batch_size)
        complete = True
        for start in range(0, len(ours), batch):
            if time.monotonic() >= self.deadline:
                return False
            try:
                complete = self.poll_batch(client, ours[start : start + batch]) and complete
            except OTRSError:
                return False
        return complete

    def poll_batch(self, client: TicketClient, chunk: list[tuple[int, int, str]]) -> bool:
        """Read one batch of tickets (pk, TicketID, state as stored) and apply what changed.

        True when all were read and stored. Raises OTRSError when OTRS refused for good
        (auth, configuration): the cycle stops there.
        """
        result = self.result
        ids = [ticket_id for _, ticket_id, _ in chunk]
        try:
            statuses = client.ticket_statuses(ids, ref=f"poll:{self.connection.name}")
        except OTRSError as exc:
            result.errors.append(exc.message)
            # Mark the batch polled so the cycle moves on; the next cycle tries again.
            Ticket.objects.filter(pk__in=[pk for pk, _, _ in chunk]).update(
                last_polled_at=timezone.now()
            )
            if exc.auth or exc.permanent:
                raise
            return False
        unchanged = []
        stored = True
        for pk, ticket_id, state in chunk:
            status = statuses.get(ticket_id)
            if status is None:
                result.missing += 1
                unchanged.append(pk)
            elif status.state == state and status.merged_into is None:
                unchanged.append(pk)
            else:
                try:
                    ticket = Ticket.objects.select_related("connection").get(pk=pk)
                    if ticket_apply_status(
                        ticket=ticket,
                        status=status,
                        actor=Actor.job("poll"),
                        article=_closing_article(client, ticket, status),
                    ):
                        result.changed += 1
                except TransitionError:
                    # Someone else (the webhook, an operator) moved the task meanwhile;
                    # the next cycle sees the new state.
                    unchanged.append(pk)
                except DatabaseError as exc:
                    # One ticket that cannot be stored (its change was undone) must not
                    # stop the cycle: it is marked polled, so the others get their turn.
                    log.exception("ticket %s: its new state could not be stored", ticket_id)
                    result.errors.append(
                        f"ticket {ticket_id}: its new state could not be stored "
                        f"({type(exc).__name__}); see the worker log"
                    )
                    unchanged.append(pk)
                    stored = False
        Ticket.objects.filter(pk__in=unchanged).update(last_polled_at=timezone.now())
        result.tickets += len(chunk)
        if self.progress:
            self.progress(len(chunk))
        return stored


def _closing_article(client: TicketClient, ticket: Ticket, status: TicketStatus) -> Article | None:
    """The agent's closing article, read (outside any transaction) when the ticket of an
    unfinished task is closing."""
    if status.outcome not in _CLOSING or status.merged_into:
        return None
    task = Task.objects.filter(ticket=ticket).only("status").first()
    if task is None or task.is_terminal:
        return None
    return conversation.closing_article(client, ticket)


_CLOSING = ("completed", "discontinued", "failed")


def ticket_apply_status(
    *, ticket: Ticket, status: TicketStatus, actor: Actor, article: Article | None = None
) -> bool:
    """Apply what OTRS says about a ticket to the ticket mapping and its task.

    Returns True when something changed. A merged ticket is followed to its target; an
    unmapped state leaves the task open and flagged for the dashboard. A finished task
    whose ticket was reopened goes back to "Ticket open" (reopening.py). `article` is the
    agent's closing article, kept on the task as its outcome reason.
    """
    now = timezone.now()
    with transaction.atomic():
        mapping = {
            "state": status.state,
            "state_type": status.state_type or "",
            "last_polled_at": now,
            "otrs_changed_at": status.changed,
        }
        if status.ticket_number:
            mapping["ticket_number"] = status.ticket_number
        task = Task.objects.filter(ticket=ticket).first()
        if status.merged_into and status.merged_into != ticket.ticket_id:
            target, _ = Ticket.objects.get_or_create(
                connection_id=ticket.connection_id,
                ticket_id=status.merged_into,
                defaults={"agent_url": agent_link(ticket.connection, status.merged_into)},
            )
            Ticket.objects.filter(pk=ticket.pk).update(
                is_open=False, closed_at=now, merged_into=status.merged_into, **mapping
            )
            if task is not None and not task.is_terminal:
                owner = Task.objects.filter(ticket=target).exclude(pk=task.pk).first()
                if owner is None:
                    Task.objects.filter(pk=task.pk).update(ticket=target, flag="")
                    reason = (
                        f"ticket {ticket} was merged into ticket {status.merged_into}; following it"
                    )
                else:
                    # Two tasks cannot share a ticket: flag it for an operator to decide.
                    flag = f"merged into the ticket of task {owner.pk}"
                    Task.objects.filter(pk=task.pk).update(flag=flag[:200])
                    notifications.notify_soon(notifications.TASK_FLAGGED, task.pk)
                    reason = (
                        f"ticket {ticket} was merged into ticket {status.merged_into}, which task "
                        f"{owner.pk} follows; this task needs an operator (cancel it here, and check the merge in OTRS)"
                    )
                _task_event(task, reason, actor)
            return True
        outcome = status.outcome
        closing = outcome in _CLOSING
        Ticket.objects.filter(pk=ticket.pk).update(
            is_open=not closing,
            closed_at=now if closing else None,
            watch_until=reopening.watch_until(ticket, now) if closing else None,
            **mapping,
        )
        if task is not None and reopening.reopens(task, status):
            task = reopening.task_reopen(task, status, ticket=ticket, actor=actor)
            if outcome != "pending":
                return True
        if task is None or task.is_terminal:
            return True
        if outcome is None:
            flag = f"unmapped state: {status.state}"
            if task.flag != flag:
                Task.objects.filter(pk=task.pk).update(flag=flag)
                notifications.notify_soon(notifications.TASK_FLAGGED, task.pk)
                _task_event(
                    task,
                    f"OTRS reports state {status.state!r}, which the status mapping does not list; the task stays open",
                    actor,
                )
            return True
        to = Task.OUTCOME_STATUS[outcome]
        reason = f"OTRS state {status.state!r} → {outcome}"
        extra: dict[str, Any] = {"completed_at": now} if to in Task.TERMINAL else {}
        kept = conversation.outcome_fields(article) if closing else {}
        if kept:
            extra.update(kept)
            reason += (
                f'; {Task.OUTCOME_LABEL.lower()} "{kept["outcome_subject"]}": '
                f"{kept['outcome_reason']}"
            )
        if to != task.status:
            task = _move(task, to, reason=reason, actor=actor, flag="", **extra)
        elif task.flag.startswith("unmapped"):
            Task.objects.filter(pk=task.pk).update(flag="")
        if to == Task.Status.COMPLETED:
            _record_access(task)
            reopening.inventory_confirm(task)
        elif to == Task.Status.FAILED:
            conversation.note_siblings_failed(task=task, actor=actor, why=reason)
        if to in Task.TERMINAL:
            _settle_request(task.request_id, actor=actor)
    return True


def ticket_refresh(*, ticket: Ticket, actor: Actor) -> bool:
    """Fetch one ticket's state now (the job the OTRS webhook queues)."""
    client = TicketClient(ticket.connection)
    statuses = client.ticket_statuses([ticket.ticket_id], ref=f"refresh:{ticket.pk}")
    status = statuses.get(ticket.ticket_id)
    if status is None:
        return False
    article = _closing_article(client, ticket, status)
    return ticket_apply_status(ticket=ticket, status=status, actor=actor, article=article)


def flag_stale_tasks(*, connection: Connection) -> int:
    """Flag tasks whose ticket has been open longer than the connection allows. They are
    still polled; the flag only makes them visible."""
    limit = timezone.now() - timedelta(days=connection.max_status_check_days)
    stale = Task.objects.filter(
        connection=connection,
        status__in=(Task.Status.TICKET_OPEN, Task.Status.TICKET_PENDING),
        ticket__created_at__lt=limit,
    ).filter(flag="")  # only unflagged tasks: an unmapped state or a merge says more
    first = stale.order_by("pk").values_list("pk", flat=True).first()
    flagged = stale.update(flag=f"stale: open longer than {connection.max_status_check_days} days")
    if first is not None:
        notifications.notify_soon(notifications.TASK_FLAGGED, first)
    return flagged
