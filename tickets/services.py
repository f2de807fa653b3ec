"""Every state change of requests and tasks, and the event it records.

Views, the API, admin actions, management commands and django-q2 jobs all call these
functions; none of them changes a status itself. Rules that hold everywhere here:

- A transition is a conditional UPDATE (`filter(id=…, status=<from>)`) plus its TaskEvent,
  in one transaction. When the row has moved on, nothing is written and TransitionError
  says what state it is in now.
- No HTTP call happens inside a transaction. A ticket system can be slow; a row lock or
  SQLite's write lock must never wait for it.
- A claimed task is marked `outcome_unknown` in the claim's transaction, before any
  create call is sent. A worker killed mid-call, a timeout or a reset therefore leave a
  mark, and the next attempt searches OTRS for the task's correlation key before it
  creates anything (reconcile-before-create).
"""

from __future__ import annotations

import logging
import queue
import random
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.db import DatabaseError, IntegrityError, OperationalError, transaction
from django.db import connections as db_connections
from django.db.models import F, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.template import Context, Template
from django.template.loader import render_to_string
from django.utils import timezone

from connections.client import CreatedTicket, OTRSError, TicketClient, TicketStatus
from connections.models import ApiCall, Connection, Endpoint

from .models import (
    ACCESS_OPERATIONS,
    APPROVE_PERMISSION,
    OPERATE_PERMISSION,
    AccessRequest,
    Account,
    AccountEntitlement,
    ApiClient,
    Identity,
    JobRun,
    Operation,
    ProvisioningTask,
    TaskEvent,
    Ticket,
)

log = logging.getLogger(__name__)

Task = ProvisioningTask
TS = ProvisioningTask.Status
RS = AccessRequest.Status

# A claimed task belongs to its worker for this long; after that another worker may take
# it over (and searches OTRS first, since the first worker may have created the ticket).
LEASE = timedelta(minutes=15)
# A batched run checks the lease in the database before a create call only for a task
# claimed longer ago than this (one that waited behind a slow OTRS, say).
VERIFY_AFTER_SECONDS = 2.0

# The state machines and the outcome map are declared beside their enums in tickets.models.
TASK_TRANSITIONS = ProvisioningTask.TRANSITIONS
REQUEST_TRANSITIONS = AccessRequest.TRANSITIONS
OUTCOME_TO_STATUS = ProvisioningTask.OUTCOME_STATUS


class TransitionError(Exception):
    """The change is not allowed from the state the row is in now. Nothing was written."""


class RequestInvalid(Exception):
    """A submitted request is wrong. `fields` maps a field name to its messages."""

    def __init__(self, fields: dict[str, list[str]]):
        self.fields = fields
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()))


@dataclass(frozen=True)
class Actor:
    """Who caused a change: a person, a job, the webhook, an API client or the system."""

    kind: str
    label: str
    user: AbstractBaseUser | None = None

    @classmethod
    def person(cls, user: AbstractBaseUser) -> Actor:
        return cls(TaskEvent.Actor.PERSON, user.get_username(), user)

    @classmethod
    def job(cls, name: str) -> Actor:
        return cls(TaskEvent.Actor.JOB, name)

    @classmethod
    def webhook(cls, connection: Connection) -> Actor:
        return cls(TaskEvent.Actor.WEBHOOK, f"webhook:{connection.name}")

    @classmethod
    def api(cls, client: ApiClient) -> Actor:
        return cls(TaskEvent.Actor.API, f"api:{client.name}")


SYSTEM = Actor(TaskEvent.Actor.SYSTEM, "system")


# --- events and transitions ----------------------------------------------------------------


def _event(
    *, request_id: int, task_id: int | None, frm: str, to: str, reason: str, actor: Actor
) -> TaskEvent:
    event = _event_row(
        request_id=request_id, task_id=task_id, frm=frm, to=to, reason=reason, actor=actor
    )
    event.save()
    return event


def _event_row(
    *, request_id: int, task_id: int | None, frm: str, to: str, reason: str, actor: Actor
) -> TaskEvent:
    """An unsaved event, for bulk_create."""
    return TaskEvent(
        request_id=request_id,
        task_id=task_id,
        from_status=frm,
        to_status=to,
        reason=reason[:2000],
        actor_kind=actor.kind,
        actor_user=actor.user if actor.user is not None and actor.user.pk else None,
        actor_label=actor.label[:200],
    )


def _move(
    obj: Task | AccessRequest,
    to: str,
    *,
    reason: str,
    actor: Actor,
    frm: str | None = None,
    guard: dict | None = None,
    **fields,
):
    """Move a task or request from its current (or the given) status to `to`, with its event.

    Must run inside a transaction. Raises TransitionError when the move is not allowed or
    the row has moved on; nothing is written then. The object is updated in place.
    `guard` adds conditions, e.g. that the worker moving a claimed task still holds its lease.
    """
    model = type(obj)
    is_task = model is Task
    label = f"Task {obj.pk}" if is_task else f"Request {obj}"
    frm = frm or obj.status
    if to not in (TASK_TRANSITIONS if is_task else REQUEST_TRANSITIONS)[frm]:
        raise TransitionError(f"{label} is {frm}; it cannot become {to}.")
    now = timezone.now()
    rows = model.objects.filter(pk=obj.pk, status=frm, **(guard or {}))
    if rows.update(status=to, updated_at=now, **fields) != 1:
        current = model.objects.filter(pk=obj.pk).values_list("status", flat=True).first()
        raise TransitionError(f"{label} is {current} now, not {frm}; nothing was changed.")
    _event(
        request_id=obj.request_id if is_task else obj.pk,
        task_id=obj.pk if is_task else None,
        frm=frm,
        to=to,
        reason=reason,
        actor=actor,
    )
    obj.status, obj.updated_at = to, now
    for name, value in fields.items():
        setattr(obj, name, value)
    return obj


_move_task = _move_request = _move


# --- submit, decide, cancel, retry ------------------------------------------------------------


def _identity_for(beneficiary: Identity | dict, errors: dict[str, list[str]]) -> Identity | None:
    if isinstance(beneficiary, Identity):
        return beneficiary
    if not isinstance(beneficiary, dict):
        errors.setdefault("beneficiary", []).append("must be an object with a username.")
        return None
    username = str(beneficiary.get("username") or "").strip()
    if not username:
        errors.setdefault("beneficiary.username", []).append("is required.")
        return None
    if len(username) > 150:
        errors.setdefault("beneficiary.username", []).append("is longer than 150 characters.")
        return None
    identity = Identity.objects.filter(username=username).first()
    if identity is not None:
        return identity
    values = {k: str(beneficiary.get(k) or "")[:150] for k in ("first_name", "last_name")}
    email = str(beneficiary.get("email") or "")
    if email and ("@" not in email or len(email) > 254):
        errors.setdefault("beneficiary.email", []).append(f"{email!r} is not an email address.")
        return None
    return Identity(username=username, email=email, **values)


