"""Reads for the console: overview numbers, board columns, filtered request lists, timelines.

Every function here runs a fixed number of queries, whatever the number of rows: lists are
paginated or capped, related rows come through select_related/prefetch_related, and counts
are one grouped query. Views stay thin and tests can hold the query count steady.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, Max, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from connections.models import ApiCall, Connection
from connections.selectors import TokenState, connections_with_tokens, mask_calls, token_state

from .models import (
    VIEW_ALL_PERMISSION,
    AccessRequest,
    Account,
    AccountEntitlement,
    CallbackDelivery,
    ConsoleUser,
    Identity,
    JobRun,
    ProvisioningTask,
    TaskEvent,
    Ticket,
    TicketNote,
)

# --- who sees what ------------------------------------------------------------------------------


def visible_requests(user: ConsoleUser) -> QuerySet[AccessRequest]:
    """Requesters see the requests they submitted; approvers, operators and admins see all."""
    requests = AccessRequest.objects.all()
    if not user.has_perm(VIEW_ALL_PERMISSION):
        requests = requests.filter(requester=user)
    return requests


def visible_identities(user: ConsoleUser) -> QuerySet[Identity]:
    """Requesters see only the people they asked for access for, and themselves."""
    identities = Identity.objects.all()
    if not user.has_perm(VIEW_ALL_PERMISSION):
        identities = identities.filter(Q(requests__requester=user) | Q(user=user)).distinct()
    return identities


def sees_access(user: ConsoleUser, identity: Identity, endpoint) -> bool:
    """Whether `user` may see what `identity` holds on `endpoint`: everyone with the view-all
    role, the person themselves, and a requester who filed a request for them there."""
    if user.has_perm(VIEW_ALL_PERMISSION):
        return True
    if identity.pk is None:
        return False
    if identity.user_id == user.pk:
        return True
    return AccessRequest.objects.filter(
        requester=user, beneficiary=identity, endpoint=endpoint
    ).exists()


# --- request list -------------------------------------------------------------------------------


def request_list(user: ConsoleUser, filters: dict) -> QuerySet[AccessRequest]:
    """The request list, filtered and ordered (newest first); `request_page` cuts a page.

    `filters` is the cleaned data of RequestFilterForm.
    """
    requests = visible_requests(user)
    if filters.get("status"):
        requests = requests.filter(status=filters["status"])
    if filters.get("endpoint"):
        requests = requests.filter(endpoint=filters["endpoint"])
    if filters.get("operation"):
        requests = requests.filter(operation=filters["operation"])
    if filters.get("requester"):
        who = filters["requester"].strip()
        requests = requests.filter(
            Q(requester__username=who) | Q(api_client__name=who.removeprefix("api:"))
        )
    if filters.get("since"):
        requests = requests.filter(created_at__date__gte=filters["since"])
    if filters.get("until"):
        requests = requests.filter(created_at__date__lte=filters["until"])
    if filters.get("q"):
        requests = requests.filter(_search(filters["q"]))
    return requests.order_by("-created_at", "-id")


def for_request_table(requests: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    """Everything a row of the request table shows, fetched with the rows (no query per row)."""
    tasks = ProvisioningTask.objects.select_related("ticket").order_by("id")
    return requests.select_related(
        "beneficiary", "endpoint", "requester", "api_client"
    ).prefetch_related(Prefetch("tasks", queryset=tasks))


def request_page(requests: QuerySet[AccessRequest], number, size: int = 50) -> Page:
    """One page of a request list, in three queries: the count, the page's ids, its rows.

    The ids come from the ordered index alone; only those 50 rows are then joined to their
    people, endpoints, tasks and tickets. Letting the database join first and skip later
    would make page 1000 join 50,000 rows to show 50.
    """
    # A page of ids at first; each id is then swapped for its row.
    page: Page[Any] = Paginator(requests.values_list("pk", flat=True), size).get_page(number)
    ids = list(page.object_list)
    by_id = {r.pk: r for r in for_request_table(requests.model.objects.filter(pk__in=ids))}
    page.object_list = [by_id[pk] for pk in ids]
    return page


_NUMBER = re.compile(r"^(?:REQ-)?0*(\d+)$", re.IGNORECASE)


def _search(text: str) -> Q:
    """A request number ("REQ-000042" or "42") or part of the beneficiary's name.

    Names are matched in the identity table first and joined by id: scanning the small
    identity rows once is much cheaper than LIKE over every request joined to its person.
    """
    text = text.strip()
    match = _NUMBER.match(text)
    if match:
        return Q(number=f"REQ-{int(match.group(1)):06d}")
    people = Identity.objects.all()
    for word in text.split():
        people = people.filter(
            Q(username__icontains=word)
            | Q(first_name__icontains=word)
            | Q(last_name__icontains=word)
        )
    return Q(beneficiary__in=people.values("pk"))


def failed_task_ids(requests: Iterable[AccessRequest]) -> dict[int, list[int]]:
    """Failed tasks per request of a page, from the prefetched tasks (no query)."""
    return {
        r.pk: [t.pk for t in r.tasks.all() if t.status == ProvisioningTask.Status.FAILED]
        for r in requests
        if r.status == AccessRequest.Status.FAILED
    }


# --- approval inbox -----------------------------------------------------------------------------


def approval_inbox(limit: int = 100) -> list[AccessRequest]:
    """Requests waiting for a decision, oldest first: the oldest wait has waited longest."""
    return list(
        AccessRequest.objects.filter(status=AccessRequest.Status.PENDING_APPROVAL)
        .select_related(
            "beneficiary",
            "endpoint__security_system",
            "requester",
            "api_client",
            "first_approved_by",
        )
        .order_by("created_at", "id")[:limit]
    )


# --- board --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    statuses: tuple[str, ...]
    order: tuple[str, ...]


# Work in flight shows oldest first (what waits longest); history newest first. Ordering by
# id rides the (status, …) indexes; only "closed" pays for a sort, by when it closed.
COLUMN_ORDER = {
    ProvisioningTask.Column.FAILED: ("-id",),
    ProvisioningTask.Column.CLOSED: ("-completed_at", "-id"),
}
BOARD_COLUMNS = tuple(
    Column(
        column.value,
        column.label,
        tuple(s for s, shown in ProvisioningTask.DISPLAY.items() if shown.column == column),
        COLUMN_ORDER.get(column, ("id",)),
    )
    for column in ProvisioningTask.Column
)
CARDS_PER_COLUMN = 25


@dataclass
class BoardColumn:
    column: Column
    total: int
    cards: list[ProvisioningTask]

    @property
    def hidden(self) -> int:
        return max(self.total - len(self.cards), 0)


def board(*, connection: str = "") -> list[BoardColumn]:
    """The ticket board: one grouped count plus one capped query per column.

    Only people who see every request open the board, so it is not filtered by requester.
    """
    tasks = ProvisioningTask.objects.all()
    if connection:
        tasks = tasks.filter(connection__name=connection)
    counts = dict(tasks.values_list("status").annotate(n=Count("id")).order_by())
    cards = ProvisioningTask.objects.select_related("request__beneficiary", "endpoint", "ticket")
    columns = []
    for column in BOARD_COLUMNS:
        # Pick the page of ids first (an index scan), then join only those rows: joining
        # every task of a busy column before sorting costs a hundred times more.
        page = (
            tasks.filter(status__in=column.statuses)
            .order_by(*column.order)
            .values("pk")[:CARDS_PER_COLUMN]
        )
        rows = list(cards.filter(pk__in=page).order_by(*column.order))
        total = sum(counts.get(s, 0) for s in column.statuses)
        columns.append(BoardColumn(column, total, rows))
    return columns


# --- overview -----------------------------------------------------------------------------------

# The overview's counts: (key, title, the task states counted there), left to right.
OVERVIEW_GROUPS = tuple(
    (
        group.value,
        group.label,
        tuple(s for s, shown in ProvisioningTask.DISPLAY.items() if shown.group == group),
    )
    for group in ProvisioningTask.Group
)


@dataclass
class ConnectionRow:
    connection: Connection
    counts: dict[str, int]
    tokens: list[TokenState]


@dataclass
class Overview:
    connections: list[ConnectionRow]
    totals: dict[str, int]
    oldest_open: Ticket | None
    open_tickets: int
    failed_now: int
    failed_24h: int
    recent_failures: list[ProvisioningTask]
    flagged: list[ProvisioningTask]
    flagged_total: int
    jobs: list[JobRun]
    pending_approval: int
    second_approval_due: int  # of pending_approval: those that have their first approval
    # Callbacks given up and not overtaken by a later delivered one: an API client was not
    # told of a change. Their count, and the newest six requests they concern.
    deliveries_failed: int
    failed_delivery_requests: list[AccessRequest]
    groups: tuple = OVERVIEW_GROUPS


def overview(now: datetime | None = None) -> Overview:
    """Everything on the operator's overview, in twelve queries whatever the volume."""
    now = now or timezone.now()
    waiting = AccessRequest.objects.filter(status=AccessRequest.Status.PENDING_APPROVAL).aggregate(
        all=Count("id"), second=Count("id", filter=Q(first_approved_by__isnull=False))
    )
    per_connection: dict[int, dict[str, int]] = {}
    totals = {key: 0 for key, _, _ in OVERVIEW_GROUPS}
    rows = (
        ProvisioningTask.objects.values_list("connection_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for connection_id, status, n in rows:
        group = ProvisioningTask.DISPLAY[status].group
        counts = per_connection.setdefault(connection_id, {k: 0 for k in totals})
        counts[group] += n
        totals[group] += n

    connections = list(connections_with_tokens())
    connection_rows = [
        ConnectionRow(
            c,
            per_connection.get(c.pk, {k: 0 for k in totals}),
            [token_state(t, now) for t in c.tokens.all()],
        )
        for c in connections
    ]

    open_tickets = Ticket.objects.filter(is_open=True)
    oldest_open = (
        # Rows are written when the ticket is created, so the lowest id is the oldest ticket;
        # walking the primary key stops at the first open one instead of sorting them all.
        open_tickets.select_related("task__request", "connection").order_by("id").first()
    )
    # What is failed now: a task that failed and was retried since is no failure any more.
    failed = ProvisioningTask.objects.filter(status=ProvisioningTask.Status.FAILED)
    flagged = (
        ProvisioningTask.objects.exclude(flag="")
        # Finished tasks only while a note to their ticket failed (the ticket was not told).
        .filter(
            ~Q(status__in=ProvisioningTask.TERMINAL) | Q(notes__status=TicketNote.Status.FAILED)
        )
        .distinct()
        .select_related("request__beneficiary", "ticket", "connection")
        .order_by("id")
    )
    undelivered = CallbackDelivery.objects.filter(
        status=CallbackDelivery.Status.FAILED
    ).not_overtaken()
    return Overview(
        connections=connection_rows,
        totals=totals,
        oldest_open=oldest_open,
        open_tickets=open_tickets.count(),
        failed_now=totals[ProvisioningTask.Group.FAILED],
        failed_24h=failed.filter(updated_at__gte=now - timedelta(hours=24)).count(),
        recent_failures=list(
            failed.select_related("request__beneficiary", "endpoint").order_by(
                "-updated_at", "-id"
            )[:5]
        ),
        flagged=list(flagged[:20]),
        flagged_total=flagged.count(),
        jobs=last_job_runs(),
        pending_approval=waiting["all"],
        second_approval_due=waiting["second"],
        deliveries_failed=undelivered.count(),
        failed_delivery_requests=list(
            AccessRequest.objects.filter(Exists(undelivered.filter(request=OuterRef("pk"))))
            .only("id", "number")
            .order_by("-id")[:6]
        ),
    )


def last_job_runs() -> list[JobRun]:
    """The latest run of every job name, in two queries (names, then those rows)."""
    latest = JobRun.objects.values("name").annotate(last=Max("id")).values_list("last", flat=True)
    return sorted(JobRun.objects.filter(id__in=list(latest)), key=lambda run: run.name)


def my_requests(user: ConsoleUser, limit: int = 10) -> list[AccessRequest]:
    """A requester's own latest requests, for their overview."""
    return list(
        for_request_table(AccessRequest.objects.filter(requester=user)).order_by(
            "-created_at", "-id"
        )[:limit]
    )


# --- request detail -----------------------------------------------------------------------------


@dataclass
class TimelineEntry:
    at: datetime
    kind: str  # "event" or "call"
    event: TaskEvent | None = None
    call: ApiCall | None = None


def request_detail(access_request: AccessRequest) -> tuple[list[ProvisioningTask], list]:
    """The tasks of a request and its timeline: TaskEvents and the ApiCalls of its tasks,
    merged in time order (events first when two share a timestamp)."""
    tasks = list(
        access_request.tasks.select_related("ticket", "connection", "endpoint").order_by("id")
    )
    events = list(access_request.events.select_related("task", "actor_user").order_by("at", "id"))
    refs = [f"task:{t.pk}" for t in tasks] + [
        f"refresh:{t.ticket_id}" for t in tasks if t.ticket_id
    ]
    calls = (
        list(ApiCall.objects.filter(ref__in=refs).order_by("created_at", "id")[:500])
        if refs
        else []
    )
    secrets = [s for c in {t.connection for t in tasks} for s in c.secret_values()]
    mask_calls(calls, secrets)
    timeline = sorted(
        chain(
            (TimelineEntry(e.at, "event", event=e) for e in events),
            (TimelineEntry(c.created_at, "call", call=c) for c in calls),
        ),
        key=lambda entry: (entry.at, entry.kind != "event"),
    )
    return tasks, timeline


def request_outboxes(
    access_request: AccessRequest, tasks: list[ProvisioningTask]
) -> tuple[dict[int, list[TicketNote]], list[CallbackDelivery]]:
    """The notes to tickets not sent yet (or failed), by task, and the request's callback
    deliveries, newest first: two queries."""
    notes: dict[int, list[TicketNote]] = {}
    unsent = TicketNote.objects.filter(task__in=[t.pk for t in tasks]).exclude(
        status=TicketNote.Status.SENT
    )
    for note in unsent.order_by("id"):
        notes.setdefault(note.task_id, []).append(note)
    deliveries = list(
        CallbackDelivery.objects.filter(request=access_request)
        .with_overtaken()
        .order_by("-id")[:20]
    )
    return notes, deliveries


# --- identity -----------------------------------------------------------------------------------


def identity_access(identity: Identity, user: ConsoleUser | None = None) -> list[Account]:
    """Accounts of a person, active ones first, with their entitlements and the request
    that made each.

    For a `user` who may not see everything (a requester), only what their own requests
    for this person concern: the accounts on those endpoints, and of their entitlements
    those the requests named (the person themselves sees all of their own).
    """
    accounts = (
        identity.accounts.select_related("endpoint", "origin_request")
        .prefetch_related(
            Prefetch("entitlements", queryset=AccountEntitlement.objects.order_by("entitlement"))
        )
        .order_by("-active", "endpoint__name", "name")
    )
    if user is None or user.has_perm(VIEW_ALL_PERMISSION) or identity.user_id == user.pk:
        everything = list(accounts)
        for account in everything:
            account.shown_entitlements = list(account.entitlements.all())  # type: ignore[attr-defined]
        return everything
    named: dict[int, set[str]] = {}
    for endpoint_id, entitlements in AccessRequest.objects.filter(
        requester=user, beneficiary=identity
    ).values_list("endpoint_id", "entitlements"):
        named.setdefault(endpoint_id, set()).update(entitlements or [])
    shown = []
    for account in accounts.filter(endpoint_id__in=list(named)):
        account.shown_entitlements = [  # type: ignore[attr-defined]
            e for e in account.entitlements.all() if e.entitlement in named[account.endpoint_id]
        ]
        shown.append(account)
    return shown
