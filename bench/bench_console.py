"""Console list pages over 100,000 requests: `python -m bench.bench_console` (or `make bench`).

Fills a throwaway database (bench/_setup.py) with 100,000 requests in every state, their
tasks and tickets, with bulk_create, then times the pages people open all day with the
Django test client: the request list (first page, a filtered page, a search, a deep page),
the board and the overview. Each number is the median of several runs after one warm-up,
with the number of SQL queries beside it. The issue's budget is 300 ms for a list page.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench._setup import setup_django

ROWS = int(os.environ.get("BENCH_CONSOLE_ROWS", "100000"))
RUNS = int(os.environ.get("BENCH_CONSOLE_RUNS", "7"))
BUDGET_MS = 300


def fill(rows: int):
    from connections.models import Connection
    from tests import factories
    from tests.console_data import make_requests

    endpoint = factories.endpoint(Connection.objects.create(name="bench"), name="crm")
    requester = factories.user("alice", "requesters")
    started = time.perf_counter()
    make_requests(rows, endpoint=endpoint, requester=requester, events=False)
    print(f"  filled {rows:,} requests in {time.perf_counter() - started:.1f} s", flush=True)
    return endpoint


def measure(client, url: str) -> tuple[float, int]:
    """Median milliseconds over RUNS runs (after one warm-up) and the queries of one run."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    count = len(queries.captured_queries)  # now: a later request may reset the query log
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), count


def main() -> None:
    setup_django()
    from django.conf import settings
    from django.test import Client
    from django.test.utils import setup_test_environment

    from tests import factories

    setup_test_environment()  # allows "testserver" as host, like the test suite
    database = settings.DATABASES["default"]
    try:
        endpoint = fill(ROWS)
        client = Client()
        client.force_login(factories.user("olga", "operators"))
        pages = {
            "request list, first page": "/requests/",
            "request list, filtered": f"/requests/?status=failed&endpoint={endpoint.pk}&operation=add_access",
            "request list, search": "/requests/?q=person04242",
            "request list, page 1000": "/requests/?page=1000",
            "board": "/board/",
            "overview": "/",
        }
        print(f"  {'page':<28} {'median':>9} {'queries':>8}   (budget {BUDGET_MS} ms, {RUNS} runs)")
        for name, url in pages.items():
            median, queries = measure(client, url)
            flag = "" if median < BUDGET_MS else "  OVER BUDGET"
            print(f"  {name:<28} {median:>6.1f} ms {queries:>8}{flag}", flush=True)
    finally:
        _drop_sqlite_file(database)


def _drop_sqlite_file(database: dict) -> None:
    """Remove the throwaway SQLite file (a BENCH_DATABASE_URL database is left alone)."""
    if os.environ.get("BENCH_DATABASE_URL") or not database["ENGINE"].endswith("sqlite3"):
        return
    from django.db import connection

    connection.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database['NAME']}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
