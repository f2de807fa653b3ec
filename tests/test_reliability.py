"""Exactly once under faults: many requests, a flaky OTRS, parallel workers, expiring sessions.

These run against the simulator over real HTTP, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from django.db import connection as db_connection
from django.utils import timezone

from tests import factories
from tickets import jobs, services
from tickets.models import AccessRequest, ProvisioningTask, TaskEvent

ROOT = Path(__file__).resolve().parent.parent
KEY = re.compile(r"\[(BR-[0-9A-F]+)\]")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def approve_many(endpoint, people, n: int) -> list[int]:
    ids = []
    for i in range(n):
        r = services.request_submit(
            beneficiary={"username": f"person{i:04d}", "email": f"p{i}@example.com"},
            endpoint=endpoint,
            operation="create_account",
            requester=people.alice,
        )
        services.request_approve(access_request=r, by=people.bob)
        ids.append(r.pk)
    return ids


def sim_tickets(sim) -> list[dict]:
    return requests.get(sim.url + "/_sim/tickets", timeout=30).json()["tickets"]


def drain(step, done, *, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not done():
        assert time.monotonic() < deadline, f"{what} did not finish within {deadline_s} s"
        step()


def assert_exactly_one_ticket_per_task(sim) -> None:
    tickets = sim_tickets(sim)
    keys = [KEY.search(t["Title"]).group(1) for t in tickets]
    expected = set(ProvisioningTask.objects.values_list("correlation_key", flat=True))
    assert len(keys) == len(set(keys)), "a task got two tickets"
    assert set(keys) == expected
    mapped = set(ProvisioningTask.objects.values_list("ticket__ticket_id", flat=True))
    assert mapped == {int(t["TicketID"]) for t in tickets}


def test_200_requests_complete_exactly_once_under_faults(sim, connection, people):
    endpoint = factories.endpoint(connection, name="crm", tries=20)
    approve_many(endpoint, people, 200)
    sim.configure(fail_rate=0.2, drop_after_commit=0.1)

    def provisioned() -> bool:
        return not ProvisioningTask.objects.exclude(status="ticket_open").exists()

    drain(
        lambda: services.provision_due(owner="chaos", workers=4),
        provisioned,
        deadline_s=240,
        what="provisioning",
    )
    assert ProvisioningTask.objects.filter(status="failed").count() == 0
    assert_exactly_one_ticket_per_task(sim)
    faults = requests.get(sim.url + "/_sim/stats", timeout=5).json()["faults"]
    assert faults["dropped_after_commit"] > 0 and faults["reset"] + faults["http500"] > 0

    for task in ProvisioningTask.objects.select_related("ticket"):
        requests.post(
            f"{sim.url}/_sim/tickets/{task.ticket.ticket_id}/state",
            json={"state": "closed successful"},
            timeout=5,
        )

    def completed() -> bool:
        return AccessRequest.objects.filter(status="completed").count() == 200

    drain(
        lambda: services.tickets_poll(connection=connection),
        completed,
        deadline_s=240,
        what="polling",
    )
    assert ProvisioningTask.objects.filter(status="completed").count() == 200
    assert_exactly_one_ticket_per_task(sim)


def test_session_expiry_mid_run_heals_with_few_logins(sim, connection, people):
    endpoint = factories.endpoint(connection, name="crm")
    approve_many(endpoint, people, 40)
    services.provision_due(owner="t", limit=10)
    before = requests.get(sim.url + "/_sim/stats", timeout=5).json()["calls"]["SessionCreate"]
    # From now on every session dies a quarter second after it was created: several
    # times during this run, which takes about a second.
    ttl = 0.25
    sim.configure(session_ttl=ttl, latency_ms=40)
    started = time.monotonic()
    drain(
        lambda: services.provision_due(owner="t", workers=2),
        lambda: not ProvisioningTask.objects.exclude(status="ticket_open").exists(),
        deadline_s=120,
        what="provisioning",
    )
    elapsed = time.monotonic() - started
    assert_exactly_one_ticket_per_task(sim)
    logins = (
        requests.get(sim.url + "/_sim/stats", timeout=5).json()["calls"]["SessionCreate"] - before
    )
    # At most one login per session lifetime (plus the first), never one per ticket.
    assert 2 <= logins <= 2 + math.ceil(elapsed / ttl), (logins, elapsed)
    assert logins < 30


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"TEST_DATABASE_URL", "DATABASE_URL"}}
    settings_dict = db_connection.settings_dict
    if db_connection.vendor == "postgresql":
        host = settings_dict["HOST"] or "127.0.0.1"
        port = settings_dict["PORT"] or 5432
        env["DATABASE_URL"] = (
            f"postgres://{settings_dict['USER']}@{host}:{port}/{settings_dict['NAME']}"
        )
    else:
        env["DATABASE_URL"] = f"sqlite:///{settings_dict['NAME']}"
    env["DJANGO_SETTINGS_MODULE"] = "otrsbridge.test_settings"
    env["LOG_LEVEL"] = "WARNING"
    return env


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """`manage.py <args>` (or any module, when args start with "-m") in its own process
    group, so that a kill reaches every process it starts (a qcluster's workers too).

    Its output goes to a temporary file (read it with `output`): a pipe nobody reads fills
    up, and then the process blocks in its next log line.
    """
    command = [sys.executable, *args] if args[0] == "-m" else [sys.executable, "manage.py", *args]
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen, tail: int = 4000) -> str:
    """The end of what a spawned process wrote."""
    proc.log.seek(0)  # type: ignore[attr-defined]
    return proc.log.read()[-tail:]  # type: ignore[attr-defined]


def stop(procs: list[subprocess.Popen]) -> None:
    """End the process groups: SIGTERM, then SIGKILL for any that outlast 30 s."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()


def test_two_provisioning_processes_never_double_create(sim, connection, people):
    if db_connection.vendor != "postgresql":
        pytest.skip("parallel processes are proven on PostgreSQL (SQLite serialises writers)")
    endpoint = factories.endpoint(connection, name="crm")
    approve_many(endpoint, people, 60)
    sim.configure(latency_ms=20)
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "provision", "--workers", "3"],
            cwd=ROOT,
            env=_worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out
    assert not ProvisioningTask.objects.exclude(status="ticket_open").exists()
    assert_exactly_one_ticket_per_task(sim)
    claims = TaskEvent.objects.filter(to_status="claimed")
    assert claims.count() == 60, "a task was claimed twice"
    owners = {e.actor_label.split("/")[0].rsplit(":", 1)[-1] for e in claims}
    assert len(owners) == 2, "both processes should have done part of the work"


def test_instant_and_scheduled_runs_agree(sim, connection, people):
    """A task enqueued at approval and picked up by the schedule at the same time is
    provisioned once: the conditional UPDATE decides."""
    endpoint = factories.endpoint(connection, name="crm")
    [request_id] = approve_many(endpoint, people, 1)
    task = ProvisioningTask.objects.get(request_id=request_id)
    first = services.task_claim_next_specific(task_id=task.pk, owner="instant")
    assert services.task_claim_next(owner="schedule") is None
    services.task_provision(task=first, owner="instant")
    assert jobs.provision_one(task_id=task.pk) == f"task {task.pk} is not due"
    assert len(sim_tickets(sim)) == 1
    assert ProvisioningTask.objects.get(pk=task.pk).next_attempt_at <= timezone.now()
