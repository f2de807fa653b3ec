"""Provisioning, the WSRETRY equivalent: claim due tasks with a lease, then create (or
adopt) their tickets. This module holds the claims, the HTTP half of an attempt and the
run that keeps many attempts in flight; provisioning_store.py stores what they found."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, OperationalError, transaction
from django.db import connections as db_connections
from django.db.models import F, Q
from django.dispatch import Signal
from django.utils import timezone

from connections.client import TicketClient
from connections.errors import OTRSError
from connections.models import Connection

from ..limits import LEASE_OWNER
from ..models import ProvisioningTask as Task
from ..models import TaskEvent
from .context import CONTEXT_RELATIONS, task_context
from .provisioning_store import AttemptOutcome, store_outcome, store_outcomes
from .transitions import Actor, TransitionError, _event_row, worker_name

log = logging.getLogger(__name__)

# A batched run checks the lease in the database before a create call only for a task
# claimed longer ago than this (one that waited behind a slow OTRS, or a worker paused),
# or than a quarter of the lease when that is shorter: a pause that outlasts the lease
# must always be caught.
VERIFY_AFTER_SECONDS = 2.0


def _verify_after() -> float:
    return min(VERIFY_AFTER_SECONDS, settings.PROVISION_LEASE_SECONDS / 4)


def lease_length() -> timedelta:
    """How long a claimed task belongs to its worker (PROVISION_LEASE_SECONDS).

    After that another worker may take it over, and searches OTRS first, since the first
    worker may have created the ticket. A live worker renews its leases (LeaseKeeper), so
    the lease only bounds how long the tasks of a killed worker wait.
    """
    return timedelta(seconds=settings.PROVISION_LEASE_SECONDS)


# Sent with `task_ids` once the transaction that made tasks due commits, for instant
# provisioning. tickets.jobs queues them (connected in TicketsConfig.ready): this package
# must not import the jobs that import it.
provisioning_wanted = Signal()


def provision_soon(task_ids: list[int]) -> None:
    """Ask for these tasks to be provisioned now, once the current transaction commits."""
    transaction.on_commit(lambda: provisioning_wanted.send(sender=Task, task_ids=task_ids))


def _due_row(now: datetime) -> Q:
    """Due, judged on the task row's own columns only.

    The claim UPDATE must use only these: a condition through a join makes Django write
    `WHERE id IN (SELECT …)`, and PostgreSQL does not re-check such a subquery against the
    row version a concurrent claim just committed, so two workers could both "win".
    """
    due = Q(status__in=Task.DUE) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    expired_lease = Q(status=Task.Status.CLAIMED, lease_until__lt=now)
    return due | expired_lease


def due_tasks(now: datetime | None = None):
    """Tasks a provisioning run may claim now (their connection must be enabled)."""
    return Task.objects.filter(_due_row(now or timezone.now()), connection__enabled=True)


def task_claim_next(*, owner: str, connection: Connection | None = None) -> Task | None:
    """Claim one due task (see task_claim_batch); None when nothing is due. Runs claim in
    batches; the tests use this to act as one worker holding one task."""
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
                {pk: (status, unknown) for pk, status, unknown in rows}, owner[:LEASE_OWNER], now
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
    lease_until = now + lease_length()
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
                status=Task.Status.CLAIMED,
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
            .filter(
                pk__in=read, status=Task.Status.CLAIMED, lease_owner=owner, lease_until=lease_until
            )
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
            task.outcome_unknown = unknown or was == Task.Status.CLAIMED
            reason = f"attempt {task.attempts} of {task.max_attempts}"
            if was == Task.Status.CLAIMED:
                reason += " (the previous worker's lease ran out)"
            events.append(
                _event_row(
                    request_id=task.request_id,
                    task_id=task.pk,
                    from_status=was,
                    to=Task.Status.CLAIMED,
                    reason=reason,
                    actor=Actor.job(owner),
                )
            )
        TaskEvent.objects.bulk_create(events)
        return tasks


def task_provision(*, task: Task, owner: str) -> str:
    """Create (or adopt) the ticket of a claimed task. Returns the task's new status.

    1. If an earlier attempt's outcome is unknown, search OTRS for the correlation key
       and adopt the ticket found, once a TicketGet proved it carries the key.
    2. Otherwise check the lease is still held, send TicketCreate, and store the ids.
    3. A transient failure waits with backoff while tries are left; a permanent one fails.
    """
    if task.status != Task.Status.CLAIMED or task.lease_owner != owner[:LEASE_OWNER]:
        raise TransitionError(f"Task {task.pk} is not claimed by {owner}.")
    with LeaseKeeper(owner) as keeper:
        keeper.hold([task.pk])
        attempt = _send_attempt(task, owner, verify_lease=True)
    return store_outcome(task, attempt, owner)


def _send_attempt(
    task: Task,
    owner: str,
    *,
    verify_lease: bool = True,
    claimed_at: float | None = None,
    clients: dict | None = None,
) -> AttemptOutcome:
    """Search and/or create the ticket of one claimed task. Only HTTP: no status changes.

    `verify_lease` renews the lease in the database right before TicketCreate and gives
    up when another worker took the task over (or it was cancelled). Without it, a task
    `claimed_at` (monotonic time, taken before the claim) a moment ago skips that
    statement; one claimed longer before its create call (see _verify_after) is checked
    all the same. `clients` keeps
    a worker thread's TicketClient per connection for the run (an edited connection
    applies from the next run, within the job's time budget); its ApiCall rows are then
    returned, not saved.
    """
    ref = f"task:{task.pk}"
    stage = "prepare"
    client = None
    notes: tuple[str, ...] = ()  # why search hits were not adopted
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
            found = client.reconcile(context, ref=ref)
            created, notes = found.ticket, found.notes
            how = "adopted the ticket found by correlation key after an unknown outcome"
        if created is None:
            stage = "create"
            waited = time.monotonic() - claimed_at if claimed_at is not None else 0.0
            if verify_lease or waited > _verify_after():
                holds = Task.objects.filter(
                    pk=task.pk, status=Task.Status.CLAIMED, lease_owner=owner[:LEASE_OWNER]
                )
                if not holds.update(lease_until=timezone.now() + lease_length()):
                    return AttemptOutcome(lost_lease=True, notes=notes, calls=_taken(client))
            created = client.create_ticket(context, ref=ref)
            how = "ticket created"
        return AttemptOutcome(created=created, how=how, notes=notes, calls=_taken(client))
    except OTRSError as exc:
        # Only a create call that surely never reached OTRS clears the mark; a failed
        # search leaves it, so the next attempt searches again before creating.
        clear = (
            not exc.outcome_unknown
            if stage == "create"
            else stage == "prepare" and not task.outcome_unknown
        )
        return AttemptOutcome(error=exc, clear_unknown=clear, notes=notes, calls=_taken(client))
    except Exception as exc:  # our bug or bad data: record it on the task, never lose the task
        return AttemptOutcome.internal_error(task.pk, exc, _taken(client))


def _taken(client: TicketClient | None) -> list:
    return client.take_calls() if client is not None else []


@dataclass
class ProvisionResult:
    claimed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.claimed += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1

    @property
    def errors(self) -> list[str]:
        """A task this run left failed is a failure of the run (its JobRun says Failed)."""
        failed = self.by_status.get(Task.Status.FAILED, 0)
        return [f"{failed} task{'s' if failed != 1 else ''} failed"] if failed else []

    def __str__(self) -> str:
        if not self.claimed:
            return "nothing due"
        tasks = f"{self.claimed} task{'s' if self.claimed != 1 else ''}"
        return f"{tasks}: {Task.count_in_words(self.by_status)}"


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
    owner = (owner or worker_name("worker"))[:LEASE_OWNER]
    budget = settings.JOB_TIME_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    workers = max(1, workers)
    window = 6 * workers
    result = ProvisionResult()
    taken = 0
    runner = _AttemptRunner(owner, workers, deadline)
    keeper = LeaseKeeper(owner).start()
    failure: DatabaseError | None = None
    try:
        while True:
            room = window - runner.outstanding
            if limit is not None:
                room = min(room, limit - taken)
            # Claim in batches, unless nothing is left to wait for.
            if room > 0 and (room >= 3 * workers or not runner.outstanding):
                claim_started = time.monotonic()  # the lease counts from before the claim
                if claim_started < deadline and failure is None:
                    try:
                        tasks = task_claim_batch(owner=owner, size=room, connection=connection)
                    except DatabaseError as exc:
                        # Store what is in flight, then let the job record the failure.
                        failure, tasks = exc, []
                    taken += len(tasks)
                    keeper.hold([task.pk for task in tasks])
                    for task in tasks:
                        runner.submit(task, claim_started)
            if not runner.outstanding:
                break
            stored = store_outcomes(runner.collect(2 * workers), owner)
            # Stored, handed back or lost: no longer this run's. A task whose store failed
            # stays claimed, and its lease now runs out for another worker to take it.
            keeper.drop([task.pk for task, _ in stored])
            for task, status in stored:
                result.count(status)
                if progress:
                    progress(f"{task.correlation_key} {status}")
    finally:
        try:
            runner.close()  # waits for calls still in flight: their leases are kept meanwhile
        finally:
            keeper.stop()
    if failure is not None:
        raise failure
    return result


class LeaseKeeper:
    """Renews the leases of the tasks a run holds, every third of a lease, from a thread
    of its own: a live worker keeps its tasks however long a call takes, and the tasks of
    a killed one are free for another worker within one lease.

    Why this cannot lead to a second ticket: another worker takes a task over only once
    its lease ran out, that is once no renewal came for a whole lease, and it searches
    OTRS for the task's correlation key before it creates (`outcome_unknown`, set at the
    claim). A worker that was stopped meanwhile (a pause, a slow disk, a debugger) finds
    its lease gone before it creates: its lease is checked in the database right before a
    create call whenever the task was claimed more than a moment before (_verify_after),
    and that check renews the lease only while it is still its own. What no lease can
    exclude is a pause longer than a whole lease between that check and the create
    request leaving the process; a longer lease only makes the pause longer.

    A worker that hangs (alive, but stuck) would keep its tasks for ever: renewals stop
    once the run is older than django-q2's job timeout, after which a cluster would have
    killed it anyway.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner[:LEASE_OWNER]
        self._renew_until = time.monotonic() + settings.Q_CLUSTER["timeout"]
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-keeper:{self.owner}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hold(self, task_ids: list[int]) -> None:
        with self._lock:
            self._held.update(task_ids)

    def drop(self, task_ids: list[int]) -> None:
        with self._lock:
            self._held.difference_update(task_ids)

    def renew(self) -> int:
        """Extend the leases still held by this owner; returns how many were renewed."""
        with self._lock:
            held = list(self._held)
        if not held:
            return 0
        # Only rows still claimed by this owner: a task cancelled or taken over meanwhile
        # is left alone (and its attempt finds out before it creates anything).
        return Task.objects.filter(
            pk__in=held, status=Task.Status.CLAIMED, lease_owner=self.owner
        ).update(lease_until=timezone.now() + lease_length())

    def _beat(self) -> None:
        interval = settings.PROVISION_LEASE_SECONDS / 3
        try:
            while not self._stopping.wait(interval):
                if time.monotonic() > self._renew_until:
                    log.warning(
                        "%s has run longer than the job timeout; its leases run out now",
                        self.owner,
                    )
                    break
                try:
                    self.renew()
                except DatabaseError as exc:
                    # The next beat tries again; two more may fail before the lease runs out.
                    log.warning("renewing the leases of %s failed: %s", self.owner, exc)
        finally:
            # This thread's own database connection (Django's are per thread).
            db_connections[Task.objects.db].close()