def _check_operation_fits(
    *,
    identity: Identity,
    endpoint: Endpoint,
    operation: str,
    account_name: str,
    entitlements: list[str],
    errors: dict[str, list[str]],
) -> None:
    """Refuse an operation that does not fit the access that exists today."""
    account = None
    if identity.pk:
        account = Account.objects.filter(identity=identity, endpoint=endpoint, active=True).first()
    who = identity.username
    if operation == Operation.CREATE_ACCOUNT and account is not None:
        errors.setdefault("operation", []).append(
            f"{who} already has the account {account.name!r} on {endpoint.name}."
        )
    elif operation == Operation.CREATE_ACCOUNT:
        holder = (
            Account.objects.filter(endpoint=endpoint, name=account_name, active=True)
            .select_related("identity")
            .first()
        )
        if holder is not None:
            errors.setdefault("account_name", []).append(
                f"{account_name!r} on {endpoint.name} already belongs to {holder.identity.username}."
            )
    if operation in (Operation.REMOVE_ACCOUNT, *ACCESS_OPERATIONS) and account is None:
        errors.setdefault("operation", []).append(
            f"{who} has no account on {endpoint.name}, so there is nothing to "
            f"{'remove' if operation == Operation.REMOVE_ACCOUNT else 'change'}."
            + (" Request create_account first." if operation == Operation.ADD_ACCESS else "")
        )
    if operation in ACCESS_OPERATIONS and not entitlements:
        errors.setdefault("entitlements", []).append(
            "name at least one entitlement for an access change."
        )
    allowed = set(endpoint.entitlements or [])
    unknown = [e for e in entitlements if allowed and e not in allowed]
    if unknown:
        errors.setdefault("entitlements", []).append(
            f"not offered by {endpoint.name}: {', '.join(unknown)}."
        )
    if account is not None and operation in ACCESS_OPERATIONS:
        held = set(account.entitlements.values_list("entitlement", flat=True))
        if operation == Operation.ADD_ACCESS:
            already = [e for e in entitlements if e in held]
            if already:
                errors.setdefault("entitlements", []).append(
                    f"{who} already has: {', '.join(already)}."
                )
        else:
            missing = [e for e in entitlements if e not in held]
            if missing:
                errors.setdefault("entitlements", []).append(
                    f"{who} does not have: {', '.join(missing)}."
                )


def request_submit(
    *,
    beneficiary: Identity | dict,
    endpoint: Endpoint | str,
    operation: str,
    requester: AbstractBaseUser | None = None,
    api_client: ApiClient | None = None,
    account_name: str = "",
    entitlements: Iterable[str] = (),
    justification: str = "",
    idempotency_key: str = "",
    upstream_approver: str = "",
) -> AccessRequest:
    """Validate and record a new request. A trusted API client's request arrives approved.

    Raises RequestInvalid naming every wrong field; nothing is written then.
    """
    errors: dict[str, list[str]] = {}
    if operation not in Operation.values:
        errors.setdefault("operation", []).append(f"must be one of {', '.join(Operation.values)}.")
    if isinstance(endpoint, str):
        name = endpoint
        endpoint = Endpoint.objects.select_related("security_system").filter(name=name).first()
        if endpoint is None:
            errors.setdefault("endpoint", []).append(f"there is no endpoint named {name!r}.")
    if (
        isinstance(endpoint, Endpoint)
        and endpoint.security_system.service_desk_connection_id is None
    ):
        errors.setdefault("endpoint", []).append(
            f"{endpoint.name} has no service-desk connection; an admin must set one on its security system."
        )
    entitlements = [str(e).strip() for e in entitlements if str(e).strip()]
    if len(set(entitlements)) != len(entitlements):
        errors.setdefault("entitlements", []).append("lists an entitlement twice.")
    identity = _identity_for(beneficiary, errors)
    account_name = (account_name or (identity.username if identity else "")).strip()
    if len(account_name) > 200:
        errors.setdefault("account_name", []).append("is longer than 200 characters.")
    if identity is not None and isinstance(endpoint, Endpoint) and operation in Operation.values:
        _check_operation_fits(
            identity=identity,
            endpoint=endpoint,
            operation=operation,
            account_name=account_name,
            entitlements=entitlements,
            errors=errors,
        )
    if errors:
        raise RequestInvalid(errors)
    assert identity is not None and isinstance(endpoint, Endpoint)

    actor = (
        Actor.api(api_client) if api_client else Actor.person(requester) if requester else SYSTEM
    )
    with transaction.atomic():
        if identity.pk is None:
            identity.save()
        access_request = AccessRequest.objects.create(
            requester=requester,
            api_client=api_client,
            beneficiary=identity,
            endpoint=endpoint,
            operation=operation,
            account_name=account_name,
            entitlements=entitlements,
            justification=justification,
            idempotency_key=idempotency_key,
        )
        access_request.number = f"REQ-{access_request.pk:06d}"
        AccessRequest.objects.filter(pk=access_request.pk).update(number=access_request.number)
        _event(
            request_id=access_request.pk,
            task_id=None,
            frm="",
            to=RS.PENDING_APPROVAL,
            reason=f"submitted: {access_request.get_operation_display()} on {endpoint.name}",
            actor=actor,
        )
        if api_client is not None and api_client.trusted:
            label = upstream_approver or f"upstream approval via {api_client.name}"
            _approve(
                access_request, actor=actor, comment="approved upstream", decided_by_label=label
            )
    return access_request


def _can(user: AbstractBaseUser | None, permission: str) -> bool:
    return bool(user and user.is_active and user.has_perm(permission))


def _check_decider(access_request: AccessRequest, by: AbstractBaseUser, verb: str) -> None:
    if not _can(by, APPROVE_PERMISSION):
        raise PermissionDenied(f"You are not allowed to {verb} requests.")
    if access_request.requester_id and access_request.requester_id == by.pk:
        raise PermissionDenied(f"Nobody may {verb} their own request.")


def request_approve(
    *, access_request: AccessRequest, by: AbstractBaseUser, comment: str = ""
) -> AccessRequest:
    """Approve a pending request and create its tasks. Nobody approves their own request."""
    _check_decider(access_request, by, "approve")
    with transaction.atomic():
        return _approve(access_request, actor=Actor.person(by), comment=comment, decided_by=by)


