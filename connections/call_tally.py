"""The running totals of OTRS calls that /metrics reports, folded from the ApiCall rows.

Every process that calls OTRS (gunicorn workers, django-q2 clusters, commands, on any
machine) already writes an ApiCall row per call. The totals are made from those rows, in
the database, so one scrape of any web process sees every call of every process, and a
restart resets nothing. Each row is added in once (`ApiCall.counted`), at a scrape or by
the retention job just before it deletes the row, so the totals only grow as a Prometheus
counter must. Folding takes a lock (PostgreSQL advisory lock; SQLite's write lock is taken
at BEGIN), so two scrapes at once never count a row twice.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection as db
from django.db import transaction

from .models import ApiCall, ApiCallTally

# Rows folded per scrape at most: a scrape stays quick even after a long pause; the rest
# is folded by the next scrapes.
FOLD_BATCH = 10_000
# Any fixed number: the advisory lock's key among the application's locks.
_LOCK_KEY = 0x0742_7A11

# (connection name, call name, outcome, duration in ms) of one call.
CallFacts = tuple[str | None, str, str, int]
ROW_FIELDS = ("connection__name", "call_name", "outcome", "duration_ms")


@dataclass
class _Sums:
    calls: int = 0
    duration_ms: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(ApiCallTally.BUCKETS_MS) + 1))


def lock_tallies() -> None:
    """Serialise folding with every other folder until the transaction ends."""
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


def add_to_tallies(rows: Iterable[CallFacts]) -> None:
    """Add calls to the totals: one read and one upsert, whatever the number of rows.

    Call inside a transaction after lock_tallies(), and mark the rows counted (or delete
    them) in the same transaction.
    """
    sums: dict[tuple[str, str, str], _Sums] = {}
    for connection_name, call_name, outcome, duration_ms in rows:
        key = (connection_name or "", call_name, outcome)
        entry = sums.setdefault(key, _Sums())
        entry.calls += 1
        entry.duration_ms += duration_ms
        entry.buckets[bisect_left(ApiCallTally.BUCKETS_MS, duration_ms)] += 1
    if not sums:
        return
    existing = {
        (t.connection_name, t.call_name, t.outcome): t
        for t in ApiCallTally.objects.filter(
            connection_name__in={k[0] for k in sums},
            call_name__in={k[1] for k in sums},
            outcome__in={k[2] for k in sums},
        )
    }
    tallies = []
    for key, add in sums.items():
        tally = existing.get(key) or ApiCallTally(
            connection_name=key[0], call_name=key[1], outcome=key[2], buckets=_Sums().buckets
        )
        # A tally written before BUCKETS_MS grew keeps its counts in the first buckets.
        old = list(tally.buckets) + [0] * (len(add.buckets) - len(tally.buckets))
        tally.calls += add.calls
        tally.duration_ms += add.duration_ms
        tally.buckets = [a + b for a, b in zip(old, add.buckets, strict=False)]
        # Without its id, so all go in one INSERT … ON CONFLICT (rows with and without an
        # id would take one statement each).
        tally.pk = None
        tallies.append(tally)
    ApiCallTally.objects.bulk_create(
        tallies,
        update_conflicts=True,
        unique_fields=["connection_name", "call_name", "outcome"],
        update_fields=["calls", "duration_ms", "buckets"],
    )


def count_new_calls(limit: int = FOLD_BATCH) -> int:
    """Fold up to `limit` uncounted ApiCall rows into the totals; how many were folded."""
    # A read first: with nothing to fold, no write lock (SQLite takes it at BEGIN).
    if not ApiCall.objects.filter(counted=False).exists():
        return 0
    with transaction.atomic():
        lock_tallies()
        rows = list(
            ApiCall.objects.filter(counted=False)
            .order_by("id")
            .values_list("id", *ROW_FIELDS)[:limit]
        )
        if not rows:
            return 0
        add_to_tallies(row[1:] for row in rows)
        ApiCall.objects.filter(pk__in=[row[0] for row in rows]).update(counted=True)
    return len(rows)
