"""Who may decide a request: separation of duties, application owners, two approvals, and
the link between a person (Identity) and the console user they sign in as.

The rules, in the order a refusal names them:

1. Nobody decides a request they filed, nor one for their own access (the beneficiary's
   Identity is linked to them, or carries their username or email address).
2. Deciding needs the approver role.
3. An application (SecuritySystem) with owners (people, or members of owner groups) is
   decided by them and by admins only. With two approvals required, that rule holds for the
   first approval; the second may come from any other approver.
4. The second approval comes from someone other than the first approver.

`decision_refusal` says why one person may not decide one request; `decidable` is the same
rules as one query (the inbox, its badge); `deciders` lists who may (the new-request mail).
Views hide the buttons with the first, and the services refuse with it again.
"""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
from django.db.models import Exists, OuterRef, Q, QuerySet

from connections.models import SecuritySystem

from ..models import APPROVE_PERMISSION, AccessRequest, ConsoleUser, Identity, person_name

# Members of this group (with the approver role) may decide any application's requests,
# as superusers may.
ADMINS_GROUP = "admins"


def is_admin(user: ConsoleUser) -> bool:
    return user.is_superuser or user.groups.filter(name=ADMINS_GROUP).exists()


def _owner_rows(system_ref) -> tuple[Exists, Exists]:
    """Whether an application has owner people, and owner groups (subqueries)."""
    people = SecuritySystem.owners.through.objects.filter(securitysystem_id=system_ref)
    groups = SecuritySystem.owner_groups.through.objects.filter(securitysystem_id=system_ref)
    return Exists(people), Exists(groups)


def is_owner(user: ConsoleUser, system: SecuritySystem) -> bool:
    return (
        system.owners.filter(pk=user.pk).exists() or system.owner_groups.filter(user=user).exists()
    )


def has_owners(system: SecuritySystem) -> bool:
    return system.owners.exists() or system.owner_groups.exists()


def second_approval_due(access_request: AccessRequest) -> bool:
    """The request waits for the second of its two approvals."""
    return access_request.first_approved_by_id is not None


def approval_step(access_request: AccessRequest, memo: dict | None = None) -> str:
    """Which decision the request waits for, as the inbox shows it ("" for a single one).
    `memo` (a dict the caller keeps) remembers which applications have owners."""
    system = access_request.endpoint.security_system
    if not system.two_approvals:
        return ""
    if second_approval_due(access_request):
        first = access_request.first_approved_by
        return f"Second approval (2 of 2); first approved by {display_name(first)}"
    memo = {} if memo is None else memo
    key = ("has_owners", system.pk)
    if key not in memo:
        memo[key] = has_owners(system)
    step = "Owner approval" if memo[key] else "First approval"
    return f"{step} (1 of 2), then a second approver"


def display_name(user: ConsoleUser | None) -> str:
    return person_name(user) or "-"


def decision_refusal(
    access_request: AccessRequest,
    user: ConsoleUser,
    verb: str = "decide",
    memo: dict | None = None,
) -> str:
    """Why `user` may not approve or reject this request, as a sentence; "" when they may.

    `memo` (any dict, kept by the caller) remembers who is an admin and who owns which
    application, so a page that asks for many requests asks the database once for each.
    """
    memo = {} if memo is None else memo
    number = access_request.number or f"request {access_request.pk}"
    beneficiary = access_request.beneficiary
    if is_beneficiary(beneficiary, user):
        return f"You are the beneficiary of {number}; another approver must decide."
    if access_request.requester_id is not None and access_request.requester_id == user.pk:
        return f"You requested {number}; another approver must decide."
    if not (user.is_active and user.has_perm(APPROVE_PERMISSION)):
        return f"You may not {verb} {number}: deciding requests needs the approver role."
    if access_request.first_approved_by_id == user.pk:
        return f"You gave {number} its first approval; another approver must give the second."
    system = access_request.endpoint.security_system
    if second_approval_due(access_request):
        return ""
    if "admin" not in memo:
        memo["admin"] = is_admin(user)
    if memo["admin"]:
        return ""
    key = ("system", system.pk)
    if key not in memo:
        memo[key] = has_owners(system) and not is_owner(user, system)
    if memo[key]:
        return (
            f"Only the owners of {system} (or an admin) may decide {number}; "
            "you are not one of them."
        )
    return ""


def beneficiary_is(user: ConsoleUser) -> Q:
    """Rule 1's "their own access" as a condition on requests: the person is linked to
    `user`, or carries the user's username or email address (case-insensitive). The link is
    one-to-one, so a second identity of the same person stays unlinked; its names still
    give it away."""
    same = Q(beneficiary__user=user.pk) | Q(beneficiary__username__iexact=user.username)
    if user.email:
        same |= Q(beneficiary__email__iexact=user.email)
    return same


