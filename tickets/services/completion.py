"""Finishing work: the access inventory a completed task updates, settling a request once
all its tasks are terminal, and the email that says how it ended."""

from __future__ import annotations

import logging
from typing import Any

from django.core.mail import send_mail
from django.db import transaction
from django.template import Context, Template
from django.template.loader import render_to_string
from django.utils import timezone

from ..models import AccessRequest, Account, AccountEntitlement, Operation
from ..models import ProvisioningTask as Task
from ..validators import email_problem
from .transitions import Actor, _move

log = logging.getLogger(__name__)


def _record_access(task: Task) -> None:
    """Update the access inventory for a completed task (inside its transaction)."""
    access_request = task.request
    identity = access_request.beneficiary
    name = access_request.account_name or identity.username
    account = Account.objects.filter(identity=identity, endpoint=task.endpoint, active=True).first()
    if task.operation == Operation.CREATE_ACCOUNT:
        if account is None:
            account = Account.objects.create(identity=identity, endpoint=task.endpoint, name=name)
        for entitlement in access_request.entitlements:
            AccountEntitlement.objects.get_or_create(
                account=account, entitlement=entitlement, defaults={"granted_by": task}
            )
    elif task.operation == Operation.REMOVE_ACCOUNT:
        if account is not None:
            Account.objects.filter(pk=account.pk).update(active=False, removed_at=timezone.now())
    elif task.operation == Operation.ADD_ACCESS:
        if account is None:
            account = Account.objects.create(identity=identity, endpoint=task.endpoint, name=name)
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
    transaction.on_commit(lambda: _send_completion_email(request_id))


DEFAULT_EMAIL_TEMPLATE = "tickets/email/request_finished.txt"


class _Shown(dict):
    """Plain values for an email template, printed as `label` when shown whole."""

    def __init__(self, label: str, **values: Any) -> None:
        super().__init__(values)
        self.label = label

    def __str__(self) -> str:
        return self.label


def _email_context(access_request: AccessRequest, tasks: list[Task]) -> dict:
    """What a completion email template sees: plain values, never model objects. An
    admin-written template could otherwise walk from the request to its connection and
    print that connection's secrets."""
    r, identity, endpoint = access_request, access_request.beneficiary, access_request.endpoint
    return {
        "request": _Shown(
            r.number or "",
            number=r.number or "",
            status=r.status,
            get_status_display=r.get_status_display(),
            operation=r.operation,
            get_operation_display=r.get_operation_display(),
            account_name=r.account_name,
            entitlements=list(r.entitlements),
            justification=r.justification,
            result_summary=r.result_summary,
            requester=r.requester_label,
            beneficiary=_Shown(
                str(identity),
                username=identity.username,
                first_name=identity.first_name,
                last_name=identity.last_name,
                email=identity.email,
            ),
            endpoint=_Shown(str(endpoint), name=endpoint.name, display_name=endpoint.display_name),
        ),
        "tasks": [
            {
                "operation": t.operation,
                "get_operation_display": t.get_operation_display(),
                "entitlement": t.entitlement,
                "status": t.status,
                "get_status_display": t.get_status_display(),
                "ticket": t.ticket
                and {"ticket_number": t.ticket.ticket_number, "ticket_id": t.ticket.ticket_id},
            }
            for t in tasks
        ],
    }


def _send_completion_email(request_id: int) -> None:
    """Tell the requester and the beneficiary how the request ended (best effort, logged)."""
    access_request = AccessRequest.objects.select_related(
        "beneficiary", "requester", "endpoint__security_system__service_desk_connection"
    ).get(pk=request_id)
    connection = access_request.endpoint.security_system.service_desk_connection
    context = _email_context(access_request, list(access_request.tasks.select_related("ticket")))
    try:
        if connection is not None and connection.completion_email_template.strip():
            body = Template(connection.completion_email_template).render(Context(context))
        else:
            body = render_to_string(DEFAULT_EMAIL_TEMPLATE, context)
        subject_template = (
            connection.completion_email_subject if connection else ""
        ) or "Access request {{ request.number }}"
        subject = " ".join(Template(subject_template).render(Context(context)).split())
        recipients = _recipients(
            access_request.number,
            access_request.beneficiary.email,
            access_request.requester.email if access_request.requester is not None else "",
        )
        if recipients:
            send_mail(subject, body, None, recipients)
    except Exception:
        log.exception("could not send the completion email of %s", access_request.number)


def _recipients(number: str | None, *addresses: str) -> list[str]:
    """The addresses to send to, each checked again: one stored before the rules, or typed
    into Django's own user admin, must not reach the mail server with a line break in it."""
    recipients = []
    for address in sorted({a for a in addresses if a}):
        problem = email_problem(address)
        if problem:
            log.warning("completion email of %s not sent to one recipient: %s", number, problem)
        else:
            recipients.append(address)
    return recipients