def _approve(
    access_request: AccessRequest, *, actor: Actor, comment: str, **decision
) -> AccessRequest:
    now = timezone.now()
    access_request = _move_request(
        access_request,
        RS.APPROVED,
        frm=RS.PENDING_APPROVAL,
        reason=f"approved{': ' + comment if comment else ''}",
        actor=actor,
        decided_at=now,
        decision_comment=comment,
        **decision,
    )
    endpoint = access_request.endpoint
    system = endpoint.security_system
    if system.service_desk_connection_id is None:
        raise TransitionError(
            f"{endpoint.name} has no service-desk connection any more; an admin must set one on "
            f"security system {system.name} before this request can be approved."
        )
    if access_request.operation in ACCESS_OPERATIONS:
        entitlements = list(access_request.entitlements)
    else:
        entitlements = [""]
    tasks = []
    for entitlement in entitlements:
        task = Task.objects.create(
            request=access_request,
            endpoint=endpoint,
            connection_id=system.service_desk_connection_id,
            operation=access_request.operation,
            entitlement=entitlement,
            max_attempts=system.provisioning_tries,
            next_attempt_at=now,
            correlation_key=new_correlation_key(),
        )
        _event(
            request_id=access_request.pk,
            task_id=task.pk,
            frm="",
            to=TS.NEW,
            reason="task created",
            actor=actor,
        )
        tasks.append(task)
    if system.instant_provisioning:
        ids = [t.pk for t in tasks]
        transaction.on_commit(lambda: _enqueue_instant(ids))
    return access_request


def _enqueue_instant(task_ids: list[int]) -> None:
    from django_q.tasks import async_task

    for task_id in task_ids:
        async_task("tickets.jobs.provision_task", task_id, task_name=f"provision-task-{task_id}")


def new_correlation_key() -> str:
    """A short unique token that goes into the ticket title, so a ticket can be found again."""
    return "BR-" + secrets.token_hex(5).upper()


def request_reject(
    *, access_request: AccessRequest, by: AbstractBaseUser, comment: str = ""
) -> AccessRequest:
    _check_decider(access_request, by, "reject")
    with transaction.atomic():
        return _move_request(
            access_request,
            RS.REJECTED,
            frm=RS.PENDING_APPROVAL,
            reason=f"rejected{': ' + comment if comment else ''}",
            actor=Actor.person(by),
            decided_by=by,
            decided_at=timezone.now(),
            decision_comment=comment,
            completed_at=timezone.now(),
        )


def request_cancel(
    *,
    access_request: AccessRequest,
    by: AbstractBaseUser | None = None,
    actor: Actor | None = None,
    reason: str = "",
) -> AccessRequest:
    """Cancel a request and its unfinished tasks. A requester may cancel their own pending request.

    Tickets already open in OTRS are left to the agents there; the timeline says so.
    """
    actor = actor or (Actor.person(by) if by else SYSTEM)
    if by is not None and not _can(by, OPERATE_PERMISSION):
        own_pending = (
            access_request.requester_id == by.pk and access_request.status == RS.PENDING_APPROVAL
        )
        if not own_pending:
            raise PermissionDenied("You are not allowed to cancel this request.")
    with transaction.atomic():
        for task in access_request.tasks.exclude(status__in=Task.TERMINAL):
            note = " (its OTRS ticket stays open; close it there)" if task.ticket_id else ""
            _move_task(
                task,
                TS.CANCELLED,
                reason=f"cancelled with the request{note}",
                actor=actor,
                completed_at=timezone.now(),
            )
        return _move_request(
            access_request,
            RS.CANCELLED,
            reason=reason or "cancelled",
            actor=actor,
            completed_at=timezone.now(),
        )


def task_retry(
    *, task: Task, by: AbstractBaseUser | None = None, actor: Actor | None = None
) -> Task:
    """Send a failed task (or one waiting to retry) back to the queue, with fresh tries."""
    if by is not None and not _can(by, OPERATE_PERMISSION):
        raise PermissionDenied("You are not allowed to retry tasks.")
    actor = actor or (Actor.person(by) if by else SYSTEM)
    access_request = AccessRequest.objects.get(pk=task.request_id)
    if access_request.status in (RS.CANCELLED, RS.REJECTED):
        raise TransitionError(
            f"Task {task.pk} belongs to a request that was cancelled or rejected; it cannot be retried."
        )
    if task.status not in (TS.FAILED, TS.RETRY_WAIT):
        raise TransitionError(
            f"Task {task.pk} is {task.get_status_display().lower()}; only failed or waiting tasks can be retried."
        )
    with transaction.atomic():
        task = _move_task(
            task,
            TS.NEW,
            reason="manual retry",
            actor=actor,
            attempts=0,
            next_attempt_at=timezone.now(),
            last_error="",
            lease_until=None,
        )
        if access_request.status == RS.FAILED:
            _move_request(
                access_request,
                RS.IN_PROGRESS,
                reason=f"task {task.pk} retried",
                actor=actor,
                completed_at=None,
            )
    connection = task.connection
    if task.endpoint.security_system.instant_provisioning and connection.enabled:
        transaction.on_commit(lambda: _enqueue_instant([task.pk]))
    return task


def tasks_retry(*, tasks: QuerySet[Task], by: AbstractBaseUser) -> tuple[list[int], list[str]]:
    """Retry many tasks (the board's and the admin's bulk buttons): the ids retried, and
    why each other one was refused."""
    done, refused = [], []
    for task in tasks.select_related("connection", "endpoint__security_system").order_by("id"):
        try:
            task_retry(task=task, by=by)
            done.append(task.pk)
        except (TransitionError, PermissionDenied) as exc:
            refused.append(str(exc))
    return done, refused


def task_cancel(
    *, task: Task, by: AbstractBaseUser | None = None, actor: Actor | None = None
) -> Task:
    if by is not None and not _can(by, OPERATE_PERMISSION):
        raise PermissionDenied("You are not allowed to cancel tasks.")
    actor = actor or (Actor.person(by) if by else SYSTEM)
    if task.is_terminal:
        raise TransitionError(f"Task {task.pk} is already {task.get_status_display().lower()}.")
    with transaction.atomic():
        note = " (its OTRS ticket stays open; close it there)" if task.ticket_id else ""
        task = _move_task(
            task, TS.CANCELLED, reason=f"cancelled{note}", actor=actor, completed_at=timezone.now()
        )
        _settle_request(task.request_id, actor=actor)
    return task


