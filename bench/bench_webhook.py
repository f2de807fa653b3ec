"""How fast the OTRS webhook answers: `python -m bench.bench_webhook`.

The design promises `{}` in under 50 ms, because an OTRS invoker waits for the answer
(a synchronous one even inside the agent's own request). Every run takes the real path:
the secret check, the ticket lookup and a real enqueue on the configured broker (the ORM
broker, or Redis when REDIS_URL is set); nine events in ten name a followed ticket.

1. The handler alone: sequential calls through Django's test client; its p95 is the number
   held to the 50 ms target (tests/test_webhook.py only checks that every call answers and
   queues its refresh: a wall-clock limit in the suite fails whenever the machine is busy).
2. Under load: gunicorn as the Procfile runs it (2 workers x 4 threads), 8 client threads
   sending WEBHOOK_BENCH_RATE calls per second (default 40, hundreds of times what a busy
   OTRS sends: one event per ticket state change). "server" is gunicorn's own request
   time (access log %(D)s), "server CPU" the CPU time the worker thread used for it (what
   the handler costs, without the wait for a CPU on a busy machine); "round trip" is what
   a client sees.
3. Saturated: the same 8 threads send back to back, to find the throughput. Latency there
   is queueing (Little's law: 8 in flight / throughput), not the handler.

BENCH_DATABASE_URL picks the database (bench/_setup.py); WEBHOOK_BENCH_CALLS the calls
per phase.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench._setup import setup_django

BUDGET_SECONDS = 0.050
SECRET = "bench-webhook-secret-0123456789"
FOLLOWED = 200
ROOT = Path(__file__).resolve().parent.parent


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100)
    return (
        f"p50 {cuts[49] * 1000:6.1f} ms   p95 {cuts[94] * 1000:6.1f} ms   "
        f"p99 {cuts[98] * 1000:6.1f} ms   max {ordered[-1] * 1000:6.1f} ms"
    )


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[94]


def _verdict(p95: float) -> str:
    target = f"target {BUDGET_SECONDS * 1000:.0f} ms"
    return f"within the {target}" if p95 < BUDGET_SECONDS else f"OVER the {target}"


def _payload(i: int) -> dict:
    ticket_id = str(1000 + i % FOLLOWED if i % 10 else 999_000 + i)
    return {"Event": {"TicketID": ticket_id}, "Ticket": {"TicketID": ticket_id}}


def _prepare() -> str:
    from connections.models import Connection
    from tickets.models import Ticket

    connection = Connection.objects.create(name="bench")
    connection.set_webhook_secret(SECRET)
    connection.save()
    Ticket.objects.bulk_create(
        Ticket(connection=connection, ticket_id=1000 + i, ticket_number=f"2026{i:012d}")
        for i in range(FOLLOWED)
    )
    return connection.name


def handler_alone(name: str, calls: int = 300) -> list[float]:
    """Sequential calls through the test client: Django's middleware and the view."""
    import json

    from django.test import Client

    client = Client()
    path = f"/api/v1/hooks/otrs/{name}"

    def one(i: int) -> float:
        body = json.dumps(_payload(i))
        start = time.perf_counter()
        answer = client.post(
            path, body, content_type="application/json", HTTP_X_OTRS_BRIDGE_TOKEN=SECRET
        )
        elapsed = time.perf_counter() - start
        assert answer.status_code == 200, answer.content
        return elapsed

    for i in range(20):  # warm up: URL resolver, Fernet keys, first queries
        one(i)
    return [one(i) for i in range(calls)]


def _start_gunicorn(log: Path, cpu_log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:  # a free port (gunicorn cannot report the one it took)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "otrsbridge.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--access-logfile",
        str(log),
        "--access-logformat",
        "%(D)s",
        "--log-level",
        "warning",
        "--config",
        str(ROOT / "bench" / "_gunicorn_timing.py"),
    ]
    env = {**os.environ, "BENCH_CPU_LOG": str(cpu_log)}
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    return server, f"http://127.0.0.1:{port}"


def _wait_until_up(url: str, seconds: float = 20) -> None:
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/api/v1/health", timeout=5)
            return
        except requests.RequestException:  # not listening yet, or still importing Django
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not start at {url}")


