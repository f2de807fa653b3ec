"""SCIM provisioning: the desired state a SCIM client pushes to an endpoint, and the access
requests that bring the inventory there.

The protocol (parsing, PATCH, filters, the answers) is tickets/scim.py; this module takes
the state it computed and changes rows. What a change becomes:

- a User wanted active without an account → `create_account` (its userName is the account
  name); active false or deleted with an account → `remove_account`;
- a user added to a Group → `add_access` for that entitlement; removed → `remove_access`;
- a new name or email → the identity is updated, when it is the client's to write (see
  `_write_identity`), and every open task of that person, on every endpoint, hears of it
  (see `_tell_open_task`).

One request at a time per account and per entitlement: while one is in flight, the next
change waits, and `scim_reconcile_request` takes it up when the request finishes (and so
do the client's next writes). SCIM clients are trusted: their requests arrive approved,
the client recorded as the upstream approver.

Writes to one resource are serialised by a row lock on it (select_for_update), so two
concurrent PATCHes of one group both land.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from connections.models import Endpoint

from .. import limits
from ..models import (
    AccessRequest,
    Account,
    AccountEntitlement,
    ApiClient,
    Identity,
    Operation,
    ScimChange,
    ScimGroup,
    ScimMember,
    ScimUser,
)
from ..models import ProvisioningTask as Task
from ..validators import email_problem, username_problem
from . import conversation
from .requests import request_submit
from .transitions import Actor, RequestInvalid, _event, _task_event

log = logging.getLogger(__name__)


class ScimConflict(Exception):
    """The resource would collide with one that exists (SCIM's 409 `uniqueness`)."""


class ScimNotFound(Exception):
    """No such resource on this endpoint (SCIM's 404)."""


class ScimRefused(Exception):
    """The change cannot be made as asked (SCIM's 400 `invalidValue`); nothing was written."""


@dataclass(frozen=True)
class UserState:
    """What a client wants a User to be, read from its SCIM resource."""

    user_name: str
    document: dict
    external_id: str = ""
    display_name: str = ""
    active: bool = True
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    justification: str = ""  # what the requests of this user say why


@dataclass(frozen=True)
class GroupState:
    """What a client wants a Group to be: its name (the entitlement) and its members."""

    display_name: str
    document: dict
    external_id: str = ""
    # The members by ScimUser.scim_id, each with the display name the client gave it.
    members: dict[str, str] = field(default_factory=dict)
    justification: str = ""  # what the access requests of its members say why


# --- users ------------------------------------------------------------------------------------


def scim_user_create(*, client: ApiClient, endpoint: Endpoint, wanted: UserState) -> ScimUser:
    """Record a new User and submit its `create_account`. A userName that exists on the
    endpoint (a SCIM user, or an account in the inventory) is a ScimConflict: a client
    repeating its POST never makes a second request."""
    _check_user(wanted)
    if _user_named(endpoint, wanted.user_name) is not None or _account_named(
        endpoint, wanted.user_name
    ):
        raise ScimConflict(f"userName {wanted.user_name!r} already exists on {endpoint}.")
    try:
        with transaction.atomic():
            identity = Identity.objects.filter(username=wanted.user_name).first()
            changed = []
            if identity is None:
                identity = Identity(username=wanted.user_name)
                _fill_identity(identity, wanted)
                identity.save()
            else:
                changed = _write_identity(identity, wanted, client)
            user = ScimUser.objects.create(
                endpoint=endpoint, identity=identity, client=client, **_user_columns(wanted)
            )
            _reconcile(user, client, strict=True)
            # After the request: its new task's timeline records the change too.
            _tell_open_tasks(identity, endpoint, changed, [], Actor.api(client))
    except IntegrityError:
        # A concurrent POST of the same userName won the unique constraint.
        raise ScimConflict(f"userName {wanted.user_name!r} already exists on {endpoint}.") from None
    return user


def scim_user_update(
    *,
    client: ApiClient,
    endpoint: Endpoint,
    scim_id: str,
    change: Callable[[ScimUser], UserState],
) -> ScimUser:
    """Replace or patch a User: `change` computes the wanted state from the current one,
    under the row's lock, so concurrent writes apply one after the other."""
    try:
        with transaction.atomic():
            user = _locked(ScimUser, endpoint, scim_id)
            wanted = change(user)
            _check_user(wanted)
            if wanted.user_name.lower() != user.user_name.lower():
                other = _user_named(endpoint, wanted.user_name)
                if (other is not None and other.pk != user.pk) or _account_named(
                    endpoint, wanted.user_name, besides=user.identity_id
                ):
                    raise ScimConflict(f"userName {wanted.user_name!r} already exists.")
            changed = _write_identity(user.identity, wanted, client)
            renamed = []
            if wanted.user_name != user.user_name:
                renamed.append(f"userName {user.user_name} → {wanted.user_name}")
            _tell_open_tasks(user.identity, endpoint, changed, renamed, Actor.api(client))
            for name, value in _user_columns(wanted).items():
                setattr(user, name, value)
            user.version += 1
            user.save()
            _reconcile(user, client, strict=True)
    except IntegrityError:
        raise ScimConflict(f"userName {wanted.user_name!r} already exists.") from None
    return user


def scim_user_delete(*, client: ApiClient, endpoint: Endpoint, scim_id: str) -> None:
    """Delete a User: its account is removed (`remove_account`) and it is no longer read."""
    with transaction.atomic():
        user = _locked(ScimUser, endpoint, scim_id)
        user.deleted_at = timezone.now()
        user.active = False
        user.version += 1
        user.save()
        user.memberships.update(wanted=False)
        _reconcile(user, client, strict=False)


# --- groups -----------------------------------------------------------------------------------


def scim_group_create(*, client: ApiClient, endpoint: Endpoint, wanted: GroupState) -> ScimGroup:
    """Record a Group, an entitlement of the endpoint, and submit `add_access` for its
    members. A name the endpoint does not offer is refused; one that exists is a conflict."""
    _check_group_state(wanted)
    _check_group(endpoint, wanted.display_name)
    try:
        with transaction.atomic():
            group = ScimGroup.objects.create(endpoint=endpoint, **_group_columns(wanted))
            _set_members(group, wanted.members, client)
    except IntegrityError:
        raise ScimConflict(
            f"displayName {wanted.display_name!r} already exists on {endpoint}."
        ) from None
    return group


def scim_group_update(
    *,
    client: ApiClient,
    endpoint: Endpoint,
    scim_id: str,
    change: Callable[[ScimGroup], GroupState],
) -> ScimGroup:
    """Replace or patch a Group under its row lock: two concurrent PATCHes adding members
    each see the other's members, so neither is lost."""
    try:
        with transaction.atomic():
            group = _locked(ScimGroup, endpoint, scim_id)
            wanted = change(group)
            _check_group_state(wanted)
            renamed = wanted.display_name != group.display_name
            if renamed:
                # Another entitlement: the members lose the old one and get the new one.
                _check_group(endpoint, wanted.display_name)
                group.former_names = sorted(
                    {*group.former_names, group.display_name} - {wanted.display_name}
                )
            for name, value in _group_columns(wanted).items():
                setattr(group, name, value)
            group.version += 1
            group.save()
            _set_members(group, wanted.members, client, reconcile_all=renamed)
    except IntegrityError:
        raise ScimConflict(f"displayName {wanted.display_name!r} already exists.") from None
    return group


def scim_group_delete(*, client: ApiClient, endpoint: Endpoint, scim_id: str) -> None:
    """Delete a Group: every member's entitlement is removed (`remove_access`)."""
    with transaction.atomic():
        group = _locked(ScimGroup, endpoint, scim_id)
        group.deleted_at = timezone.now()
        group.save()
        _set_members(group, {}, client)


def _set_members(
    group: ScimGroup, members: dict[str, str], client: ApiClient, reconcile_all: bool = False
) -> None:
    users = {
        str(u.scim_id): u
        for u in ScimUser.objects.filter(
            endpoint=group.endpoint, deleted_at__isnull=True, scim_id__in=valid_uuids(list(members))
        )
    }
    unknown = [m for m in members if m not in users]
    if unknown:
        raise ScimRefused(f"members: there is no User {unknown[0]!r} on {group.endpoint}.")
    existing = {m.user_id: m for m in group.memberships.all()}
    touched = set(existing) if reconcile_all else set()
    for scim_id, user in users.items():
        display = members[scim_id][: limits.PERSON_NAME]
        member = existing.get(user.pk)
        if member is None:
            ScimMember.objects.create(group=group, user=user, display=display)
            touched.add(user.pk)
        elif not member.wanted or member.display != display:
            ScimMember.objects.filter(pk=member.pk).update(wanted=True, display=display)
            touched.add(user.pk)
    kept = {u.pk for u in users.values()}
    for user_id, member in existing.items():
        if user_id not in kept and member.wanted:
            ScimMember.objects.filter(pk=member.pk).update(wanted=False)
            touched.add(user_id)
    for user in ScimUser.objects.filter(pk__in=touched).select_related("identity", "endpoint"):
        _reconcile(user, client, strict=False)


# --- the inventory as SCIM resources ----------------------------------------------------------


def scim_adopt_inventory(endpoint: Endpoint) -> None:
    """Make the endpoint's existing accounts readable as Users (their entitlements as Group
    members), and its entitlements as Groups, the first time the service is read.

    Idempotent under concurrency: the unique constraints drop a row another call made.
    """
    # An account a SCIM user manages, or one whose SCIM user was deleted after it was made
    # (its removal is on its way), is not adopted (again).
    managed = ScimUser.objects.filter(endpoint=endpoint, identity=OuterRef("identity")).filter(
        Q(deleted_at__isnull=True) | Q(deleted_at__gte=OuterRef("created_at"))
    )
    # Nor one whose name a live SCIM user of another person holds: it would fail on the
    # unique name at every read.
    name_taken = ScimUser.objects.filter(
        endpoint=endpoint, deleted_at__isnull=True, user_name__iexact=OuterRef("name")
    )
    accounts = (
        Account.objects.filter(endpoint=endpoint, active=True)
        .exclude(Exists(managed))
        .exclude(Exists(name_taken))
        .select_related("identity")
        .prefetch_related("entitlements")
    )
    names = set(endpoint.entitlements or [])
    names |= set(
        AccountEntitlement.objects.filter(
            account__endpoint=endpoint, account__active=True
        ).values_list("entitlement", flat=True)
    )
    missing = names - set(
        ScimGroup.objects.filter(endpoint=endpoint, deleted_at__isnull=True).values_list(
            "display_name", flat=True
        )
    )
    if not missing and not accounts.exists():
        return
    with transaction.atomic():
        ScimGroup.objects.bulk_create(
            [
                ScimGroup(endpoint=endpoint, display_name=n, document={"displayName": n})
                for n in sorted(missing)
            ],
            ignore_conflicts=True,
        )
        groups = {
            g.display_name: g
            for g in ScimGroup.objects.filter(endpoint=endpoint, deleted_at__isnull=True)
        }
        for account in accounts:
            identity = account.identity
            document = {"userName": account.name, "active": True}
            if identity.first_name or identity.last_name:
                document["name"] = {
                    k: v
                    for k, v in (
                        ("givenName", identity.first_name),
                        ("familyName", identity.last_name),
                    )
                    if v
                }
            if identity.email:
                document["emails"] = [{"value": identity.email, "primary": True}]
            try:
                with transaction.atomic():
                    user = ScimUser.objects.create(
                        endpoint=endpoint,
                        identity=identity,
                        user_name=account.name,
                        document=document,
                    )
            except IntegrityError:
                continue  # adopted by a concurrent read, or the name is a SCIM user's
            ScimMember.objects.bulk_create(
                [
                    ScimMember(group=groups[e], user=user)
                    for e in (grant.entitlement for grant in account.entitlements.all())
                    if e in groups
                ],
                ignore_conflicts=True,
            )


# --- bringing the inventory to the wanted state -----------------------------------------------


def scim_reconcile_request(request_id: int, **signal) -> None:
    """A request completed: submit what its SCIM user was waiting for (the access of a
    user whose account now exists, the removal of one deleted meanwhile). Runs after the
    commit that finished it; a failure is logged, never raised into the poll that got there."""
    change = (
        ScimChange.objects.filter(request_id=request_id)
        .select_related("user__identity", "user__endpoint", "request__api_client")
        .first()
    )
    if change is None or change.request.status != AccessRequest.Status.COMPLETED:
        # A failed request is not submitted again here (it would fail again, and again):
        # the resource reads "failed", and the client's next write asks once more.
        return
    client = change.request.api_client
    if client is None or not client.active:
        return
    try:
        with transaction.atomic():
            user = ScimUser.objects.select_for_update().get(pk=change.user_id)
            _reconcile(user, client, strict=False)
    except Exception:
        log.exception("SCIM: the follow-up of request %s could not be submitted", request_id)


def _reconcile(user: ScimUser, client: ApiClient, *, strict: bool) -> None:
    """Submit the requests that bring the inventory to what `user` wants, one per account
    or entitlement, none while one for the same thing is in flight.

    `strict`: a request the services refuse (no service-desk connection, an entitlement the
    endpoint does not offer) is a ScimRefused for the client's write; otherwise it is logged.
    """
    changes = list(
        ScimChange.objects.filter(user=user)
        .exclude(request__status__in=AccessRequest.TERMINAL)
        .select_related("request")
    )
    want_account = user.active and user.deleted_at is None
    if not want_account:  # the person left: the agents of their other open tickets are told
        gone = "deleted" if user.deleted_at else "deactivated"
        why = f"the SCIM client {client.name} {gone} the user {user.user_name} on {user.endpoint}"
        conversation.note_beneficiary_left(
            identity=user.identity, endpoint=user.endpoint, actor=Actor.api(client), why=why
        )
    account_busy = any(c.request.operation not in _ACCESS for c in changes)
    busy = {e for c in changes if c.request.operation in _ACCESS for e in c.request.entitlements}
    if account_busy:
        return
    account = Account.objects.filter(
        identity=user.identity, endpoint=user.endpoint, active=True
    ).first()
    if want_account and account is None:
        _submit(user, client, Operation.CREATE_ACCOUNT, strict=strict)
        return
    if not want_account:
        if account is not None:
            _submit(user, client, Operation.REMOVE_ACCOUNT, strict=strict)
        return
    assert account is not None
    held = set(account.entitlements.values_list("entitlement", flat=True))
    wanted: dict[str, ScimGroup] = {}
    unwanted: dict[str, ScimGroup] = {}
    for member in user.memberships.select_related("group"):
        live = member.wanted and member.group.deleted_at is None
        (wanted if live else unwanted)[member.group.display_name] = member.group
        for former in member.group.former_names:
            unwanted.setdefault(former, member.group)
    for name, group in sorted(wanted.items()):
        if name not in held and name not in busy:
            _submit(user, client, Operation.ADD_ACCESS, group=group, strict=strict)
    for name, group in sorted(unwanted.items()):
        if name in held and name not in wanted and name not in busy:
            _submit(user, client, Operation.REMOVE_ACCESS, group=group, strict=strict)


_ACCESS = (Operation.ADD_ACCESS, Operation.REMOVE_ACCESS)


def _submit(
    user: ScimUser,
    client: ApiClient,
    operation: str,
    *,
    group: ScimGroup | None = None,
    strict: bool,
) -> None:
    try:
        with transaction.atomic():
            access_request = request_submit(
                beneficiary=user.identity,
                endpoint=user.endpoint,
                operation=operation,
                api_client=client,
                account_name=user.user_name,
                entitlements=[group.display_name] if group else [],
                justification=(group.justification if group else user.justification)
                or f"pushed by the SCIM client {client.name}",
                upstream_approver=f"SCIM client {client.name}",
            )
            ScimChange.objects.create(user=user, group=group, request=access_request)
    except RequestInvalid as exc:
        if strict:
            raise ScimRefused(str(exc)) from None
        log.warning("SCIM %s: %s for %s was refused: %s", client.name, operation, user, exc)


# --- telling the agent about a new name or email ----------------------------------------------


def _tell_open_tasks(
    identity: Identity, endpoint: Endpoint, changed: list[str], renamed: list[str], actor: Actor
) -> None:
    """Tell every open task of the person, on every endpoint, that their name or email
    changed (`changed`); the tasks on `endpoint` also hear of a new account name (`renamed`).
    With no open task, the change goes on the timeline of the person's newest request."""
    told = False
    open_tasks = Task.objects.filter(request__beneficiary=identity).exclude(
        status__in=Task.TERMINAL
    )
    for task in open_tasks.order_by("pk"):
        why = changed + (renamed if task.endpoint_id == endpoint.pk else [])
        if why:
            _tell_open_task(task, actor=actor, why="; ".join(why))
            told = True
    if not changed or told:
        return
    newest = AccessRequest.objects.filter(beneficiary=identity).order_by("-pk").first()
    if newest is not None:
        _event(
            request_id=newest.pk,
            task_id=None,
            from_status="",
            to=newest.status,
            reason=f"the identity changed: {'; '.join(changed)}",
            actor=actor,
        )


def _tell_open_task(task: Task, *, actor: Actor, why: str) -> None:
    """The one place that tells the agent working `task` that the beneficiary's name or
    email changed: an event on the task's timeline, and the `identity_changed` note on its
    open ticket (queued; a task without an open ticket yet gets only the event)."""
    _task_event(task, f"the identity changed: {why}", actor)
    conversation.note_ticket(task=task, kind="identity_changed", actor=actor, why=why)


# --- helpers ----------------------------------------------------------------------------------


def _locked(model: type[ScimUser] | type[ScimGroup], endpoint: Endpoint, scim_id: str):
    found = (
        model.objects.select_for_update()
        .filter(endpoint=endpoint, deleted_at__isnull=True, scim_id__in=valid_uuids([scim_id]))
        .first()
    )
    if found is None:
        raise ScimNotFound(f"There is no {model.__name__[4:]} {scim_id!r} on {endpoint}.")
    return found


def valid_uuids(values: list[str]) -> list[str]:
    """The values that are UUIDs (a SCIM id here is one); anything else finds nothing."""
    found = []
    for value in values:
        try:
            found.append(str(uuid.UUID(str(value))))
        except ValueError:
            continue
    return found


def _user_named(endpoint: Endpoint, name: str) -> ScimUser | None:
    return ScimUser.objects.filter(
        endpoint=endpoint, deleted_at__isnull=True, user_name__iexact=name
    ).first()


def _account_named(endpoint: Endpoint, name: str, besides: int | None = None) -> bool:
    """An active account of that name exists on the endpoint (`besides`: not this identity's)."""
    found = Account.objects.filter(endpoint=endpoint, active=True, name__iexact=name)
    if besides is not None:
        found = found.exclude(identity_id=besides)
    return found.exists()


def _group_named(endpoint: Endpoint, name: str) -> ScimGroup | None:
    return ScimGroup.objects.filter(
        endpoint=endpoint, deleted_at__isnull=True, display_name=name
    ).first()


def _check_group(endpoint: Endpoint, name: str) -> None:
    """A group name must be an entitlement the endpoint offers, and not taken."""
    if _group_named(endpoint, name) is not None:
        raise ScimConflict(f"displayName {name!r} already exists on {endpoint}.")
    offered = endpoint.entitlements or []
    if offered and name not in offered:
        raise ScimRefused(
            f"displayName {name!r} is not an entitlement of {endpoint}; "
            f"it offers: {', '.join(offered)}."
        )


def _check_user(wanted: UserState) -> None:
    """Refuse what no identity or account may hold, naming the attribute."""
    problem = username_problem(wanted.user_name)
    if len(wanted.user_name) > limits.USERNAME:
        problem = f"is longer than {limits.USERNAME} characters."
    if problem:
        raise ScimRefused(f"userName: {problem}")
    if wanted.email and email_problem(wanted.email):
        raise ScimRefused(f"emails: {email_problem(wanted.email)}")
    _check_lengths(wanted, _USER_LENGTHS)


def _check_group_state(wanted: GroupState) -> None:
    _check_lengths(wanted, _GROUP_LENGTHS)


# Each stored attribute with the field of the state that carries it and its column's limit.
_USER_LENGTHS = (
    ("externalId", "external_id", limits.SCIM_EXTERNAL_ID),
    ("displayName", "display_name", limits.PERSON_NAME),
    ("name.givenName", "first_name", limits.PERSON_NAME),
    ("name.familyName", "last_name", limits.PERSON_NAME),
    ("justification", "justification", limits.JUSTIFICATION),
)
_GROUP_LENGTHS = (
    ("displayName", "display_name", limits.ENTITLEMENT),
    ("externalId", "external_id", limits.SCIM_EXTERNAL_ID),
    ("justification", "justification", limits.JUSTIFICATION),
)


def _check_lengths(wanted: UserState | GroupState, lengths: tuple) -> None:
    """Refuse a value longer than its column holds, naming the attribute."""
    for attribute, name, limit in lengths:
        if len(getattr(wanted, name)) > limit:
            raise ScimRefused(f"{attribute}: is longer than {limit} characters.")


def _user_columns(wanted: UserState) -> dict:
    return {
        "user_name": wanted.user_name,
        "external_id": wanted.external_id,
        "display_name": wanted.display_name,
        "active": wanted.active,
        "document": wanted.document,
        "justification": wanted.justification,
    }


def _group_columns(wanted: GroupState) -> dict:
    return {
        "display_name": wanted.display_name,
        "external_id": wanted.external_id,
        "document": wanted.document,
        "justification": wanted.justification,
    }


_IDENTITY_FIELDS = {"first_name": "given name", "last_name": "family name", "email": "email"}


def _identity_values(identity: Identity) -> dict[str, str]:
    return {name: getattr(identity, name) for name in _IDENTITY_FIELDS}


def _write_identity(identity: Identity, wanted: UserState, client: ApiClient) -> list[str]:
    """Give an existing identity the name and email the client pushed, when it is the
    client's to write; the changes made, as the timeline and the ticket note say them.

    The identity is the person on every application: its email receives their
    notifications and links them to a console user. So a client writes it only while the
    person is used nowhere but on the endpoints it provisions (see `_used_elsewhere`);
    otherwise the identity stays as it is and the client's values live on its User only.
    """
    before = _identity_values(identity)
    after = {name: getattr(wanted, name) or value for name, value in before.items()}
    changed = _differences(before, after)
    if not changed:
        return []
    if _used_elsewhere(identity, client):
        log.info(
            "SCIM %s: %s is used outside its endpoints; their name and email stay as they are",
            client.name,
            identity.username,
        )
        return []
    for name, value in after.items():
        setattr(identity, name, value)
    identity.save()
    return changed


def _used_elsewhere(identity: Identity, client: ApiClient) -> bool:
    """The person signs in to the console, or has an account, a request or a SCIM user on
    an endpoint the client does not provision."""
    if identity.user_id is not None:
        return True
    scope = client.scim_endpoints.values("pk")
    return (
        Account.objects.filter(identity=identity).exclude(endpoint__in=scope).exists()
        or AccessRequest.objects.filter(beneficiary=identity).exclude(endpoint__in=scope).exists()
        or ScimUser.objects.filter(identity=identity).exclude(endpoint__in=scope).exists()
    )


def _fill_identity(identity: Identity, wanted: UserState) -> None:
    """What the client pushed wins; what it leaves out stays as it is."""
    for name in _IDENTITY_FIELDS:
        value = getattr(wanted, name)
        if value:
            setattr(identity, name, value)


def _differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [
        f"{label} {before[name] or '(none)'} → {after[name]}"
        for name, label in _IDENTITY_FIELDS.items()
        if before[name] != after[name]
    ]
