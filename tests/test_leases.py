"""Short leases renewed while the worker lives: a killed worker's tasks are taken over within
about one lease, a live one keeps its tasks however slow OTRS is, and no path gives a task
two tickets (the takeover searches OTRS first; a paused worker finds its lease gone)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from datetime import datetime

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from otrsbridge.templatetags.console import actor
from tests.test_reliability import (
    _worker_env,
    approve_many,
    assert_exactly_one_ticket_per_task,
    output,
    sim_tickets,
    spawn,
)
from tickets import services
from tickets.models import ProvisioningTask, TaskEvent
from tickets.services import provisioning

CLAIMED = ProvisioningTask.Status.CLAIMED


def wait_until(condition, *, seconds: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the worker ended before {what}: {output(proc)}")
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.05)


@pytest.mark.django_db
def test_the_lease_comes_from_the_setting(settings, sim, crm, people):
    settings.PROVISION_LEASE_SECONDS = 60
    approve_many(crm, people, 1)
    before = timezone.now()
    task = services.task_claim_next(owner="w")
    assert 59 <= (task.lease_until - before).total_seconds() <= 61


@pytest.mark.django_db
def test_a_claim_names_the_machine_and_process_that_hold_the_task(sim, crm, people):
    approve_many(crm, people, 1)
    owner = services.worker_name("provision:crm")
    task = services.task_claim_next(owner=owner)
    host, pid = socket.gethostname().split(".")[0], os.getpid()
    assert task.lease_owner == owner and owner.startswith(f"provision:crm:{host}:{pid}:")
    event = TaskEvent.objects.filter(task=task, to_status=CLAIMED).get()
    assert (event.actor_label, event.reason) == (owner, f"attempt 1 of {task.max_attempts}")
    # The timeline shows it in words.
    assert actor(event) == f"Provisioning · crm on {host}, process {pid}"
    assert services.worker_parts("rescuer") is None
    assert services.worker_parts("a:b:²:x") is None  # a digit, but not a number int() reads
    # Other actors in words too; and a ticket's agent reads the run as the bridge's.
    job, api, hook = TaskEvent.Actor.JOB, TaskEvent.Actor.API, TaskEvent.Actor.WEBHOOK
    assert actor(TaskEvent(actor_kind=job, actor_label="poll")) == "Polling"
    assert actor(TaskEvent(actor_kind=api, actor_label="api:iga")) == "iga"
    assert actor(TaskEvent(actor_kind=hook, actor_label="webhook:otrs-demo")) == "otrs-demo"
    assert actor(TaskEvent(actor_kind=job, actor_label="")) == "—"
    assert services.Actor.job(owner).display == f"OTRS Bridge (provision:crm on {host})"
    assert services.worker_name("instant") != services.worker_name("instant")  # two runs
    # A long connection name gives way: the process and the run tag stay.
    long = services.worker_name("provision:" + "c" * 100)
    assert len(long) == ProvisioningTask._meta.get_field("lease_owner").max_length
    assert long.endswith(f":{host}:{pid}:" + long.rsplit(":", 1)[1])
    assert long != services.worker_name("provision:" + "c" * 100)


@pytest.mark.django_db
def test_keeper_renews_only_the_tasks_still_held_by_its_owner(settings, sim, crm, people):
    settings.PROVISION_LEASE_SECONDS = 60
    approve_many(crm, people, 3)
    mine = provisioning.task_claim_batch(owner="w", size=3)
    held, cancelled, taken = (t.pk for t in mine)
    ProvisioningTask.objects.filter(pk__in=[held, cancelled, taken]).update(
        lease_until=timezone.now()
    )
    ProvisioningTask.objects.filter(pk=cancelled).update(status="cancelled")
    ProvisioningTask.objects.filter(pk=taken).update(lease_owner="another")
    keeper = provisioning.LeaseKeeper("w")
    keeper.hold([held, cancelled, taken])
    assert keeper.renew() == 1
    lease = ProvisioningTask.objects.get(pk=held).lease_until
    assert (lease - timezone.now()).total_seconds() > 55
    keeper.drop([held])
    assert keeper.renew() == 0


@pytest.mark.parametrize(("lease", "verify_after"), [(60, 2.0), (4, 1.0), (1, 0.25)])
def test_a_pause_longer_than_the_lease_is_always_checked_before_the_create(
    settings, lease, verify_after
):
    settings.PROVISION_LEASE_SECONDS = lease
    assert provisioning._verify_after() == verify_after < lease


def test_a_lease_under_a_second_is_refused_by_a_system_check(settings):
    from otrsbridge.checks import check_provision_lease

    assert check_provision_lease(None) == []
    settings.PROVISION_LEASE_SECONDS = 0
    assert [e.id for e in check_provision_lease(None)] == ["otrsbridge.E004"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_live_worker_keeps_its_tasks_through_calls_longer_than_the_lease(
    settings, sim, crm, people, workers
):
    """Every call takes 2.5 leases; a rival trying to claim all along gets nothing."""
    settings.PROVISION_LEASE_SECONDS = 1
    approve_many(crm, people, 3)
    sim.configure(latency_ms=2500)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = services.provision_due(owner="slow", workers=workers)
        except BaseException as exc:  # reported below, not lost in the thread
            outcome["error"] = exc
        finally:
            db_connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(
        lambda: ProvisioningTask.objects.filter(status=CLAIMED, lease_owner="slow").count() == 3,
        seconds=10,
        what="the worker's claim",
    )
    stolen = []
    while worker.is_alive():
        stolen += provisioning.task_claim_batch(owner="rival", size=10)
        time.sleep(0.1)
    worker.join()
    assert "error" not in outcome, outcome
    assert stolen == []
    assert outcome["result"].by_status == {"ticket_open": 3}
    assert not TaskEvent.objects.filter(reason__contains="lease ran out").exists()
    assert_exactly_one_ticket_per_task(sim)


@pytest.mark.django_db(transaction=True)
def test_a_paused_worker_finds_its_lease_taken_and_creates_nothing(settings, sim, crm, people):
    """The batched path: a worker stopped for longer than its lease (no renewals meanwhile)
    resumes after another worker took its task over and made the ticket."""
    settings.PROVISION_LEASE_SECONDS = 1
    approve_many(crm, people, 1)
    claim_started = time.monotonic()
    [paused] = provisioning.task_claim_batch(owner="paused", size=1)
    time.sleep(1.2)  # the pause: its lease runs out, nobody renews it
    rescued = services.provision_due(owner="rescuer")
    assert rescued.by_status == {"ticket_open": 1}
    attempt = provisioning._send_attempt(
        paused, "paused", verify_lease=False, claimed_at=claim_started, clients={}
    )
    assert attempt.lost_lease and attempt.created is None
    assert len(sim_tickets(sim)) == 1
    reason = TaskEvent.objects.filter(actor_label="rescuer", to_status=CLAIMED).get().reason
    assert "lease ran out" in reason


def _at(moment: datetime) -> float:
    return moment.timestamp()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_provision_process_has_its_tasks_taken_over_within_the_lease(
    settings, sim, connection, people
):
    """`manage.py provision` killed with SIGKILL mid-run: each task it held is taken over
    once its lease runs out (about one lease after the kill, never before), and every task
    ends with exactly one ticket, those the dead worker had created adopted, not repeated."""
    from tests import factories

    lease = 2.0
    settings.PROVISION_LEASE_SECONDS = lease
    endpoint = factories.endpoint(connection, name="crm", tries=20)
    approve_many(endpoint, people, 10)
    sim.configure(latency_ms=700)
    env = {**_worker_env(), "PROVISION_LEASE_SECONDS": str(lease)}
    proc = spawn("provision", "--workers", "2", env=env)
    try:
        # Mid-run: tickets exist in OTRS, and tasks are still claimed by the worker.
        wait_until(
            lambda: (
                len(sim_tickets(sim)) >= 2
                and ProvisioningTask.objects.filter(status=CLAIMED).count() >= 3
            ),
            seconds=60,
            what="the worker's first tickets",
            proc=proc,
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    killed_at = timezone.now()
    held = dict(ProvisioningTask.objects.filter(status=CLAIMED).values_list("pk", "lease_until"))
    assert held, "the worker held no task when it was killed"
    sim.configure(latency_ms=0)

    def settled() -> bool:
        return not ProvisioningTask.objects.exclude(status="ticket_open").exists()

    deadline = time.monotonic() + 60
    while not settled():
        assert time.monotonic() < deadline, "the killed worker's tasks were not taken over"
        services.provision_due(owner="rescuer", workers=2)
        time.sleep(0.05)

    takeovers = {
        e.task_id: e.at
        for e in TaskEvent.objects.filter(
            task_id__in=held, actor_label="rescuer", to_status=CLAIMED
        )
    }
    assert set(takeovers) == set(held)
    for pk, taken_at in takeovers.items():
        # Never before the dead worker's lease ran out …
        assert taken_at >= held[pk], (pk, taken_at, held[pk])
    # … and all of them within about one lease of the kill.
    recovered = max(_at(t) for t in takeovers.values()) - _at(killed_at)
    print(f"\nkilled holding {len(held)} task(s); last one taken over {recovered:.2f} s later")
    assert recovered <= lease + 2.0, recovered
    assert_exactly_one_ticket_per_task(sim)
    reasons = TaskEvent.objects.filter(task_id__in=held, actor_label="rescuer")
    assert reasons.filter(reason__contains="lease ran out").count() == len(held)


@pytest.mark.django_db(transaction=True)
def test_a_hung_worker_stops_renewing_after_the_job_timeout(settings, sim, crm, people):
    settings.PROVISION_LEASE_SECONDS = 1
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 1}
    approve_many(crm, people, 1)
    [task] = provisioning.task_claim_batch(owner="hung", size=1)
    with provisioning.LeaseKeeper("hung") as keeper:
        keeper.hold([task.pk])
        time.sleep(2.5)  # stuck: the keeper gives up at 1 s, the lease runs out at 2 s
        assert provisioning.task_claim_batch(owner="rescuer", size=1) == [task]