# --- template context -----------------------------------------------------------------------


# Everything a task's template context reads, fetched with the task in one query.
CONTEXT_RELATIONS = (
    "connection",
    "request__beneficiary__manager",
    "request__requester",
    "request__api_client",
    "endpoint__security_system",
)


def task_context(task_id: int | Task) -> dict:
    """The variables a connection's templates see for one task (`${user.firstname}` …).

    Takes a task id, or a task already loaded with CONTEXT_RELATIONS.
    """
    task = (
        task_id
        if isinstance(task_id, Task)
        else Task.objects.select_related(*CONTEXT_RELATIONS).get(pk=task_id)
    )
    access_request = task.request
    identity = access_request.beneficiary
    endpoint = task.endpoint
    system = endpoint.security_system
    return {
        "user": {
            **{str(k): v for k, v in (identity.properties or {}).items()},
            "_": identity.username,
            "username": identity.username,
            "firstname": identity.first_name,
            "lastname": identity.last_name,
            "email": identity.email,
            "manager": identity.manager.username if identity.manager else "",
        },
        "requestor": access_request.requester_label,
        "task": {
            "_": str(task.pk),
            "id": task.pk,
            "operation": task.operation,
            "operationLabel": task.get_operation_display(),
            "entitlement": task.entitlement,
            "accountName": access_request.account_name,
            "requestNumber": access_request.number or "",
            "justification": access_request.justification,
        },
        "endpoint": {
            **{str(k): v for k, v in (endpoint.attributes or {}).items()},
            "_": endpoint.name,
            "name": endpoint.name,
            "displayName": endpoint.display_name or endpoint.name,
        },
        "securitySystem": {
            "_": system.name,
            "name": system.name,
            "displayName": system.display_name or system.name,
        },
        "entitlements": list(access_request.entitlements)
        or ([task.entitlement] if task.entitlement else []),
        "entitlement": task.entitlement,
        "account": access_request.account_name,
        "correlationKey": task.correlation_key,
    }


def agent_link(connection: Connection, ticket_id: int) -> str:
    """The OTRS agent view of a ticket, derived from the web service URL of the create call."""
    calls = (connection.create_ticket_json or {}).get("call") or []
    url = str(calls[0].get("url", "")) if calls and isinstance(calls[0], dict) else ""
    marker = "/nph-genericinterface.pl"
    if marker not in url:
        return ""
    return f"{url.split(marker)[0]}/index.pl?Action=AgentTicketZoom;TicketID={int(ticket_id)}"


# --- provisioning (the WSRETRY equivalent) ----------------------------------------------------


def _due_row(now: datetime) -> Q:
    """Due, judged on the task row's own columns only.

    The claim UPDATE must use only these: a condition through a join makes Django write
    `WHERE id IN (SELECT …)`, and PostgreSQL does not re-check such a subquery against the
    row version a concurrent claim just committed, so two workers could both "win".
    """
    due = Q(status__in=Task.DUE) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    expired_lease = Q(status=TS.CLAIMED, lease_until__lt=now)
    return due | expired_lease


def due_tasks(now: datetime | None = None):
    """Tasks a provisioning run may claim now (their connection must be enabled)."""
    return Task.objects.filter(_due_row(now or timezone.now()), connection__enabled=True)


def task_claim_next(*, owner: str, connection: Connection | None = None) -> Task | None:
    """Claim one due task (see task_claim_batch); None when nothing is due."""
    claimed = task_claim_batch(owner=owner, size=1, connection=connection)
    return claimed[0] if claimed else None


def task_claim_next_specific(*, task_id: int, owner: str) -> Task | None:
    """Claim one given task if it is due (the same conditional UPDATE as task_claim_batch)."""
    claimed = task_claim_batch(owner=owner, size=1, task_id=task_id)
    return claimed[0] if claimed else None


def task_claim_batch(
    *, owner: str, size: int, connection: Connection | None = None, task_id: int | None = None
) -> list[Task]:
    """Claim up to `size` due tasks with one conditional UPDATE and a lease.

    Works the same on SQLite and PostgreSQL: the UPDATE names the candidate ids and the
    status each was read in, so a row another worker claimed meanwhile no longer matches
    and is simply not part of this batch. The tasks come back loaded for task_context,
    their `outcome_unknown` saying whether to search OTRS first (the last outcome was
    unknown, or the last worker's lease ran out); in the database it is now set.
    """
    now = timezone.now()
    for tries_left in reversed(range(3)):  # candidates taken by a parallel worker: read fresh ones
        due = due_tasks(now)
        if connection is not None:
            due = due.filter(connection=connection)
        if task_id is not None:
            due = due.filter(pk=task_id)
        rows = list(
            due.order_by("next_attempt_at", "id").values_list("id", "status", "outcome_unknown")[
                : size * 2
            ]
        )
        if not rows:
            return []
        if len(rows) > size:
            # Parallel workers read the same oldest rows; a shuffle keeps them from all
            # fighting over the same ones.
            random.shuffle(rows)
            rows = rows[:size]
        try:
            claimed = _claim(
                {pk: (status, unknown) for pk, status, unknown in rows}, owner[:100], now
            )
        except OperationalError as exc:
            # Two claims locking overlapping rows in a different order can deadlock on
            # PostgreSQL; the database undoes one of them. Read fresh candidates and retry.
            if not tries_left:
                raise
            log.warning("claim by %s failed (%s); retrying", owner, exc)
            continue
        if claimed:
            return claimed
    return []


