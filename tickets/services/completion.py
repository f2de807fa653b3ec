"""Finishing work: the access inventory a completed task updates, and settling a request once
all its tasks are terminal (its status change sends the notification that says how it ended,
see notifications)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from ..models import AccessRequest, Account, AccountEntitlement, Operation
from ..models import ProvisioningTask as Task
from .transitions import Actor, _move

log = logging.getLogger(__name__)

# Sent once a request is settled (completed or failed) and committed, with `request_id`:
# SCIM provisioning submits what waited for it (tickets/apps.py connects it).
request_finished = Signal()


def _record_access(task: Task) -> None:
    """Update the access inventory for a completed task (inside its transaction)."""
    access_request = task.request
    identity = access_request.beneficiary
    name = access_request.account_name or identity.username
    account = Account.objects.filter(identity=identity, endpoint=task.endpoint, active=True).first()
    if task.operation == Operation.CREATE_ACCOUNT:
        if account is None:
            account = Account.objects.create(
                identity=identity, endpoint=task.endpoint, name=name, origin_request=access_request
            )
        for entitlement in access_request.entitlements:
            AccountEntitlement.objects.get_or_create(
                account=account, entitlement=entitlement, defaults={"granted_by": task}
            )
    elif task.operation == Operation.REMOVE_ACCOUNT:
        if account is not None:
            Account.objects.filter(pk=account.pk).update(active=False, removed_at=timezone.now())
    elif task.operation == Operation.ADD_ACCESS:
        if account is None:
            account = Account.objects.create(
                identity=identity, endpoint=task.endpoint, name=name, origin_request=access_request
            )
        AccountEntitlement.objects.get_or_create(
            account=account, entitlement=task.entitlement, defaults={"granted_by": task}
        )
    elif task.operation == Operation.REMOVE_ACCESS and account is not None:
        AccountEntitlement.objects.filter(account=account, entitlement=task.entitlement).delete()


def _settle_request(request_id: int, *, actor: Actor) -> None:
    """Finish a request once all its tasks are terminal; its status says how it went.

    The request row is locked first: two transactions finishing the last two tasks of one
    request would otherwise each see the other task unfinished, and neither would settle it.
    """
    access_request = AccessRequest.objects.select_for_update().get(pk=request_id)
    if access_request.status in AccessRequest.TERMINAL:
        return
    statuses = list(Task.objects.filter(request_id=request_id).values_list("status", flat=True))
    if not statuses or any(s not in Task.TERMINAL for s in statuses):
        return
    counts = {s: statuses.count(s) for s in set(statuses)}
    summary = Task.count_in_words(counts)
    if counts.get(Task.Status.COMPLETED) == len(statuses):
        to = AccessRequest.Status.COMPLETED
    elif counts.get(Task.Status.CANCELLED) == len(statuses):
        to = AccessRequest.Status.CANCELLED
    else:
        to = AccessRequest.Status.FAILED
    _move(
        access_request,
        to,
        reason=f"all tasks finished: {summary}",
        actor=actor,
        result_summary=summary,
        completed_at=timezone.now(),
    )
    transaction.on_commit(
        lambda: request_finished.send(sender=AccessRequest, request_id=request_id)
    )
