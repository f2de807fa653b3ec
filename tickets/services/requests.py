"""What people and upstream systems ask for: submit a request, approve or reject it, cancel
it, and retry or cancel its tasks, each with its permission check."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from connections.models import Endpoint
from connections.problems import Problems

from .. import limits, selectors
from ..models import (
    ACCESS_OPERATIONS,
    OPERATE_PERMISSION,
    AccessRequest,
    Account,
    ApiClient,
    ConsoleUser,
    Identity,
    Operation,
)
from ..models import ProvisioningTask as Task
from ..validators import email_problem, username_problem
from . import governance, notifications
from .completion import _settle_request
from .conversation import note_ticket
from .provisioning import provision_soon
from .transitions import SYSTEM, Actor, RequestInvalid, TransitionError, _event, _move


def _identity_for(beneficiary: Identity | dict, errors: Problems) -> Identity | None:
    if isinstance(beneficiary, Identity):
        return beneficiary
    if not isinstance(beneficiary, dict):
        errors.add("beneficiary", "must be an object with a username.")
        return None
    username = str(beneficiary.get("username") or "").strip()
    if not username:
        errors.add("beneficiary.username", "is required.")
        return None
    if len(username) > limits.USERNAME:
        errors.add("beneficiary.username", f"is longer than {limits.USERNAME} characters.")
        return None
    # Checked before the lookup too: a name no Identity may have finds none (and a NUL
    # would make PostgreSQL refuse the query).
    problem = username_problem(username)
    if problem:
        errors.add("beneficiary.username", problem)
        return None
    identity = Identity.objects.filter(username=username).first()
    if identity is not None:
        return identity
    values = {
        k: str(beneficiary.get(k) or "")[: limits.PERSON_NAME] for k in ("first_name", "last_name")
    }
    email = str(beneficiary.get("email") or "")
    problem = email_problem(email) if email else ""
    if problem:
        errors.add("beneficiary.email", problem)
        return None
    return Identity(username=username, email=email, **values)


def _check_operation_fits(
    *,
    identity: Identity,
    endpoint: Endpoint,
    operation: str,
    account_name: str,
    entitlements: list[str],
    errors: Problems,
    reveal: bool = True,
) -> None:
    """Refuse an operation that does not fit the access that exists today.

    With `reveal` off (a requester who may not see this person's access there), each
    refusal says only that the request cannot be made and why, never which account or
    entitlements the person holds, nor who holds an account name.
    """
    account = None
    if identity.pk:
        account = Account.objects.filter(identity=identity, endpoint=endpoint, active=True).first()
    # People and endpoints by the names a person reads, operations by their labels.
    who, where = identity.display_name, str(endpoint)
    cannot = "This request cannot be made: "
    if operation == Operation.CREATE_ACCOUNT and account is not None:
        errors.add(
            "operation",
            f"{who} already has the account {account.name!r} on {where}."
            if reveal
            else f"{cannot}this person already has an account on {where}.",
        )
    elif operation == Operation.CREATE_ACCOUNT:
        holder = (
            Account.objects.filter(endpoint=endpoint, name=account_name, active=True)
            .select_related("identity")
            .first()
        )
        if holder is not None:
            errors.add(
                "account_name",
                f"{account_name!r} on {where} already belongs to {holder.identity.display_name}."
                if reveal
                else f"{cannot}the account name {account_name!r} is taken on {where}; choose another.",
            )
    unknown_allowed = endpoint.allow_unknown_accounts and operation != Operation.CREATE_ACCOUNT
    if (
        operation in (Operation.REMOVE_ACCOUNT, *ACCESS_OPERATIONS)
        and account is None
        and not unknown_allowed
    ):
        verb = "remove" if operation == Operation.REMOVE_ACCOUNT else "change"
        errors.add(
            "operation",
            f"{who} has no account on {where}, so there is nothing to {verb}."
            + (
                f" Request “{Operation.CREATE_ACCOUNT.label}” first."
                if operation == Operation.ADD_ACCESS
                else ""
            )
            if reveal
            else f"{cannot}the bridge knows no account of this person on {where} to {verb}.",
        )
    if operation in ACCESS_OPERATIONS and not entitlements:
        errors.add("entitlements", "name at least one entitlement for an access change.")
    allowed = set(endpoint.entitlements or [])
    unknown = [e for e in entitlements if allowed and e not in allowed]
    if unknown:
        errors.add("entitlements", f"not offered by {where}: {', '.join(unknown)}.")
    if account is not None and operation in ACCESS_OPERATIONS:
        held = set(account.entitlements.values_list("entitlement", flat=True))
        if operation == Operation.ADD_ACCESS:
            already = [e for e in entitlements if e in held]
            if already:
                errors.add(
                    "entitlements",
                    f"{who} already has: {', '.join(already)}."
                    if reveal
                    else f"{cannot}it does not fit the entitlements this person holds on {endpoint}.",
                )
        else:
            missing = [e for e in entitlements if e not in held]
            if missing:
                errors.add(
                    "entitlements",
                    f"{who} does not have: {', '.join(missing)}."
                    if reveal
                    else f"{cannot}it does not fit the entitlements this person holds on {endpoint}.",
                )


def request_submit(
    *,
    beneficiary: Identity | dict,
    endpoint: Endpoint | str,
    operation: str,
    requester: ConsoleUser | None = None,
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
    errors = Problems()
    if operation not in Operation.values:
        errors.add("operation", f"must be one of {', '.join(Operation.values)}.")
    if isinstance(endpoint, str):
        name = endpoint
        found = Endpoint.objects.select_related("security_system").filter(name=name).first()
        if found is None:
            errors.add("endpoint", f"there is no endpoint named {name!r}.")
        else:
            endpoint = found
    if (
        isinstance(endpoint, Endpoint)
        and endpoint.security_system.service_desk_connection_id is None
    ):
        errors.add(
            "endpoint",
            f"{endpoint} has no service-desk connection; an admin must set one on its application.",
        )
    entitlements = [str(e).strip() for e in entitlements if str(e).strip()]
    if len(set(entitlements)) != len(entitlements):
        errors.add("entitlements", "lists an entitlement twice.")
    identity = _identity_for(beneficiary, errors)
    if (
        not account_name.strip()
        and identity is not None
        and identity.pk
        and operation != Operation.CREATE_ACCOUNT
    ):
        # A change to an existing account names that account (an imported one may not
        # carry the username).
        account_name = (
            (
                Account.objects.filter(identity=identity, endpoint=endpoint, active=True)
                .values_list("name", flat=True)
                .first()
                or ""
            )
            if isinstance(endpoint, Endpoint)
            else ""
        )
    account_name = (account_name or (identity.username if identity else "")).strip()
    if len(account_name) > limits.ACCOUNT_NAME:
        errors.add("account_name", f"is longer than {limits.ACCOUNT_NAME} characters.")
    if identity is not None and isinstance(endpoint, Endpoint) and operation in Operation.values:
        _check_operation_fits(
            identity=identity,
            endpoint=endpoint,
            operation=operation,
            account_name=account_name,
            entitlements=entitlements,
            errors=errors,
            reveal=requester is None or selectors.sees_access(requester, identity, endpoint),
        )
    trusted = api_client is not None and api_client.trusted
    if trusted and identity is not None and governance.is_the_person(identity, upstream_approver):
        errors.add(
            "upstream_approver",
            f"{upstream_approver.strip()} is the beneficiary of this request; another approver "
            "must decide.",
        )
    if errors:
        raise RequestInvalid(errors.as_fields())
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
            from_status="",
            to=AccessRequest.Status.PENDING_APPROVAL,
            reason=f"submitted: {access_request.get_operation_display()} on {endpoint}",
            actor=actor,
        )
        if api_client is not None and api_client.trusted:
            label = upstream_approver or f"upstream approval via {api_client.name}"
            _approve(
                access_request, actor=actor, comment="approved upstream", decided_by_label=label
            )
        else:
            notifications.notify_soon(notifications.APPROVAL_NEEDED, access_request.pk)
    return access_request


def _can(user: ConsoleUser | None, permission: str) -> bool:
    return bool(user and user.is_active and user.has_perm(permission))


def _check_decider(access_request: AccessRequest, by: ConsoleUser, verb: str) -> None:
    """Refuse with the rule that stops `by` (governance.decision_refusal), named."""
    access_request = AccessRequest.objects.select_related(
        "beneficiary", "endpoint__security_system"
    ).get(pk=access_request.pk)
    refusal = governance.decision_refusal(access_request, by, verb)
    if refusal:
        raise PermissionDenied(refusal)


def request_approve(
    *, access_request: AccessRequest, by: ConsoleUser, comment: str = ""
) -> AccessRequest:
    """Approve a pending request and create its tasks; governance says who may.

    On an application that requires two approvals, the first one is recorded and the
    request keeps waiting for the second.
    """
    _check_decider(access_request, by, "approve")
    system = access_request.endpoint.security_system
    with transaction.atomic():
        if system.two_approvals:
            # Asked again with the row locked: the same person's second click, sent while
            # the first was being recorded, must not become the second approval.
            AccessRequest.objects.select_for_update().filter(pk=access_request.pk).first()
            _check_decider(access_request, by, "approve")
            now = timezone.now()
            claimed = AccessRequest.objects.filter(
                pk=access_request.pk,
                status=AccessRequest.Status.PENDING_APPROVAL,
                first_approved_by__isnull=True,
            ).update(first_approved_by=by, first_approved_at=now, updated_at=now)
            if claimed:
                _event(
                    request_id=access_request.pk,
                    task_id=None,
                    from_status=AccessRequest.Status.PENDING_APPROVAL,
                    to=AccessRequest.Status.PENDING_APPROVAL,
                    reason=f"first approval{': ' + comment if comment else ''}; "
                    "waits for a second approver",
                    actor=Actor.person(by),
                )
                access_request.first_approved_by, access_request.first_approved_at = by, now
                notifications.notify_soon(notifications.APPROVAL_NEEDED, access_request.pk)
                return access_request
        return _approve(access_request, actor=Actor.person(by), comment=comment, decided_by=by)


def _approve(
    access_request: AccessRequest, *, actor: Actor, comment: str, **decision
) -> AccessRequest:
    now = timezone.now()
    access_request = _move(
        access_request,
        AccessRequest.Status.APPROVED,
        from_status=AccessRequest.Status.PENDING_APPROVAL,
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
            f"{endpoint} has no service-desk connection any more; an admin must set one on "
            f"the application {system} before this request can be approved."
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
            from_status="",
            to=Task.Status.NEW,
            reason="task created",
            actor=actor,
        )
        tasks.append(task)
    if system.instant_provisioning:
        provision_soon([t.pk for t in tasks])
    return access_request


def new_correlation_key() -> str:
    """A short unique token that goes into the ticket title, so a ticket can be found again."""
    return "BR-" + secrets.token_hex(5).upper()


def request_reject(
    *, access_request: AccessRequest, by: ConsoleUser, comment: str = ""
) -> AccessRequest:
    _check_decider(access_request, by, "reject")
    with transaction.atomic():
        return _move(
            access_request,
            AccessRequest.Status.REJECTED,
            from_status=AccessRequest.Status.PENDING_APPROVAL,
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
    by: ConsoleUser | None = None,
    actor: Actor | None = None,
    reason: str = "",
) -> AccessRequest:
    """Cancel a request and its unfinished tasks. A requester may cancel their own pending request.

    Each ticket already open in OTRS is told (conversation.note_ticket): the note is queued
    here and sent by the notes job; the cancel never waits on OTRS.
    """
    actor = actor or (Actor.person(by) if by else SYSTEM)
    if by is not None and not _can(by, OPERATE_PERMISSION):
        own_pending = (
            access_request.requester_id == by.pk
            and access_request.status == AccessRequest.Status.PENDING_APPROVAL
        )
        if not own_pending:
            raise PermissionDenied("You are not allowed to cancel this request.")
    with transaction.atomic():
        for task in access_request.tasks.exclude(status__in=Task.TERMINAL):
            _move(
                task,
                Task.Status.CANCELLED,
                reason="cancelled with the request",
                actor=actor,
                completed_at=timezone.now(),
            )
            note_ticket(task=task, kind="cancelled", actor=actor, why=reason)
        return _move(
            access_request,
            AccessRequest.Status.CANCELLED,
            reason=reason or "cancelled",
            actor=actor,
            completed_at=timezone.now(),
        )


def task_retry(*, task: Task, by: ConsoleUser | None = None, actor: Actor | None = None) -> Task:
    """Send a failed task (or one waiting to retry) back to the queue, with fresh tries."""
    if by is not None and not _can(by, OPERATE_PERMISSION):
        raise PermissionDenied("You are not allowed to retry tasks.")
    actor = actor or (Actor.person(by) if by else SYSTEM)
    access_request = AccessRequest.objects.get(pk=task.request_id)
    if access_request.status in (AccessRequest.Status.CANCELLED, AccessRequest.Status.REJECTED):
        raise TransitionError(
            f"Task {task.pk} belongs to a request that was cancelled or rejected; it cannot be retried."
        )
    if task.status not in (Task.Status.FAILED, Task.Status.RETRY_WAIT):
        raise TransitionError(
            f"Task {task.pk} is {task.get_status_display().lower()}; only failed or waiting tasks can be retried."
        )
    with transaction.atomic():
        task = _move(
            task,
            Task.Status.NEW,
            reason="manual retry",
            actor=actor,
            attempts=0,
            next_attempt_at=timezone.now(),
            last_error="",
            lease_until=None,
        )
        if access_request.status == AccessRequest.Status.FAILED:
            _move(
                access_request,
                AccessRequest.Status.IN_PROGRESS,
                reason=f"task {task.pk} retried",
                actor=actor,
                completed_at=None,
                result_summary="",  # the result it had is no longer the result
            )
    connection = task.connection
    if task.endpoint.security_system.instant_provisioning and connection.enabled:
        provision_soon([task.pk])
    return task


def tasks_retry(*, tasks: QuerySet[Task], by: ConsoleUser) -> tuple[list[int], list[str]]:
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
    *, task: Task, by: ConsoleUser | None = None, actor: Actor | None = None, why: str = ""
) -> Task:
    """Cancel one unfinished task; its open ticket is told (a note queued, see request_cancel)."""
    if by is not None and not _can(by, OPERATE_PERMISSION):
        raise PermissionDenied("You are not allowed to cancel tasks.")
    actor = actor or (Actor.person(by) if by else SYSTEM)
    if task.is_terminal:
        raise TransitionError(f"Task {task.pk} is already {task.get_status_display().lower()}.")
    with transaction.atomic():
        task = _move(
            task,
            Task.Status.CANCELLED,
            reason=f"cancelled: {why}" if why else "cancelled",
            actor=actor,
            completed_at=timezone.now(),
        )
        note_ticket(task=task, kind="cancelled", actor=actor, why=why)
        _settle_request(task.request_id, actor=actor)
    return task