class _AttemptRunner:
    """Runs provisioning attempts (the HTTP half) for provision_due: in the calling thread
    for one worker, else on a pool of `workers` threads."""

    # How long collect() waits for more results to make a fuller batch to store; the
    # workers go on with the claimed tasks meanwhile.
    GATHER_SECONDS = 0.1

    def __init__(self, owner: str, workers: int, deadline: float) -> None:
        self.owner = owner
        self.deadline = deadline
        self.workers = workers
        # Each thread's TicketClient per connection, kept for the run.
        self._local = threading.local()
        self._waiting: list[tuple[Task, float]] = []  # one worker: run by collect()
        self._running: dict[Future[AttemptOutcome], Task] = {}  # in the order submitted
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="provision") if workers > 1 else None
        )

    @property
    def outstanding(self) -> int:
        return len(self._waiting) + len(self._running)

    def submit(self, task: Task, claimed_at: float) -> None:
        if self._pool is None:
            self._waiting.append((task, claimed_at))
        else:
            self._running[self._pool.submit(self._run, task, claimed_at)] = task

    def collect(self, wanted: int) -> list[tuple[Task, AttemptOutcome]]:
        """At least one finished attempt; up to `wanted` when they finish close together."""
        if self._pool is None:
            waiting, self._waiting = self._waiting, []
            return [(task, self._run(task, claimed_at)) for task, claimed_at in waiting]
        wanted = max(1, min(wanted, len(self._running)))
        done, pending = wait(self._running, return_when=FIRST_COMPLETED)
        until = time.monotonic() + self.GATHER_SECONDS
        while len(done) < wanted and pending:
            more, pending = wait(
                pending, timeout=max(0.0, until - time.monotonic()), return_when=FIRST_COMPLETED
            )
            if not more:
                break
            done |= more
        results = []
        for future in [f for f in self._running if f in done][:wanted]:
            task = self._running.pop(future)
            failure = future.exception()
            if failure is None:
                results.append((task, future.result()))
            else:
                # A worker that dies must not lose its task (nor leave this run waiting):
                # the failure is stored like any unexpected error.
                results.append((task, AttemptOutcome.internal_error(task.pk, failure, [])))
        return results

    def _run(self, task: Task, claimed_at: float) -> AttemptOutcome:
        if time.monotonic() > self.deadline:
            # Behind a slow OTRS the claimed tasks outlast the run's time budget: hand
            # them back rather than overrun the job's timeout.
            return AttemptOutcome(released=True)
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        # Claimed a moment ago together with its lease: asking the database again whether
        # it is still ours would cost a statement per ticket (see _send_attempt).
        return _send_attempt(
            task, self.owner, verify_lease=False, claimed_at=claimed_at, clients=clients
        )

    def close(self) -> None:
        """Stop the pool. Tasks claimed but never sent (after an error here) stay claimed
        until their lease runs out; the next worker searches before creating."""
        if self._pool is None:
            return
        for future in self._running:
            future.cancel()
        # Django's database connections belong to the thread that opened them, and the pool
        # has no hook for a thread's end: each worker thread closes its own now. One call
        # per thread: the barrier holds every thread in its call until all have one.
        barrier = threading.Barrier(self.workers)
        for _ in range(self.workers):
            self._pool.submit(_close_connections, barrier)
        self._pool.shutdown(wait=True)


def _close_connections(barrier: threading.Barrier) -> None:
    try:
        db_connections.close_all()
    finally:
        barrier.wait()
