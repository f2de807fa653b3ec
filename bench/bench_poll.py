"""Poll cycle over many open tickets: HTTP calls, wall time and memory, batch vs per ticket.

    python -m bench poll            (BENCH_POLL_TICKETS=10000 by default)

Target: a cycle over N open tickets makes at most ceil(N / batch) + 5 HTTP calls, and its
memory stays flat as N grows (the poller iterates; it never loads all tickets).
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
import uuid
from pathlib import Path

from bench._setup import setup_django
from bench._sim import ROOT, calls, import_connection, simulator


def _state_file(n: int) -> Path:
    """A simulator state file with n open tickets (built directly in the store: fast)."""
    from otrs_sim.store import Store

    path = ROOT / "var" / "bench" / f"sim-{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    store = Store("bridge", "bridge-demo-password", state_file=str(path))
    for i in range(n):
        store.new_ticket(
            {"Title": f"[BR-BENCH{i:06d}] bench", "CustomerUserID": "bench@example.com"}, 2
        )
    store.save()
    return path


def _cycle(connection, url: str, batch: int) -> dict:
    from tickets import services
    from tickets.models import Ticket

    type(connection).objects.filter(pk=connection.pk).update(batch_size=batch)
    connection.refresh_from_db()
    Ticket.objects.filter(connection=connection).update(last_polled_at=None)
    before = calls(url)
    tracemalloc.start()
    started = time.perf_counter()
    result = services.tickets_poll(connection=connection, budget_seconds=3600)
    wall = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "batch": batch,
        "tickets": result.tickets,
        "calls": calls(url) - before,
        "wall": wall,
        "peak_kib": peak / 1024,
    }


def run(n: int, batches: tuple[int, ...]) -> list[dict]:
    from tickets.models import Ticket

    with simulator("--state", str(_state_file(n))) as url:
        connection = import_connection(url, name=f"bench-{n}-{uuid.uuid4().hex[:6]}")
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
        return [_cycle(connection, url, b) for b in batches]


def main() -> None:
    setup_django()
    n = int(os.environ.get("BENCH_POLL_TICKETS", "10000"))
    print(f"poll cycle over {n} open tickets (simulator in its own process, no latency)")
    print(
        f"{'batch':>6} {'tickets':>8} {'HTTP calls':>11} {'limit':>7} {'wall s':>8} {'tickets/s':>10} {'peak KiB':>9}"
    )
    for row in run(n, (50, 1)):
        limit = math.ceil(n / row["batch"]) + 5
        print(
            f"{row['batch']:>6} {row['tickets']:>8} {row['calls']:>11} {limit:>7} {row['wall']:>8.2f}"
            f" {row['tickets'] / row['wall']:>10.0f} {row['peak_kib']:>9.0f}"
        )
    print("memory as open tickets grow (batch 50):")
    for size in (1000, 4000, n):
        [row] = run(size, (50,))
        print(
            f"  {size:>6} open tickets: peak {row['peak_kib']:.0f} KiB, {row['calls']} calls, {row['wall']:.2f} s"
        )


if __name__ == "__main__":
    main()