def _claim(read: dict[int, tuple[str, bool]], owner: str, now: datetime) -> list[Task]:
    """Claim the given tasks (id → status and outcome_unknown as read); returns those won."""
    lease_until = now + LEASE
    as_read = Q()
    for status, unknown in set(read.values()):
        ids = [pk for pk, seen in read.items() if seen == (status, unknown)]
        as_read |= Q(pk__in=ids, status=status, outcome_unknown=unknown)
    with transaction.atomic():
        # From here on a crash or a timeout leaves a task that is searched for before it
        # is created again.
        won = (
            Task.objects.filter(_due_row(now))
            .filter(as_read)
            .update(
                status=TS.CLAIMED,
                lease_until=lease_until,
                lease_owner=owner,
                attempts=F("attempts") + 1,
                outcome_unknown=True,
                updated_at=now,
            )
        )
        if not won:
            return []
        # This claim's rows: the owner together with this exact lease time.
        tasks = list(
            Task.objects.select_related(*(r for r in CONTEXT_RELATIONS if r != "connection"))
            .filter(pk__in=read, status=TS.CLAIMED, lease_owner=owner, lease_until=lease_until)
            .order_by("pk")
        )
        # One instance per connection: its documents are large JSON, not decoded per task.
        shared = Connection.objects.in_bulk({task.connection_id for task in tasks})
        events = []
        for task in tasks:
            task.connection = shared[task.connection_id]
            was, unknown = read[task.pk]
            # The loaded task says whether to search first: the last outcome was unknown,
            # or the last worker's lease ran out (it may have created the ticket).
            task.outcome_unknown = unknown or was == TS.CLAIMED
            reason = f"claimed by {owner}, attempt {task.attempts} of {task.max_attempts}"
            if was == TS.CLAIMED:
                reason += " (the previous worker's lease ran out)"
            events.append(
                _event_row(
                    request_id=task.request_id,
                    task_id=task.pk,
                    frm=was,
                    to=TS.CLAIMED,
                    reason=reason,
                    actor=Actor.job(owner),
                )
            )
        TaskEvent.objects.bulk_create(events)
        return tasks


def backoff_delay(attempt: int) -> timedelta:
    """Exponential backoff with ±25% jitter: base, 2×base, 4×base … capped."""
    base = settings.PROVISION_BACKOFF_SECONDS
    delay = min(base * (2 ** max(attempt - 1, 0)), settings.PROVISION_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=delay * random.uniform(0.75, 1.25))


@dataclass
class _Attempt:
    """What the HTTP half of one provisioning attempt found; nothing of it is stored yet."""

    created: CreatedTicket | None = None
    how: str = ""
    error: OTRSError | None = None
    clear_unknown: bool = False  # the create call surely never reached OTRS
    lost_lease: bool = False
    released: bool = False  # never sent: the run's time budget ran out first
    calls: list = field(default_factory=list)  # deferred ApiCall rows


def task_provision(*, task: Task, owner: str) -> str:
    """Create (or adopt) the ticket of a claimed task. Returns the task's new status.

    1. If an earlier attempt's outcome is unknown, search OTRS for the correlation key
       and adopt the ticket found.
    2. Otherwise check the lease is still held, send TicketCreate, and store the ids.
    3. A transient failure waits with backoff while tries are left; a permanent one fails.
    """
    if task.status != TS.CLAIMED or task.lease_owner != owner[:100]:
        raise TransitionError(f"Task {task.pk} is not claimed by {owner}.")
    return _finish(task, _attempt(task, owner, verify_lease=True), owner)


def _attempt(
    task: Task,
    owner: str,
    *,
    verify_lease: bool = True,
    claimed_at: float | None = None,
    clients: dict | None = None,
) -> _Attempt:
    """Search and/or create the ticket of one claimed task. Only HTTP: no status changes.

    `verify_lease` renews the lease in the database right before TicketCreate and gives
    up when another worker took the task over (or it was cancelled). Without it, a task
    `claimed_at` (monotonic time) a moment ago skips that statement; one claimed more than
    VERIFY_AFTER_SECONDS before its create call is checked all the same. `clients` keeps
    a worker thread's TicketClient per connection for the run (an edited connection
    applies from the next run, within the job's time budget); its ApiCall rows are then
    returned, not saved.
    """
    ref = f"task:{task.pk}"
    stage = "prepare"
    client = None
    try:
        if clients is None:
            client = TicketClient(task.connection)
        else:
            client = clients.get(task.connection_id)
            if client is None:
                client = clients[task.connection_id] = TicketClient(
                    task.connection, defer_logging=True
                )
        context = task_context(task)
        created = None
        if task.outcome_unknown:
            stage = "search"
            created = client.find_ticket(context, ref=ref)
            how = "adopted the ticket found by correlation key after an unknown outcome"
        if created is None:
            stage = "create"
            waited = time.monotonic() - claimed_at if claimed_at is not None else 0.0
            if verify_lease or waited > VERIFY_AFTER_SECONDS:
                holds = Task.objects.filter(pk=task.pk, status=TS.CLAIMED, lease_owner=owner[:100])
                if not holds.update(lease_until=timezone.now() + LEASE):
                    return _Attempt(lost_lease=True, calls=_taken(client))
            created = client.create_ticket(context, ref=ref)
            how = "ticket created"
        return _Attempt(created=created, how=how, calls=_taken(client))
    except OTRSError as exc:
        # Only a create call that surely never reached OTRS clears the mark; a failed
        # search leaves it, so the next attempt searches again before creating.
        clear = (
            not exc.outcome_unknown
            if stage == "create"
            else stage == "prepare" and not task.outcome_unknown
        )
        return _Attempt(error=exc, clear_unknown=clear, calls=_taken(client))
    except Exception as exc:  # our bug or bad data: record it on the task, never lose the task
        log.exception("provisioning task %s failed unexpectedly", task.pk)
        # Only the exception's type reaches the task: its text could hold anything.
        error = OTRSError(f"internal error ({type(exc).__name__}); see the worker log")
        return _Attempt(error=error, calls=_taken(client))


def _taken(client: TicketClient | None) -> list:
    return client.take_calls() if client is not None else []


def _finish(task: Task, attempt: _Attempt, owner: str) -> str:
    """Store what one attempt found: the ticket, or the failure. Returns the new status."""
    actor = Actor.job(owner)
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


def _release(task: Task, owner: str) -> str:
    """Hand back a claimed task whose call was never sent, as it was before the claim."""
    try:
        with transaction.atomic():
            _move_task(
                task,
                TS.RETRY_WAIT,
                frm=TS.CLAIMED,
                guard={"lease_owner": owner[:100]},
                reason="not sent: the run's time budget ran out first; the next run takes it",
                actor=Actor.job(owner),
                attempts=max(task.attempts - 1, 0),
                outcome_unknown=task.outcome_unknown,
                next_attempt_at=timezone.now(),
                lease_until=None,
            )
    except TransitionError:
        return _lost_lease(task, owner)
    return TS.RETRY_WAIT


