"""The one place that sends notification emails: who hears about what, in which words.

Each kind of notification is declared once in KINDS: who receives it, its default subject,
and the variables its template sees (declared once in VARIABLES). The default bodies are
templates/tickets/email/<kind>.txt; an admin may replace a subject and body with a
NotificationTemplate row (admin: "Notification templates"). README's table of kinds and
variables is generated from this declaration (`manage.py notification_templates --readme`).

How a notification travels:

1. A service asks for it with `notify_soon(kind, id)`, inside its transaction. Nothing is
   sent then: on commit, the `notification_wanted` signal asks tickets.jobs to queue
   `send_notification`, so a rolled-back change mails nobody and a slow mail server never
   holds a transition (this package does not import the jobs).
2. The job calls `notification_send`: it reads the rows again, renders the template from
   plain values (never model objects: an admin-written template must not walk from a
   request to its connection's secrets), checks every address again, and sends.
3. A transient mail error (the server disconnects, refuses for now with a 4xx, times out)
   is retried after RETRY_DELAYS; a permanent one is logged. Either way the transition
   stands.

Operator notifications (a task failed for good, a connection that cannot log in, a flagged
task) go out at most once per subject and hour: the subject's key and when it was last
mailed are a NotificationThrottle row, claimed with a conditional UPDATE, so every worker
on every machine sees the same throttle.
"""

from __future__ import annotations

import logging
import smtplib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.template import Context, Template
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from connections.masking import mask
from connections.models import Connection

from ..models import (
    OPERATE_PERMISSION,
    AccessRequest,
    NotificationTemplate,
    NotificationThrottle,
    person_name,
)
from ..models import ProvisioningTask as Task
from ..validators import email_problem
from .governance import approval_step, deciders, users_with_permission

log = logging.getLogger(__name__)

# Sent on commit with kind= and ref= (an id); tickets/apps.py connects tickets.jobs to it.
notification_wanted = Signal()

# Seconds to wait before each further try after a transient mail error.
RETRY_DELAYS = (1, 5)
# At most one operator mail per subject in this time.
OPERATOR_THROTTLE = timedelta(hours=1)
# The same period in words, for the kinds' descriptions and the job's summary.
_THROTTLE_WORDS = f"{int(OPERATOR_THROTTLE.total_seconds() // 60)} min"
_OPERATORS = f"the operators, at most once every {_THROTTLE_WORDS} per connection"

APPROVAL_NEEDED = "approval_needed"
REQUEST_APPROVED = "request_approved"
REQUEST_REJECTED = "request_rejected"
REQUEST_CANCELLED = "request_cancelled"
REQUEST_COMPLETED = "request_completed"
REQUEST_COMPLETED_WITH_FAILURES = "request_completed_with_failures"
REQUEST_DISCONTINUED = "request_discontinued"
TASK_FAILED = "task_failed"
TASK_FLAGGED = "task_flagged"
CONNECTION_LOGIN_FAILED = "connection_login_failed"


@dataclass(frozen=True)
class Kind:
    name: str
    when: str  # one line for admins (README, admin)
    recipients: str  # who receives it, in words
    subject: str  # the default subject, a Django template
    variables: tuple[str, ...]  # the groups of VARIABLES its template sees
    operators: bool = False  # throttled, to the operators


# The variables a notification template sees, by group: name → meaning.
VARIABLES: dict[str, dict[str, str]] = {
    "request": {
        "request": "the request's number (REQ-000042)",
        "request.number": "the same number",
        "request.get_status_display": "its status in words",
        "request.get_operation_display": "what it asks for, in words (Create account …)",
        "request.account_name": "the account on the endpoint",
        "request.entitlements": "the entitlements it names, a list",
        "request.justification": "why the access is needed, as the requester wrote it",
        "request.requester": 'who filed it: a display name, or "API client NAME"',
        "request.beneficiary": "the person who gets the access, by name",
        "request.beneficiary.email": "their email address",
        "request.endpoint": "the endpoint's display name",
        "request.application": "the application's display name",
        "request.result_summary": "how its tasks ended, counted",
        "request_url": "the request's page in the console",
    },
    "decision": {
        "decided_by": "who approved or rejected it (or cancelled it)",
        "comment": "the approver's comment (the reason of a rejection)",
        "step": "which approval it waits for, when the application requires two",
        "inbox_url": "the approvals inbox in the console",
    },
    "tasks": {
        "tasks": "the request's tasks, a list; each has get_operation_display, entitlement, "
        "get_status_display, ticket_number, outcome_subject and outcome_reason (the subject "
        "and the start of the agent's closing article, when the ticket system gave them) "
        "and outcome_label (the words that introduce them)",
    },
    "operator": {
        "subject": "what went wrong, in one line",
        "detail": "the error or flag, as recorded",
        "connection": "the connection's name",
        "task_url": "the request page of the task concerned (empty for a connection)",
        "board_url": "the ticket board in the console",
    },
}