def under_load(name: str, calls: int, threads: int, rate: float | None) -> dict:
    """Round trips from `threads` client threads against gunicorn, at `rate` calls per
    second (None: back to back), and gunicorn's own request times."""
    import requests

    log = Path(tempfile.mkstemp(prefix="bench-webhook-", suffix=".log")[1])
    cpu_log = Path(tempfile.mkstemp(prefix="bench-webhook-cpu-", suffix=".log")[1])
    server, url = _start_gunicorn(log, cpu_log)
    local = threading.local()
    hook = f"{url}/api/v1/hooks/otrs/{name}"

    def one(i: int, due: float | None = None) -> float:
        if due is not None:
            time.sleep(max(0.0, due - time.perf_counter()))
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        answer = session.post(
            hook, json=_payload(i), headers={"X-OTRS-Bridge-Token": SECRET}, timeout=10
        )
        elapsed = time.perf_counter() - start
        if answer.status_code != 200 or answer.json() != {}:
            raise RuntimeError(f"unexpected answer {answer.status_code}: {answer.text[:200]}")
        return elapsed

    try:
        _wait_until_up(url)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, range(40)))  # warm up every worker
            skip = len(log.read_text().split())
            skip_cpu = len(cpu_log.read_text().split())
            started = time.perf_counter()
            dues = [started + i / rate if rate else None for i in range(calls)]
            round_trips = list(pool.map(one, range(calls), dues))
            wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=20)
    server_times = [int(v) / 1e6 for v in log.read_text().split()[skip:]]
    cpu_times = [float(v) for v in cpu_log.read_text().split()[skip_cpu:]]
    log.unlink()
    cpu_log.unlink()
    return {
        "round_trips": round_trips,
        "server": server_times,
        "cpu": cpu_times,
        "rate": calls / wall,
    }


def main() -> dict:
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
    setup_django()
    from django_q.models import OrmQ

    calls = int(os.environ.get("WEBHOOK_BENCH_CALLS", "800"))
    threads = int(os.environ.get("WEBHOOK_BENCH_THREADS", "8"))
    name = _prepare()
    engine = "PostgreSQL" if "postgres" in os.environ["DATABASE_URL"] else "SQLite"
    broker = "Redis" if os.environ.get("REDIS_URL") else "ORM"
    load = os.getloadavg()[0]
    print(f"webhook on {engine}, {broker} broker ({os.cpu_count()} CPUs, load {load:.1f})")

    alone = handler_alone(name)
    print(f"  handler alone, {len(alone)} sequential calls")
    print(f"    {_summary(alone)}")
    print(f"    handler p95 {_p95(alone) * 1000:.1f} ms: {_verdict(_p95(alone))}")

    queued_before = OrmQ.objects.count()
    rate = float(os.environ.get("WEBHOOK_BENCH_RATE", "40"))
    paced = under_load(name, calls, threads, rate)
    _report(f"gunicorn 2 workers x 4 threads, {threads} client threads, {rate:.0f} calls/s", paced)
    saturated = under_load(name, calls, threads, None)
    _report(f"saturated: {threads} client threads back to back", saturated)
    if broker == "ORM":
        print(f"  {OrmQ.objects.count() - queued_before} refreshes queued")
    worst = max(_p95(alone), _p95(paced["server"]))
    print(
        f"  p95 {worst * 1000:.1f} ms (handler alone, and server at {rate:.0f}/s): "
        f"{_verdict(worst)}"
    )
    return {
        "handler_p95": _p95(alone),
        "paced_server_p95": _p95(paced["server"]),
        "paced_round_trip_p95": _p95(paced["round_trips"]),
        "saturated_calls_per_second": saturated["rate"],
    }


def _report(title: str, run: dict) -> None:
    print(f"  {title}, {len(run['round_trips'])} calls, {run['rate']:.0f} calls/s done")
    print(f"    server CPU  {_summary(run['cpu'])}")
    print(f"    server      {_summary(run['server'])}")
    print(f"    round trip  {_summary(run['round_trips'])}")


if __name__ == "__main__":
    main()