def is_beneficiary(identity: Identity, user: ConsoleUser) -> bool:
    """beneficiary_is for one person already loaded."""
    if identity.user_id is not None and identity.user_id == user.pk:
        return True
    if identity.username.lower() == user.username.lower():
        return True
    return bool(user.email) and identity.email.lower() == user.email.lower()


def is_the_person(identity: Identity, name: str) -> bool:
    """Whether `name` (an upstream approver's username or address) names this person."""
    names = {identity.username, identity.email}
    if identity.pk and identity.user_id is not None:
        user = identity.user
        names |= {user.username, user.email} if user is not None else set()
    wanted = name.strip().lower()
    if not wanted:
        return False
    if wanted in {n.lower() for n in names if n}:
        return True
    named = User.objects.filter(Q(username__iexact=wanted) | Q(email__iexact=wanted))
    return any(is_beneficiary(identity, user) for user in named)


def decidable(user: ConsoleUser) -> QuerySet[AccessRequest]:
    """The pending requests `user` may decide: decision_refusal's rules as one query."""
    pending = AccessRequest.objects.filter(status=AccessRequest.Status.PENDING_APPROVAL)
    if not (user.is_active and user.has_perm(APPROVE_PERMISSION)):
        return pending.none()
    pending = (
        pending.exclude(requester=user)
        .exclude(beneficiary_is(user))
        .exclude(first_approved_by=user)
    )
    if is_admin(user):
        return pending
    system = OuterRef("endpoint__security_system")
    any_people, any_groups = _owner_rows(system)
    owns = Exists(
        SecuritySystem.owners.through.objects.filter(securitysystem_id=system, user_id=user.pk)
    ) | Exists(
        SecuritySystem.owner_groups.through.objects.filter(
            securitysystem_id=system, group__user=user
        )
    )
    return pending.filter(Q(first_approved_by__isnull=False) | (~any_people & ~any_groups) | owns)


def users_with_permission(dotted: str) -> QuerySet[User]:
    """Active users holding an "app.codename" permission through a group or directly."""
    app_label, codename = dotted.split(".")
    permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    return User.objects.filter(
        Q(groups__permissions__in=permission) | Q(user_permissions__in=permission),
        is_active=True,
    ).distinct()


def approvers() -> QuerySet[User]:
    """Active users holding the approver role through a group or directly."""
    return users_with_permission(APPROVE_PERMISSION)


def deciders(access_request: AccessRequest) -> list[User]:
    """The approvers who may decide this request now (who hears about it).

    Superusers without the role through a group are left out: they can decide anything
    and would otherwise hear of every request.
    """
    return [u for u in approvers().order_by("pk") if not decision_refusal(access_request, u)]


# --- the link between a person and a console user ----------------------------------------------


def user_for(identity: Identity) -> User | None:
    """The one active console user with the identity's username, else its email address."""
    by_name = list(User.objects.filter(username__iexact=identity.username)[:2])
    if len(by_name) == 1:
        return by_name[0]
    if identity.email:
        by_email = list(User.objects.filter(email__iexact=identity.email)[:2])
        if len(by_email) == 1:
            return by_email[0]
    return None


def link_new_identities(identities: list[Identity]) -> None:
    """user_for's rule for many unsaved people at once (an import saves them in bulk, which
    sends no pre_save): each gets the one user with its username, else its address, when
    that user is linked to nobody yet."""
    by_name: dict[str, list[int]] = {}
    by_email: dict[str, list[int]] = {}
    for pk, username, email in User.objects.values_list("pk", "username", "email"):
        by_name.setdefault(username.lower(), []).append(pk)
        if email:
            by_email.setdefault(email.lower(), []).append(pk)
    taken = set(Identity.objects.filter(user__isnull=False).values_list("user_id", flat=True))
    for identity in identities:
        if identity.user_id is not None:
            continue
        match = by_name.get(identity.username.lower(), [])
        if len(match) != 1 and identity.email:
            match = by_email.get(identity.email.lower(), [])
        if len(match) == 1 and match[0] not in taken:
            identity.user_id = match[0]
            taken.add(match[0])


def link_identity(sender, instance: Identity, **kwargs) -> None:
    """Before an Identity is saved: link it to its console user when none is set (pre_save)."""
    if instance.user_id is not None:
        return
    user = user_for(instance)
    if user is not None and not Identity.objects.filter(user=user).exclude(pk=instance.pk).exists():
        instance.user = user


def link_user(sender, instance: User, **kwargs) -> None:
    """After a console user is saved: link the unlinked person with their username or
    address (post_save). A login (which saves only last_login) changes neither."""
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return
    if Identity.objects.filter(user=instance).exists():
        return
    match = Q(username__iexact=instance.username)
    if instance.email:
        match |= Q(email__iexact=instance.email)
    candidates = list(Identity.objects.filter(match, user__isnull=True)[:2])
    if len(candidates) == 1:
        Identity.objects.filter(pk=candidates[0].pk).update(user=instance)