_REQUEST = ("request", "decision", "tasks")
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            APPROVAL_NEEDED,
            "a request waits for a decision (new, or after its first of two approvals)",
            "the approvers who may decide it",
            "{{ request.number }} waits for your approval",
            _REQUEST,
        ),
        Kind(
            REQUEST_APPROVED,
            "a request was approved",
            "its requester and its beneficiary",
            "{{ request.number }} was approved",
            _REQUEST,
        ),
        Kind(
            REQUEST_REJECTED,
            "a request was rejected",
            "its requester and its beneficiary",
            "{{ request.number }} was rejected",
            _REQUEST,
        ),
        Kind(
            REQUEST_CANCELLED,
            "a request was cancelled",
            "its requester and its beneficiary",
            "{{ request.number }} was cancelled",
            _REQUEST,
        ),
        Kind(
            REQUEST_COMPLETED,
            "every task of a request was completed",
            "its requester and its beneficiary",
            "{{ request.number }} is completed",
            _REQUEST,
        ),
        Kind(
            REQUEST_COMPLETED_WITH_FAILURES,
            "a request ended with a task that failed",
            "its requester and its beneficiary",
            "{{ request.number }} ended with failures",
            _REQUEST,
        ),
        Kind(
            REQUEST_DISCONTINUED,
            "a request ended with a ticket the service desk discontinued",
            "its requester and its beneficiary",
            "{{ request.number }} was discontinued by the service desk",
            _REQUEST,
        ),
        Kind(
            TASK_FAILED,
            "a task failed for good (no tries left, or a permanent error)",
            _OPERATORS,
            "Provisioning fails on {{ connection }}",
            ("operator",),
            operators=True,
        ),
        Kind(
            TASK_FLAGGED,
            "a task was flagged for an operator (unmapped state, merge, stale ticket, ticket "
            "reopened, a note its ticket did not get)",
            _OPERATORS,
            "Tickets on {{ connection }} need an operator",
            ("operator",),
            operators=True,
        ),
        Kind(
            CONNECTION_LOGIN_FAILED,
            "a connection cannot log in to its ticket system",
            _OPERATORS,
            "{{ connection }} cannot log in to its ticket system",
            ("operator",),
            operators=True,
        ),
    )
}


def variable_names(kind: str) -> list[str]:
    return [name for group in KINDS[kind].variables for name in VARIABLES[group]]


def default_body_template(kind: str) -> str:
    return f"tickets/email/{kind}.txt"


# --- asking for one ---------------------------------------------------------------------------


def notify_soon(kind: str, ref: int) -> None:
    """Queue notification `kind` about row `ref` once the current transaction commits."""
    assert kind in KINDS, kind
    transaction.on_commit(lambda: notification_wanted.send(sender=None, kind=kind, ref=ref))


def after_request_move(access_request: AccessRequest, to: str) -> None:
    """The notification a request's new status calls for, if any (from transitions._move)."""
    simple: dict[str, str] = {
        AccessRequest.Status.APPROVED: REQUEST_APPROVED,
        AccessRequest.Status.REJECTED: REQUEST_REJECTED,
        AccessRequest.Status.CANCELLED: REQUEST_CANCELLED,
    }
    if to in simple:
        notify_soon(simple[to], access_request.pk)
    elif to in (AccessRequest.Status.COMPLETED, AccessRequest.Status.FAILED):
        notify_soon(REQUEST_COMPLETED, access_request.pk)  # the kind is settled when sent


def after_task_move(task: Task, to: str) -> None:
    if to == Task.Status.FAILED:
        notify_soon(TASK_FAILED, task.pk)


def after_otrs_error(connection_id: int, exc: Exception) -> None:
    """A call failed: when the ticket system refused the login, tell the operators."""
    if getattr(exc, "auth", False):
        notify_soon(CONNECTION_LOGIN_FAILED, connection_id)


# --- sending ----------------------------------------------------------------------------------


def _url(path: str) -> str:
    return settings.CONSOLE_URL.rstrip("/") + path


