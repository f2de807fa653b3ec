"""Account import at its limit: `python -m bench import` (or `make bench`).

Builds a CSV of IMPORT_MAX_ROWS rows (every person new, two entitlements each), times
parsing it, a dry run, the import itself (one transaction) and a second import of the same
file, which changes nothing. Runs on a throwaway database (bench/_setup.py).
"""

from __future__ import annotations

import os
import time

from bench._setup import setup_django

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "0"))


def timed(label: str, work):
    started = time.perf_counter()
    result = work()
    print(f"  {label}: {time.perf_counter() - started:.2f} s", flush=True)
    return result


def main() -> None:
    setup_django()
    from connections.models import Connection
    from tests import factories
    from tickets import limits
    from tickets.services import accounts

    rows = ROWS or limits.IMPORT_MAX_ROWS
    endpoint = factories.endpoint(Connection.objects.create(name="bench-import"), name="crm")
    lines = ["username,email,first_name,last_name,account_name,entitlements"]
    lines += [
        f"user{i},user{i}@example.com,First{i},Last{i},acc{i},crm-read;crm-write"
        for i in range(rows)
    ]
    data = ("\n".join(lines) + "\n").encode()
    print(f"  {rows:,} rows, {len(data):,} bytes", flush=True)
    parsed = timed("parse", lambda: accounts.parse_csv(data))

    def run(**kw):
        return accounts.import_rows(endpoint=endpoint, rows=parsed, actor="bench", **kw)

    report = timed("dry run", lambda: run(dry_run=True))
    assert not report.written and len(report.accounts_created) == rows
    report = timed("import", run)
    assert report.written and len(report.accounts_created) == rows, report
    report = timed("import again (changes nothing)", run)
    assert report.unchanged == rows and not report.accounts_created, report
