"""Ticket creation throughput: 1,000 approved tasks, the simulator at 50 ms per call.

    python -m bench create          (BENCH_CREATE_TASKS=1000 BENCH_WORKERS=8 BENCH_LATENCY_MS=50)

Target: at least 80% of W / latency tickets per second with W workers. The same run
measures a plain `requests` loop with the same concurrency against the same simulator,
which is the ceiling the bridge is compared with.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from bench._setup import setup_django
from bench._sim import WEBSERVICE, calls, import_connection, simulator


def _approve(n: int, connection) -> None:
    from django.contrib.auth.models import Group, User

    from connections.models import Endpoint, SecuritySystem
    from tickets import services
    from tickets.models import Identity

    system = SecuritySystem.objects.create(
        name=f"bench-{uuid.uuid4().hex[:6]}",
        service_desk_connection=connection,
        provisioning_tries=5,
    )
    endpoint = Endpoint.objects.create(name=f"bench-{uuid.uuid4().hex[:6]}", security_system=system)
    approver = User.objects.create(username=f"approver-{uuid.uuid4().hex[:6]}")
    approver.groups.add(Group.objects.get(name="approvers"))
    approver = User.objects.get(pk=approver.pk)
    Identity.objects.bulk_create(Identity(username=f"bench-{endpoint.pk}-{i}") for i in range(n))
    for identity in Identity.objects.filter(username__startswith=f"bench-{endpoint.pk}-"):
        r = services.request_submit(
            beneficiary=identity, endpoint=endpoint, operation="create_account"
        )
        services.request_approve(access_request=r, by=approver)


def _plain_loop(url: str, n: int, workers: int) -> float:
    """W threads, each with its own requests.Session, posting TicketCreate n/W times."""
    base = url + WEBSERVICE
    sid = requests.post(
        base + "/Session",
        json={"UserLogin": "bridge", "Password": "bridge-demo-password"},
        timeout=10,
    ).json()["SessionID"]
    body = {
        "SessionID": sid,
        "Ticket": {
            "Title": "plain",
            "Queue": "Raw",
            "State": "new",
            "Priority": "3 normal",
            "CustomerUser": "b@example.com",
        },
        "Article": {"Subject": "s", "Body": "b", "ContentType": "text/plain; charset=utf8"},
    }

    def work(count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):
                session.post(base + "/Ticket", json=body, timeout=30).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, [n // workers + (1 if i < n % workers else 0) for i in range(workers)]))
    return time.perf_counter() - started


def main() -> None:
    setup_django()
    from tickets import services
    from tickets.models import ProvisioningTask

    n = int(os.environ.get("BENCH_CREATE_TASKS", "1000"))
    workers = int(os.environ.get("BENCH_WORKERS", "8"))
    latency_ms = int(os.environ.get("BENCH_LATENCY_MS", "50"))
    ideal = workers / (latency_ms / 1000)
    with simulator("--latency-ms", str(latency_ms)) as url:
        connection = import_connection(url, name=f"bench-{uuid.uuid4().hex[:6]}")
        _approve(n, connection)
        before = calls(url)
        cpu_before = time.process_time()
        started = time.perf_counter()
        result = services.provision_due(
            owner="bench", workers=workers, budget_seconds=3600, connection=connection
        )
        bridge = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        made = calls(url) - before
        opened = ProvisioningTask.objects.filter(
            connection=connection, status="ticket_open"
        ).count()
        plain = _plain_loop(url, n, workers)
    print(
        f"{n} tasks, {workers} workers, simulator latency {latency_ms} ms; ideal W/latency = {ideal:.0f} tickets/s"
    )
    print(
        f"  bridge provision_due : {bridge:7.2f} s  {n / bridge:6.1f} tickets/s  ({n / bridge / ideal:.0%} of ideal)"
        f"  {opened} ticket_open, {made} HTTP calls, {result}"
    )
    print(
        f"                         CPU of this process {cpu * 1000 / n:.2f} ms per ticket"
        f" ({cpu / bridge:.0%} of one core)"
    )
    print(
        f"  plain requests loop  : {plain:7.2f} s  {n / plain:6.1f} tickets/s  ({n / plain / ideal:.0%} of ideal)"
    )
    print(f"  bridge / plain       : {plain / bridge:.0%}")


if __name__ == "__main__":
    main()