class _Shown(dict):
    """Plain values for a template, printed as `label` when shown whole."""

    def __init__(self, label: str, **values: Any) -> None:
        super().__init__(values)
        self.label = label

    def __str__(self) -> str:
        return self.label


def finished_kind(access_request: AccessRequest, statuses: list[str]) -> str:
    """Which "finished" notification a settled request gets."""
    if access_request.status == AccessRequest.Status.COMPLETED:
        return REQUEST_COMPLETED
    if access_request.status == AccessRequest.Status.CANCELLED:
        return REQUEST_CANCELLED
    if Task.Status.DISCONTINUED in statuses and Task.Status.FAILED not in statuses:
        return REQUEST_DISCONTINUED
    return REQUEST_COMPLETED_WITH_FAILURES  # a task failed, or some were cancelled


def request_context(access_request: AccessRequest, tasks: list[Task]) -> dict:
    """What a request notification's template sees: plain values, never model objects."""
    r, identity, endpoint = access_request, access_request.beneficiary, access_request.endpoint
    requester = person_name(r.requester) or r.requester_display
    decided_by = r.decided_by_label or person_name(r.decided_by) or person_name(r.first_approved_by)
    return {
        "request": _Shown(
            r.number or "",
            number=r.number or "",
            status=r.status,
            get_status_display=r.get_status_display(),
            operation=r.operation,
            get_operation_display=r.get_operation_display(),
            account_name=r.account_name or identity.username,
            entitlements=list(r.entitlements),
            justification=r.justification,
            result_summary=r.result_summary,
            requester=requester,
            beneficiary=_Shown(
                str(identity),
                username=identity.username,
                first_name=identity.first_name,
                last_name=identity.last_name,
                email=identity.email,
            ),
            endpoint=_Shown(str(endpoint), name=endpoint.name, display_name=str(endpoint)),
            application=str(endpoint.security_system),
        ),
        "request_url": _url(r.get_absolute_url()),
        "inbox_url": _url(reverse("tickets:inbox")),
        "decided_by": decided_by,
        "comment": r.decision_comment,
        "step": approval_step(r) if r.status == AccessRequest.Status.PENDING_APPROVAL else "",
        "tasks": [
            {
                "operation": t.operation,
                "get_operation_display": t.get_operation_display(),
                "entitlement": t.entitlement,
                "status": t.status,
                "get_status_display": t.get_status_display(),
                "ticket": t.ticket
                and {"ticket_number": t.ticket.ticket_number, "ticket_id": t.ticket.ticket_id},
                "ticket_number": t.ticket.ticket_number if t.ticket else "",
                # The agent's closing article: its subject and the start of its text.
                "outcome_label": Task.OUTCOME_LABEL,
                "outcome_subject": t.outcome_subject,
                "outcome_reason": t.outcome_reason,
            }
            for t in tasks
        ],
    }


def operators() -> list[User]:
    """Active users holding the operator role through a group or directly."""
    return list(users_with_permission(OPERATE_PERMISSION).order_by("pk"))


def _claim_throttle(key: str) -> bool:
    """Take the right to mail about `key` now; False when a mail about it went out within
    OPERATOR_THROTTLE."""
    now = timezone.now()
    key = key[:200]
    if NotificationThrottle.objects.filter(key=key, sent_at__lt=now - OPERATOR_THROTTLE).update(
        sent_at=now
    ):
        return True
    try:
        with transaction.atomic():
            NotificationThrottle.objects.create(key=key, sent_at=now)
    except IntegrityError:
        return False
    return True


@dataclass
class Message:
    kind: str
    context: dict
    recipients: list[str]
    connection: Connection | None = None  # whose completion email replaces the default
    throttle_key: str = ""


def _request_message(kind: str, ref: int) -> Message | None:
    access_request = (
        AccessRequest.objects.select_related(
            "beneficiary",
            "requester",
            "decided_by",
            "first_approved_by",
            "api_client",
            "endpoint__security_system__service_desk_connection",
        )
        .filter(pk=ref)
        .first()
    )
    if access_request is None:
        return None
    tasks = list(access_request.tasks.select_related("ticket").order_by("id"))
    connection = None
    if kind == REQUEST_COMPLETED:
        kind = finished_kind(access_request, [t.status for t in tasks])
        if kind != REQUEST_CANCELLED:
            connection = access_request.endpoint.security_system.service_desk_connection
    if kind == APPROVAL_NEEDED:
        if access_request.status != AccessRequest.Status.PENDING_APPROVAL:
            return None
        addresses = [u.email for u in deciders(access_request)]
    else:
        requester = access_request.requester
        addresses = [access_request.beneficiary.email, requester.email if requester else ""]
    return Message(kind, request_context(access_request, tasks), addresses, connection)


