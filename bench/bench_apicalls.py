"""The console, the poll cycle, /metrics and the retention job over 5 million call log rows.

    python -m bench apicalls
    BENCH_DATABASE_URL=postgres://…/bench python -m bench apicalls

Every OTRS call leaves an ApiCall row: about 144,000 a day at 10,000 open tickets, so 35
days hold 5 million. This fills a throwaway database with BENCH_APICALLS_REQUESTS requests
(their tasks and tickets) and BENCH_APICALLS rows spread evenly over the last 35 days
(60% poll calls, 30% of tasks, 10% webhook refreshes; the last hour's not yet counted by
/metrics), bulk-loaded (COPY on PostgreSQL, executemany on SQLite). Then it times:

- the pages that read call rows or all tables (median of BENCH_CONSOLE_RUNS, 7, after
  one warm-up, with their SQL query count): overview, board, request list, a request's
  timeline, the connection page, the admin's call log, /metrics and /readyz;
- a poll cycle (the simulator in its own process, BENCH_APICALLS_TICKETS open tickets: a
  full sweep, then a change search with 1% changed) on the empty table and the full one;
- the retention job: its first run (every row older than 30 days, about a seventh) and an
  hourly run an hour later.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import timedelta

from bench._setup import setup_django
from bench.bench_console import RUNS

ROWS = int(os.environ.get("BENCH_APICALLS", "5000000"))
REQUESTS = int(os.environ.get("BENCH_APICALLS_REQUESTS", "20000"))
TICKETS = int(os.environ.get("BENCH_APICALLS_TICKETS", "2000"))
DAYS = 35
LOAD_BATCH = 50_000
CALLS = ("TicketGet", "TicketGet", "TicketSearch", "TicketCreate", "SessionCreate")
URL = "http://otrs.example.com/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
REQUEST_TEXT = 'Content-Type: application/json\n\n{"SessionID": "********", "TicketID": "%d", "DynamicFields": 1}'
RESPONSE_TEXT = (
    '{"Ticket": [{"TicketID": "%d", "TicketNumber": "2026120710%06d", "State": "open", '
    '"StateType": "open", "Queue": "Access", "Title": "[BR-%010X] Add access crm-read", '
    '"Changed": "2026-12-07 05:00:00"}]}'
)


def _rows(count: int, connection_id: int, refs: list[str]):
    """The rows, oldest first, as tuples in COLUMNS order (deterministic)."""
    from django.utils import timezone

    now = timezone.now()
    start = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / count
    uncounted_from = now - timedelta(hours=1)
    rng = random.Random(20261207)
    for i in range(count):
        at = start + step * i
        kind = i % 10
        ref = "poll:bench" if kind < 6 else refs[rng.randrange(len(refs))]
        outcome = "ok" if i % 50 else ("error" if i % 100 else "timeout")
        duration = 15 + rng.randrange(400) if outcome != "timeout" else 30_000
        ticket = i % 100_000
        yield (
            connection_id,
            ref,
            CALLS[i % len(CALLS)],
            "GET",
            f"{URL}/Ticket/{ticket}?SessionID=********",
            200 if outcome == "ok" else 500,
            duration,
            outcome,
            "" if outcome == "ok" else "OTRS answered 500",
            REQUEST_TEXT % ticket,
            RESPONSE_TEXT % (ticket, ticket, ticket),
            at,
            at < uncounted_from,
        )


COLUMNS = (
    "connection_id",
    "ref",
    "call_name",
    "method",
    "url",
    "status_code",
    "duration_ms",
    "outcome",
    "error",
    "request_excerpt",
    "response_excerpt",
    "created_at",
    "counted",
)


def load_calls(count: int, connection_id: int, refs: list[str]) -> float:
    """Bulk-load `count` rows; the seconds it took."""
    from django.db import connection, transaction

    started = time.perf_counter()
    rows = _rows(count, connection_id, refs)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            sql = f"COPY connections_apicall ({', '.join(COLUMNS)}) FROM STDIN"
            with cursor.cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute("ANALYZE connections_apicall")
    else:
        sql = (
            f"INSERT INTO connections_apicall ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(COLUMNS))})"
        )
        batch: list[tuple] = []
        adapt = connection.ops.adapt_datetimefield_value  # Django's own text for a datetime
        at = COLUMNS.index("created_at")
        for row in rows:
            batch.append((*row[:at], adapt(row[at]), *row[at + 1 :]))
            if len(batch) == LOAD_BATCH:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.executemany(sql, batch)
                batch = []
        if batch:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, batch)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return time.perf_counter() - started


def poll_cycles(label: str) -> None:
    """A full sweep, then a change search with 1% of the tickets changed, on a simulator."""
    from bench._sim import import_connection, simulator
    from bench.bench_poll import _change, _cycle, _open_tickets, _state_file

    with simulator("--state", str(_state_file(TICKETS))) as url:
        connection = import_connection(url, name=f"bench-poll-{uuid.uuid4().hex[:6]}")
        _open_tickets(connection, TICKETS)
        sweep = _cycle(connection, url, "sweep")
        changed = max(1, TICKETS // 100)
        _change(url, random.Random(1).sample(range(2, TICKETS + 2), changed))
        search = _cycle(connection, url, "change search")
    print(
        f"  poll cycle, {label}: full sweep of {TICKETS:,} tickets {sweep['wall']:.2f} s "
        f"({sweep['calls']} calls); change search, {changed} changed {search['wall']:.2f} s "
        f"({search['calls']} calls)",
        flush=True,
    )


def pages(client, request_pk: int) -> None:
    from bench.bench_console import measure
    from connections.models import Connection

    # The benchmark's connections are not polled by a worker: out of readiness's way.
    Connection.objects.update(enabled=False)
    urls = {
        "overview": "/",
        "board": "/board/",
        "request list": "/requests/",
        "request timeline": f"/requests/{request_pk}/",
        "connection page": "/connections/bench/",
        "admin call log": "/admin/connections/apicall/",
        "admin call log, filtered": "/admin/connections/apicall/?outcome__exact=timeout",
        "/metrics": "/metrics",
        "/readyz": "/readyz",
    }
    for name, url in urls.items():
        median, queries = measure(client, url)
        print(f"    {name:<26} {median:>8.1f} ms {queries:>4} queries", flush=True)


def main() -> None:
    setup_django()
    from django.conf import settings
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from bench.bench_console import _drop_sqlite_file
    from connections.models import ApiCall, Connection
    from tests import factories
    from tests.console_data import make_requests
    from tickets import services
    from tickets.models import ProvisioningTask

    setup_test_environment()
    database = settings.DATABASES["default"]
    vendor = "PostgreSQL" if database["ENGINE"].endswith("postgresql") else "SQLite"
    print(f"  {vendor}; {ROWS:,} call log rows over {DAYS} days, {REQUESTS:,} requests")
    try:
        endpoint = factories.endpoint(Connection.objects.create(name="bench"), name="crm")
        connection = endpoint.security_system.service_desk_connection
        make_requests(REQUESTS, endpoint=endpoint, requester=factories.user("alice", "requesters"))
        tasks = list(ProvisioningTask.objects.values_list("pk", "ticket_id"))
        refs = [f"task:{pk}" for pk, _ in tasks] * 3 + [
            f"refresh:{ticket}" for _, ticket in tasks if ticket
        ]
        poll_cycles("empty call log")

        seconds = load_calls(ROWS, connection.pk, refs)
        print(
            f"  loaded {ROWS:,} rows in {seconds:.1f} s ({ROWS / seconds:,.0f} rows/s)", flush=True
        )
        client = Client()
        client.force_login(factories.user("root", "admins", superuser=True))
        task = ProvisioningTask.objects.filter(ticket__isnull=False).order_by("pk").first()
        assert task is not None
        print(f"  pages with {ApiCall.objects.count():,} rows (median of {RUNS} runs):")
        pages(client, task.request_id)
        poll_cycles(f"{ROWS:,} rows")

        started = time.perf_counter()
        first = services.api_calls_prune(budget_seconds=3600)
        took = time.perf_counter() - started
        print(
            f"  retention, first run: {first.deleted:,} deleted, {first.kept:,} kept, "
            f"{took:.1f} s ({first.deleted / took:,.0f} rows/s)",
            flush=True,
        )
        later = timezone.now() + timedelta(hours=1)
        started = time.perf_counter()
        hourly = services.api_calls_prune(budget_seconds=3600, now=later)
        took = time.perf_counter() - started
        print(
            f"  retention, an hour later: {hourly.deleted:,} deleted, {hourly.kept:,} kept, "
            f"{took:.2f} s",
            flush=True,
        )
        print(f"  pages with {ApiCall.objects.count():,} rows (median of {RUNS} runs):")
        pages(client, task.request_id)
    finally:
        _drop_sqlite_file(database)


if __name__ == "__main__":
    main()
