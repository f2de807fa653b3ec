"""Poll cycles over many open tickets, side by side: HTTP calls, wall time and peak memory.

    python -m bench poll      (BENCH_POLL_TICKETS=10000 and BENCH_POLL_CHANGED=0.01 by default)

One simulator holds N open tickets, all last changed an hour ago. The shipped package polls
them: its first cycle sweeps every open ticket (and sets the watermark); then 1% of the
tickets change and the next cycle asks for the changes only. The same quiet cycle as a
sweep (a status document without changeSearchCall, as before) and the sweep with one
ticket per call come beside it.

Targets: a change-search cycle makes at most 2 + ceil(changed / batch) HTTP calls (the
search, a login at most, the batches of changed tickets); a sweep at most
ceil(N / batch) + 5, with memory flat as N grows (it never loads all tickets at once).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
import tracemalloc
import uuid
from pathlib import Path

import requests

from bench._setup import setup_django
from bench._sim import ROOT, calls, import_connection, simulator

HOUR = 3600


def _state_file(n: int) -> Path:
    """A simulator state file with n open tickets last changed an hour ago (built directly
    in the store: fast)."""
    from otrs_sim.store import Store

    path = ROOT / "var" / "bench" / f"sim-{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    an_hour_ago = time.time() - HOUR
    store = Store("bridge", "bridge-demo-password", state_file=str(path), clock=lambda: an_hour_ago)
    for i in range(n):
        store.new_ticket(
            {"Title": f"[BR-BENCH{i:06d}] bench", "CustomerUserID": "bench@example.com"}, 2
        )
    store.save()
    return path


def _cycle(connection, url: str, what: str, *, sweep_all: bool = False) -> dict:
    from tickets import services
    from tickets.models import Ticket

    connection.refresh_from_db()
    if sweep_all:
        Ticket.objects.filter(connection=connection).update(last_polled_at=None)
    before = calls(url)
    tracemalloc.start()
    started = time.perf_counter()
    result = services.tickets_poll(connection=connection, budget_seconds=3600)
    wall = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not result.errors, result.errors
    return {
        "cycle": what,
        "batch": connection.batch_size,
        "tickets": result.tickets,
        "calls": calls(url) - before,
        "wall": wall,
        "peak_kib": peak / 1024,
    }


def _without_change_search(connection) -> None:
    document = copy.deepcopy(connection.ticket_status_json)
    document.pop("changeSearchCall", None)
    type(connection).objects.filter(pk=connection.pk).update(ticket_status_json=document)


def _change(url: str, ticket_ids: list[int]) -> None:
    """What agents do between two cycles: these tickets move on (new -> open)."""
    with requests.Session() as session:
        for ticket_id in ticket_ids:
            answer = session.post(
                f"{url}/_sim/tickets/{ticket_id}/state", json={"state": "open"}, timeout=10
            )
            answer.raise_for_status()


def _open_tickets(connection, n: int) -> None:
    from tickets.models import Ticket

    Ticket.objects.bulk_create(
        Ticket(
            connection=connection,
            ticket_id=i + 2,
            ticket_number=f"bench{i}",
            state="new",
            state_type="new",
        )
        for i in range(n)
    )


def side_by_side(n: int, changed: int, *, first_only: bool = False) -> list[dict]:
    """The cycles of the table, in order, on one simulator."""
    with simulator("--state", str(_state_file(n))) as url:
        connection = import_connection(url, name=f"bench-{n}-{uuid.uuid4().hex[:6]}")
        _open_tickets(connection, n)
        rows = [_cycle(connection, url, "full sweep (the first cycle: no watermark yet)")]
        if first_only:
            return rows
        _change(url, random.Random(n).sample(range(2, n + 2), changed))
        rows.append(_cycle(connection, url, f"change search, {changed} changed"))
        # The same quiet cycle as it was before the change search: every open ticket.
        _without_change_search(connection)
        rows.append(_cycle(connection, url, "sweep (no changeSearchCall)", sweep_all=True))
        type(connection).objects.filter(pk=connection.pk).update(batch_size=1)
        rows.append(_cycle(connection, url, "sweep, one ticket per call", sweep_all=True))
        return rows


def _limit(row: dict, changed: int, n: int) -> int:
    if row["cycle"].startswith("change search"):
        return 2 + math.ceil(changed / row["batch"])
    return math.ceil(n / row["batch"]) + 5


def main() -> None:
    setup_django()
    n = int(os.environ.get("BENCH_POLL_TICKETS", "10000"))
    changed = max(1, round(n * float(os.environ.get("BENCH_POLL_CHANGED", "0.01"))))
    print(
        f"poll cycles over {n} open tickets, {changed} of them changed before the second "
        "(simulator in its own process, no latency)"
    )
    print(
        f"{'cycle':<48} {'batch':>5} {'tickets':>7} {'HTTP calls':>10} {'limit':>6}"
        f" {'wall s':>7} {'peak KiB':>8}"
    )
    for row in side_by_side(n, changed):
        limit = _limit(row, changed, n)
        flag = "" if row["calls"] <= limit else "  OVER THE LIMIT"
        print(
            f"{row['cycle']:<48} {row['batch']:>5} {row['tickets']:>7} {row['calls']:>10}"
            f" {limit:>6} {row['wall']:>7.2f} {row['peak_kib']:>8.0f}{flag}"
        )
    print("memory of a sweep as open tickets grow (batch 50):")
    for size in (1000, 4000, n):
        [sweep] = side_by_side(size, 0, first_only=True)
        print(
            f"  {size:>6} open tickets: peak {sweep['peak_kib']:.0f} KiB, {sweep['calls']} calls,"
            f" {sweep['wall']:.2f} s"
        )


if __name__ == "__main__":
    main()