def _operator_message(kind: str, ref: int) -> Message | None:
    if kind == CONNECTION_LOGIN_FAILED:
        connection = Connection.objects.filter(pk=ref).first()
        if connection is None:
            return None
        detail, task_url = connection.last_error, ""
        subject = f"{connection} cannot log in"
    else:
        task = Task.objects.select_related("connection", "request").filter(pk=ref).first()
        if task is None:
            return None
        connection = task.connection
        detail = task.flag if kind == TASK_FLAGGED else task.last_error
        task_url = _url(task.request.get_absolute_url())
        subject = (
            f"{task.request} · task {task.pk}: {'flagged' if kind == TASK_FLAGGED else 'failed'}"
        )
    context = {
        "subject": subject,
        "detail": mask(detail, connection.secret_values()),
        "connection": str(connection),
        "task_url": task_url,
        "board_url": _url(reverse("tickets:board")),
    }
    return Message(
        kind,
        context,
        [u.email for u in operators()],
        throttle_key=f"{kind}:{connection.pk}",
    )


def _render(message: Message) -> tuple[str, str]:
    """Subject and body: the connection's completion email, an admin's template, or the default."""
    context = Context(message.context, autoescape=False)
    connection = message.connection
    if connection is not None and connection.completion_email_template.strip():
        subject_source = connection.completion_email_subject or KINDS[message.kind].subject
        body = Template(connection.completion_email_template).render(context)
    else:
        custom = NotificationTemplate.objects.filter(kind=message.kind).first()
        subject_source = (custom and custom.subject) or KINDS[message.kind].subject
        if custom and custom.body:
            body = Template(custom.body).render(context)
        else:
            body = render_to_string(default_body_template(message.kind), message.context)
    subject = " ".join(Template(subject_source).render(context).split())
    return subject, body


def recipients(kind: str, addresses: list[str]) -> list[str]:
    """The addresses to send to, each checked again: one stored before the rules, or typed
    into Django's own user admin, must not reach the mail server with a line break in it."""
    checked = []
    for address in sorted({a for a in addresses if a}):
        problem = email_problem(address)
        if problem:
            log.warning("%s notification not sent to one recipient: %s", kind, problem)
        else:
            checked.append(address)
    return checked


def _transient(exc: Exception) -> bool:
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(
        exc,
        smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError | ConnectionError | TimeoutError,
    )


def notification_send(*, kind: str, ref: int) -> str:
    """Render and send one notification now; what happened, in words (the job's summary)."""
    if kind not in KINDS:
        return f"no notification kind {kind!r}"
    build = _operator_message if KINDS[kind].operators else _request_message
    message = build(kind, ref)
    if message is None:
        return f"{kind} {ref}: nothing to send any more"
    to = recipients(message.kind, message.recipients)
    if not to:
        return f"{message.kind} {ref}: nobody to send to"
    if message.throttle_key and not _claim_throttle(message.throttle_key):
        return f"{message.kind} {ref}: already mailed in the last {_THROTTLE_WORDS}"
    try:
        subject, body = _render(message)
    except Exception:
        log.exception("the %s notification of %s could not be rendered", message.kind, ref)
        return f"{message.kind} {ref}: template error"
    for delay in (*RETRY_DELAYS, None):
        try:
            send_mail(subject, body, None, to)
            return f"{message.kind} {ref}: sent to {len(to)}"
        except Exception as exc:
            if delay is None or not _transient(exc):
                log.warning("the %s notification of %s was not sent: %s", message.kind, ref, exc)
                return f"{message.kind} {ref}: not sent ({exc})"
            time.sleep(delay)
    return ""  # not reached: the loop returns


def markdown_table() -> str:
    """README's list of the notifications and their variables (`manage.py
    notification_templates --markdown`)."""
    rows = [
        "| notification | sent when | to | default subject | variables |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS.values():
        groups = ", ".join(kind.variables)
        rows.append(
            f"| `{kind.name}` | {kind.when} | {kind.recipients} | `{kind.subject}` | {groups} |"
        )
    rows += ["", "| variables | name | meaning |", "|---|---|---|"]
    for group, names in VARIABLES.items():
        rows += [f"| {group} | `{{{{ {name} }}}}` | {meaning} |" for name, meaning in names.items()]
    return "\n".join(rows) + "\n"
