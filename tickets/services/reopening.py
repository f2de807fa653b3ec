"""A ticket reopened in OTRS after its task finished: the task goes back to "Ticket open",
its request back to "In progress", and the access the completion recorded is marked
unconfirmed (never silently undone) until the ticket closes again.

Closed tickets stay watched for the connection's `reopen_watch_days` after they close: the
change search of each poll cycle and the webhook still read them (tickets.services.polling).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q

from connections.errors import TicketStatus

from ..models import AccessRequest, Account, AccountEntitlement, Operation, Ticket
from ..models import ProvisioningTask as Task
from . import notifications
from .transitions import Actor, _move

# The OTRS state types that mean "someone works on it again". Pending, merged and removed
# states keep their handling: a finished task stays finished.
REOPENING_STATE_TYPES = ("new", "open")


def watched(now: datetime) -> Q:
    """The tickets the bridge still reads: open ones, and closed ones within their watch."""
    return Q(is_open=True) | Q(watch_until__gt=now)


def watch_until(ticket: Ticket, now: datetime) -> datetime:
    return now + timedelta(days=ticket.connection.reopen_watch_days)


def reopens(task: Task, status: TicketStatus) -> bool:
    """Whether OTRS's state for a finished task's ticket means it was reopened: the state's
    type is new or open (a state an admin added or renamed counts by its type), or, when
    the status call reads no type, the status mapping calls it open."""
    if task.status not in Task.REOPENABLE or status.merged_into:
        return False
    if status.state_type:
        return status.state_type in REOPENING_STATE_TYPES
    return status.outcome == "open"


def task_reopen(task: Task, status: TicketStatus, *, ticket: Ticket, actor: Actor) -> Task:
    """Move a finished task back to "Ticket open" (inside the caller's transaction)."""
    was_completed = task.status == Task.Status.COMPLETED
    unconfirmed = (
        "; the access it recorded is marked unconfirmed until the ticket closes again"
        if was_completed
        else ""
    )
    task = _move(
        task,
        Task.Status.TICKET_OPEN,
        reason=(
            f"OTRS ticket {ticket} was reopened (state {status.state!r}) after the task was "
            f"{task.get_status_display().lower()}{unconfirmed}"
        ),
        actor=actor,
        completed_at=None,
        flag=Task.REOPENED_FLAG if was_completed else "",
    )
    if was_completed:
        _mark_inventory(task, unconfirmed_by=task)
        notifications.notify_soon(notifications.TASK_FLAGGED, task.pk)
    access_request = AccessRequest.objects.select_for_update().get(pk=task.request_id)
    if AccessRequest.Status.IN_PROGRESS in AccessRequest.TRANSITIONS[access_request.status]:
        _move(
            access_request,
            AccessRequest.Status.IN_PROGRESS,
            reason=f"OTRS ticket {ticket} of task {task.pk} was reopened",
            actor=actor,
            completed_at=None,
            result_summary="",
        )
    return task


def inventory_confirm(task: Task) -> None:
    """The task completed again: what its completion recorded is no longer in doubt."""
    Account.objects.filter(unconfirmed_by=task).update(unconfirmed_by=None)
    AccountEntitlement.objects.filter(unconfirmed_by=task).update(unconfirmed_by=None)


def _mark_inventory(task: Task, *, unconfirmed_by: Task) -> None:
    """Flag the inventory rows the task's completion changed (see _record_access)."""
    access_request = task.request
    accounts = Account.objects.filter(
        identity_id=access_request.beneficiary_id, endpoint_id=task.endpoint_id
    )
    if task.operation == Operation.REMOVE_ACCOUNT:
        account = accounts.filter(active=False).order_by("-removed_at", "-id").first()
    else:
        account = accounts.filter(active=True).first()
    if account is None:
        return
    if task.operation == Operation.ADD_ACCESS:
        AccountEntitlement.objects.filter(account=account, entitlement=task.entitlement).update(
            unconfirmed_by=unconfirmed_by
        )
    else:
        Account.objects.filter(pk=account.pk).update(unconfirmed_by=unconfirmed_by)
        if task.operation == Operation.CREATE_ACCOUNT:
            AccountEntitlement.objects.filter(account=account, granted_by=task).update(
                unconfirmed_by=unconfirmed_by
            )
