"""Retention: deleting old OTRS call log rows in bounded batches.

Every call to OTRS leaves an ApiCall row (about 144,000 a day at 10,000 open tickets).
Rows older than APICALL_RETENTION_DAYS go, except the calls of a task that is not final
(its timeline still needs them): a row names its cause with an opaque string, `task:<id>`
or `refresh:<ticket pk>`, and those of a task still open are kept until it ends. TaskEvents
are never deleted. Each batch is one transaction: the rows are added to the /metrics
totals (connections.call_tally) and deleted together, so the counters never lose a call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connections.call_tally import ROW_FIELDS, add_to_tallies, lock_tallies
from connections.models import ApiCall

from ..models import ProvisioningTask as Task
from ..models import parse_id

# Rows looked at per transaction: short enough that the poller and the workers, which
# write ApiCall rows all along, never wait long for SQLite's write lock.
PRUNE_BATCH = 5_000


@dataclass
class PruneResult:
    deleted: int = 0
    kept: int = 0
    cutoff: datetime | None = None
    finished: bool = True
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        days = settings.APICALL_RETENTION_DAYS
        text = (
            f"{self.deleted:,} call log row{'s' if self.deleted != 1 else ''} older than "
            f"{days} day{'s' if days != 1 else ''} deleted"
        )
        if self.kept:
            text += f", {self.kept:,} kept for tasks still in progress"
        if not self.finished:
            text += "; time budget spent, the next run goes on"
        return text


def _live_refs(refs: set[str]) -> set[str]:
    """The refs among `refs` whose task is not final (two queries, whatever their number)."""
    task_ids: dict[int, str] = {}
    ticket_pks: dict[int, str] = {}
    for ref in refs:
        kind, _, number = ref.partition(":")
        pk = parse_id(number)
        if pk is not None and kind == "task":
            task_ids[pk] = ref
        elif pk is not None and kind == "refresh":
            ticket_pks[pk] = ref
    live = set()
    if task_ids:
        open_tasks = Task.objects.filter(pk__in=task_ids).exclude(status__in=Task.TERMINAL)
        live |= {task_ids[pk] for pk in open_tasks.values_list("pk", flat=True)}
    if ticket_pks:
        open_tickets = Task.objects.filter(ticket_id__in=ticket_pks).exclude(
            status__in=Task.TERMINAL
        )
        live |= {ticket_pks[pk] for pk in open_tickets.values_list("ticket_id", flat=True)}
    return live


def api_calls_prune(
    *,
    days: int | None = None,
    batch: int = PRUNE_BATCH,
    budget_seconds: float | None = None,
    now: datetime | None = None,
) -> PruneResult:
    """Delete ApiCall rows older than `days` (APICALL_RETENTION_DAYS), oldest first.

    1. Read the next `batch` old rows after the last one looked at (created_at, id).
    2. Keep those of tasks that are not final; add the others to the call totals and
       delete them, in one transaction.
    3. Stop when no old row is left or the time budget is spent (the next run goes on).
    """
    days = settings.APICALL_RETENTION_DAYS if days is None else days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    budget = settings.JOB_TIME_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    result = PruneResult(cutoff=cutoff)
    after: tuple[datetime, int] | None = None
    while True:
        if time.monotonic() >= deadline:
            result.finished = False
            return result
        old = ApiCall.objects.filter(created_at__lt=cutoff)
        if after is not None:
            # After the last row looked at; the plain lower bound on created_at keeps this an
            # index range scan (an OR alone made PostgreSQL read the table in every batch).
            old = old.filter(
                Q(created_at__gte=after[0]) & (Q(created_at__gt=after[0]) | Q(id__gt=after[1]))
            )
        with transaction.atomic():
            lock_tallies()
            rows = list(
                old.order_by("created_at", "id").values_list(
                    "id", "created_at", "ref", "counted", *ROW_FIELDS
                )[:batch]
            )
            if not rows:
                return result
            live = _live_refs({row[2] for row in rows if row[2]})
            gone = [row for row in rows if row[2] not in live]
            add_to_tallies(row[4:] for row in gone if not row[3])
            if gone:
                ApiCall.objects.filter(pk__in=[row[0] for row in gone]).delete()
        result.deleted += len(gone)
        result.kept += len(rows) - len(gone)
        after = (rows[-1][1], rows[-1][0])