def _store_ticket(task: Task, created, *, how: str, owner: str, actor: Actor) -> str:
    connection = task.connection
    ticket, new = Ticket.objects.get_or_create(
        connection=connection,
        ticket_id=created.ticket_id,
        defaults={
            "ticket_number": created.ticket_number,
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
    _move_task(
        task,
        TS.TICKET_OPEN,
        frm=TS.CLAIMED,
        guard={"lease_owner": owner[:100]},
        reason=f"{how}: {ticket.ticket_number or ticket.ticket_id}",
        actor=actor,
        ticket=ticket,
        outcome_unknown=False,
        lease_until=None,
        last_error="",
        flag="",
    )
    TaskEvent.objects.bulk_create(_start_requests([task.request_id], actor))
    return TS.TICKET_OPEN


def _start_requests(request_ids: Iterable[int], actor: Actor) -> list[TaskEvent]:
    """Move approved requests on to in progress: a first ticket of theirs exists (later
    ones find them in progress). Inside a transaction; returns the events to save."""
    starting = list(
        AccessRequest.objects.select_for_update()
        .filter(pk__in=set(request_ids), status=RS.APPROVED)
        .values_list("pk", flat=True)
    )
    if starting:
        AccessRequest.objects.filter(pk__in=starting).update(
            status=RS.IN_PROGRESS, updated_at=timezone.now()
        )
    return [
        _event_row(
            request_id=pk,
            task_id=None,
            frm=RS.APPROVED,
            to=RS.IN_PROGRESS,
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
    guard = {"lease_owner": owner[:100]}
    fields = {"last_error": message, "lease_until": None}
    if clear_unknown:
        fields["outcome_unknown"] = False
    try:
        with transaction.atomic():
            if exc.permanent or task.attempts >= task.max_attempts:
                why = (
                    "permanent error"
                    if exc.permanent
                    else f"tries exhausted ({task.attempts} of {task.max_attempts})"
                )
                _move_task(
                    task,
                    TS.FAILED,
                    frm=TS.CLAIMED,
                    guard=guard,
                    reason=f"{why}: {message}",
                    actor=actor,
                    completed_at=timezone.now(),
                    **fields,
                )
                _settle_request(task.request_id, actor=actor)
                return TS.FAILED
            delay = backoff_delay(task.attempts)
            _move_task(
                task,
                TS.RETRY_WAIT,
                frm=TS.CLAIMED,
                guard=guard,
                reason=f"will retry in {int(delay.total_seconds())} s: {message}",
                actor=actor,
                next_attempt_at=timezone.now() + delay,
                **fields,
            )
            return TS.RETRY_WAIT
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
            frm="",
            to=_current_status(task),
            reason=(
                f"ticket {created.ticket_number or created.ticket_id} (TicketID {created.ticket_id}) "
                f"was created, but the task had moved on ({why}); the bridge does not follow "
                "this ticket; close it in OTRS"
            ),
            actor=actor,
        )


@dataclass
class ProvisionResult:
    claimed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.claimed += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def __str__(self) -> str:
        if not self.claimed:
            return "nothing due"
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status.items()))
        return f"{self.claimed} task(s): {parts}"


class _BatchConflict(Exception):
    """A batch store met a row that moved on; the batch is stored task by task instead."""


def _store_batch(results: list[tuple[Task, _Attempt]], owner: str) -> list[tuple[Task, str]]:
    """Store the outcome of many attempts with a handful of statements.

    Created tickets are stored together: one INSERT of the tickets, one UPDATE of the
    tasks (still guarded by status and lease owner), one INSERT of the events, in one
    transaction. Should any row have moved on (cancelled meanwhile, a ticket already
    known), that transaction is undone and each task takes the one-by-one path, which
    says exactly what happened. Failures always take that path.
    """
    calls = [call for _, attempt in results for call in attempt.calls]
    created = [(t, a) for t, a in results if a.created is not None and not a.lost_lease]
    done: list[tuple[Task, str]] = []
    if created:
        try:
            with transaction.atomic():
                ApiCall.objects.bulk_create(calls)
                _store_tickets(created, owner)
            done = [(task, TS.TICKET_OPEN) for task, _ in created]
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
                status = _finish(task, attempt, owner)
            except DatabaseError:
                # The database failed us: the task stays claimed (and marked unknown), so
                # once its lease runs out a worker searches OTRS before creating anything.
                log.exception("could not store the outcome of task %s", task.pk)
                status = TS.CLAIMED
            done.append((task, status))
    return done


def _store_tickets(created: list[tuple[Task, _Attempt]], owner: str) -> None:
    actor = Actor.job(owner)
    # A ticket already known (adopted twice, say) breaks the unique (connection, TicketID)
    # constraint: IntegrityError, and the batch is stored task by task.
    tickets = Ticket.objects.bulk_create(
        Ticket(
            connection_id=task.connection_id,
            ticket_id=attempt.created.ticket_id,
            ticket_number=attempt.created.ticket_number,
            agent_url=agent_link(task.connection, attempt.created.ticket_id),
        )
        for task, attempt in created
    )
    if any(ticket.pk is None for ticket in tickets):  # a database that returns no ids
        raise _BatchConflict("the new tickets' ids are unknown")
    now = timezone.now()
    moved = Task.objects.filter(
        pk__in=[task.pk for task, _ in created], status=TS.CLAIMED, lease_owner=owner[:100]
    ).update(
        status=TS.TICKET_OPEN,
        # CASE id WHEN <task> THEN <ticket> …: the same as Case(When(pk=…)), which Django
        # resolves per row at a cost that rivals the whole rest of the batch.
        ticket_id=RawSQL(
            "CASE id " + "WHEN %s THEN %s " * len(created) + "END",
            [n for (task, _), t in zip(created, tickets, strict=True) for n in (task.pk, t.pk)],
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
            frm=TS.CLAIMED,
            to=TS.TICKET_OPEN,
            reason=f"{attempt.how}: {attempt.created.ticket_number or attempt.created.ticket_id}",
            actor=actor,
        )
        for task, attempt in created
    ]
    events += _start_requests([task.request_id for task, _ in created], actor)
    TaskEvent.objects.bulk_create(events)
    for (task, _), ticket in zip(created, tickets, strict=True):
        task.status, task.ticket = TS.TICKET_OPEN, ticket


def provision_due(
    *,
    owner: str = "",
    workers: int = 1,
    budget_seconds: float | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    connection: Connection | None = None,
) -> ProvisionResult:
    """Claim and provision due tasks until none is due, the time budget is spent or
    `limit` tasks were handled, with up to `workers` create calls in flight.

    This thread claims tasks in batches and stores the results in batches; `workers`
    threads only make the HTTP calls. Up to six tasks per worker are claimed and not yet
    stored, so the workers never wait for the database; a claim takes at least three per
    worker and a store up to two per worker, so the database sees a few statements per
    batch instead of a few per task.
    """
    owner = (owner or f"worker-{uuid.uuid4().hex[:8]}")[:100]
    budget = settings.JOB_TIME_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    workers = max(1, workers)
    window = 6 * workers
    result = ProvisionResult()
    taken = 0
    runner = _AttemptRunner(owner, workers, deadline)
    failure: DatabaseError | None = None
    try:
        while True:
            room = window - runner.outstanding
            if limit is not None:
                room = min(room, limit - taken)
            # Claim in batches, unless nothing is left to wait for.
            if room > 0 and (room >= 3 * workers or not runner.outstanding):
                if time.monotonic() < deadline and failure is None:
                    try:
                        tasks = task_claim_batch(owner=owner, size=room, connection=connection)
                    except DatabaseError as exc:
                        # Store what is in flight, then let the job record the failure.
                        failure, tasks = exc, []
                    taken += len(tasks)
                    for task in tasks:
                        runner.submit(task)
            if not runner.outstanding:
                break
            for task, status in _store_batch(runner.collect(2 * workers), owner):
                result.count(status)
                if progress:
                    progress(f"{task.correlation_key} {status}")
    finally:
        runner.close()
    if failure is not None:
        raise failure
    return result


class _AttemptRunner:
    """Runs provisioning attempts (the HTTP half) for provision_due: in the calling thread
    for one worker, else on `workers` threads fed through a queue."""

    # How long collect() waits for more results to make a fuller batch to store; the
    # workers go on with the claimed tasks meanwhile.
    GATHER_SECONDS = 0.1

    def __init__(self, owner: str, workers: int, deadline: float) -> None:
        self.owner = owner
        self.deadline = deadline
        self.outstanding = 0
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._clients: dict = {}
        self._threads = [
            threading.Thread(target=self._work, name=f"provision-{n}", daemon=True)
            for n in range(workers if workers > 1 else 0)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: Task) -> None:
        self.outstanding += 1
        self._inbox.put((task, time.monotonic()))

    def collect(self, wanted: int) -> list[tuple[Task, _Attempt]]:
        """At least one finished attempt; up to `wanted` when they finish close together."""
        if not self._threads:
            results = []
            while not self._inbox.empty():
                task, claimed_at = self._inbox.get()
                results.append((task, self._run(task, claimed_at, self._clients)))
        else:
            results = [self._outbox.get()]
            until = time.monotonic() + self.GATHER_SECONDS
            while len(results) < min(wanted, self.outstanding):
                try:
                    results.append(self._outbox.get(timeout=max(0.0, until - time.monotonic())))
                except queue.Empty:
                    break
        self.outstanding -= len(results)
        return results

    def _run(self, task: Task, claimed_at: float, clients: dict) -> _Attempt:
        if time.monotonic() > self.deadline:
            # Behind a slow OTRS the claimed tasks outlast the run's time budget: hand
            # them back rather than overrun the job's timeout.
            return _Attempt(released=True)
        # Claimed a moment ago together with its lease: asking the database again whether
        # it is still ours would cost a statement per ticket (see _attempt).
        return _attempt(
            task, self.owner, verify_lease=False, claimed_at=claimed_at, clients=clients
        )

    def _work(self) -> None:
        clients: dict = {}
        try:
            while (item := self._inbox.get()) is not None:
                task, claimed_at = item
                self._outbox.put((task, self._run(task, claimed_at, clients)))
        finally:
            db_connections.close_all()

    def close(self) -> None:
        """Stop the threads. Tasks claimed but never sent (after an error here) stay
        claimed until their lease runs out; the next worker searches before creating."""
        while not self._inbox.empty():
            self._inbox.get()
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()


# --- status polling ---------------------------------------------------------------------------


@dataclass
class PollResult:
    tickets: int = 0
    changed: int = 0
    missing: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.tickets} ticket(s) polled, {self.changed} changed"
        if self.missing:
            text += f", {self.missing} not found"
        if self.errors:
            text += f", {len(self.errors)} error(s): {self.errors[0]}"
        return text


def tickets_poll(
    *,
    connection: Connection,
    progress: Callable[[int], None] | None = None,
    budget_seconds: float | None = None,
) -> PollResult:
    """Poll a connection's open tickets, oldest-polled first, one status call per batch.

    Only one batch of ids is in memory at a time, so memory stays flat however many
    tickets are open. A ticket is polled at most once per cycle.
    """
    result = PollResult()
    started = timezone.now()
    budget = settings.JOB_TIME_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    try:
        client = TicketClient(connection)
    except OTRSError as exc:
        result.errors.append(exc.message)
        return result
    batch = max(1, connection.batch_size)
    pending = Ticket.objects.filter(connection=connection, is_open=True).filter(
        Q(last_polled_at__isnull=True) | Q(last_polled_at__lt=started)
    )
    while time.monotonic() < deadline:
        chunk = list(
            pending.order_by(F("last_polled_at").asc(nulls_first=True), "id").values_list(
                "pk", "ticket_id", "state"
            )[:batch]
        )
        if not chunk:
            break
        ids = [ticket_id for _, ticket_id, _ in chunk]
        try:
            statuses = client.ticket_statuses(ids, ref=f"poll:{connection.name}")
        except OTRSError as exc:
            result.errors.append(exc.message)
            # Mark the batch polled so the cycle moves on; the next cycle tries again.
            Ticket.objects.filter(pk__in=[pk for pk, _, _ in chunk]).update(
                last_polled_at=timezone.now()
            )
            if exc.auth or exc.permanent:
                break
            continue
        unchanged = []
        for pk, ticket_id, state in chunk:
            status = statuses.get(ticket_id)
            if status is None:
                result.missing += 1
                unchanged.append(pk)
            elif status.state == state and status.merged_into is None:
                unchanged.append(pk)
            else:
                try:
                    if ticket_apply_status(
                        ticket=Ticket.objects.get(pk=pk), status=status, actor=Actor.job("poll")
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
        Ticket.objects.filter(pk__in=unchanged).update(last_polled_at=timezone.now())
        result.tickets += len(chunk)
        if progress:
            progress(len(chunk))
    flag_stale_tasks(connection=connection)
    return result


def ticket_apply_status(*, ticket: Ticket, status: TicketStatus, actor: Actor) -> bool:
    """Apply what OTRS says about a ticket to the ticket mapping and its task.

    Returns True when something changed. A merged ticket is followed to its target; an
    unmapped state leaves the task open and flagged for the dashboard.
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
                    reason = (
                        f"ticket {ticket} was merged into ticket {status.merged_into}, which task "
                        f"{owner.pk} follows; this task needs an operator (cancel it here, and check the merge in OTRS)"
                    )
                _event(
                    request_id=task.request_id,
                    task_id=task.pk,
                    frm=task.status,
                    to=task.status,
                    reason=reason,
                    actor=actor,
                )
            return True
        outcome = status.outcome
        closing = outcome in ("completed", "discontinued", "failed")
        Ticket.objects.filter(pk=ticket.pk).update(
            is_open=not closing, closed_at=now if closing else None, **mapping
        )
        if task is None or task.is_terminal:
            return True
        if outcome is None:
            flag = f"unmapped state: {status.state}"
            if task.flag != flag:
                Task.objects.filter(pk=task.pk).update(flag=flag)
                _event(
                    request_id=task.request_id,
                    task_id=task.pk,
                    frm=task.status,
                    to=task.status,
                    reason=f"OTRS reports state {status.state!r}, which the status mapping does not list; the task stays open",
                    actor=actor,
                )
            return True
        to = OUTCOME_TO_STATUS[outcome]
        reason = f"OTRS state {status.state!r} → {outcome}"
        if to != task.status:
            extra = {"completed_at": now} if to in Task.TERMINAL else {}
            task = _move_task(task, to, reason=reason, actor=actor, flag="", **extra)
        elif task.flag.startswith("unmapped"):
            Task.objects.filter(pk=task.pk).update(flag="")
        if to == TS.COMPLETED:
            _record_access(task)
        if to in Task.TERMINAL:
            _settle_request(task.request_id, actor=actor)
    return True


def ticket_refresh(*, ticket: Ticket, actor: Actor) -> bool:
    """Fetch one ticket's state now (the webhook and the "refresh" button use this)."""
    statuses = TicketClient(ticket.connection).ticket_statuses(
        [ticket.ticket_id], ref=f"refresh:{ticket.pk}"
    )
    status = statuses.get(ticket.ticket_id)
    if status is None:
        return False
    return ticket_apply_status(ticket=ticket, status=status, actor=actor)


def flag_stale_tasks(*, connection: Connection) -> int:
    """Flag tasks whose ticket has been open longer than the connection allows. They are
    still polled; the flag only makes them visible."""
    limit = timezone.now() - timedelta(days=connection.max_status_check_days)
    return (
        Task.objects.filter(
            connection=connection,
            status__in=(TS.TICKET_OPEN, TS.TICKET_PENDING),
            ticket__created_at__lt=limit,
        )
        # Only unflagged tasks: an unmapped state or a merge says more than "stale".
        .filter(flag="")
        .update(flag=f"stale: open longer than {connection.max_status_check_days} days")
    )


# --- completion ----------------------------------------------------------------------------


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
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if counts.get(TS.COMPLETED) == len(statuses):
        to = RS.COMPLETED
    elif counts.get(TS.CANCELLED) == len(statuses):
        to = RS.CANCELLED
    else:
        to = RS.FAILED
    _move_request(
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
        recipients = sorted(
            {
                e
                for e in (
                    access_request.beneficiary.email,
                    access_request.requester.email if access_request.requester_id else "",
                )
                if e
            }
        )
        if recipients:
            send_mail(subject, body, None, recipients)
    except Exception:
        log.exception("could not send the completion email of %s", access_request.number)


# --- job bookkeeping and schedules ---------------------------------------------------------


def job_run(name: str, trigger: str, work: Callable[[], object]) -> JobRun:
    """Run one job and record it: a row before it starts, the outcome after (practice 9)."""
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


def provision_job(
    *, trigger: str, connection_id: int | None = None, progress=None, workers: int | None = None
) -> JobRun:
    connection = Connection.objects.get(pk=connection_id) if connection_id else None
    name = f"provision:{connection.name}" if connection else "provision"
    return job_run(
        name,
        trigger,
        lambda: provision_due(
            owner=f"{name}:{uuid.uuid4().hex[:6]}",
            workers=workers or settings.PROVISION_THREADS,
            connection=connection,
            progress=progress,
        ),
    )


@dataclass
class PollAllResult:
    results: dict[str, PollResult] = field(default_factory=dict)

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
            out.results[connection.name] = tickets_poll(connection=connection, progress=progress)
        return out

    return job_run(name, trigger, work)


def schedules_sync() -> int:
    """Register one provisioning and one polling schedule per connection, by name.

    Idempotent: running it any number of times leaves one schedule of each name, with the
    connection's current interval. Schedules of deleted connections are removed.
    """
    from django_q.models import Schedule

    wanted = {}
    for connection in Connection.objects.all():
        wanted[f"provision:{connection.name}"] = (
            "tickets.jobs.provision_due_tasks",
            connection,
            connection.provision_minutes,
        )
        wanted[f"poll:{connection.name}"] = (
            "tickets.jobs.poll_open_tickets",
            connection,
            connection.poll_minutes,
        )
    for name, (func, connection, minutes) in wanted.items():
        # Duplicates (left by an older version, say) go first, so the one kept is updated.
        keep = Schedule.objects.filter(name=name).order_by("id").values_list("pk", flat=True)[:1]
        Schedule.objects.filter(name=name).exclude(pk__in=list(keep)).delete()
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "args": f"({connection.pk},)",
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes,
                "repeats": -1,
            },
        )
    stale = Schedule.objects.filter(
        Q(name__startswith="provision:") | Q(name__startswith="poll:")
    ).exclude(name__in=wanted)
    stale.delete()
    return len(wanted)


def provision_one(*, task_id: int) -> str:
    """Provision one task now if it is still due (instant provisioning, retry button)."""
    owner = f"instant:{uuid.uuid4().hex[:6]}"
    task = Task.objects.filter(pk=task_id).first()
    if task is None or task.status not in Task.DUE:
        return f"task {task_id} is not due"
    claimed = task_claim_next_specific(task_id=task_id, owner=owner)
    if claimed is None:
        return f"task {task_id} was taken by another worker"
    return task_provision(task=claimed, owner=owner)


def refresh_one(*, ticket_pk: int, source: str = "") -> str:
    ticket = Ticket.objects.select_related("connection").filter(pk=ticket_pk).first()
    if ticket is None:
        return f"ticket {ticket_pk} is not tracked"
    actor = Actor.webhook(ticket.connection) if source else Actor.job("refresh")
    try:
        changed = ticket_refresh(ticket=ticket, actor=actor)
    except OTRSError as exc:
        return f"ticket {ticket} not refreshed: {exc.message}"
    except TransitionError as exc:
        return f"ticket {ticket} not applied: {exc}"
    return f"ticket {ticket} {'updated' if changed else 'not found in OTRS'}"
