"""Two real django-q2 clusters on PostgreSQL with the Redis broker, driven only by the
schedules: requests go in, completed requests come out, each with exactly one ticket.

This is how the product scales past one machine. It needs PostgreSQL (TEST_DATABASE_URL)
and Redis (TEST_REDIS_URL); .ci/run provides both.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import requests
from django.db import connection as db_connection

from tests import factories
from tests.test_reliability import (
    _worker_env,
    approve_many,
    assert_exactly_one_ticket_per_task,
    output,
    spawn,
    stop,
)
from tickets.models import AccessRequest, JobRun, ProvisioningTask

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def wait_for(condition, *, seconds: float, what: str, procs) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        for p in procs:
            assert p.poll() is None, f"a cluster died: {output(p)}"
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(1)


def test_two_clusters_complete_requests_from_the_schedules_alone(sim, connection, people):
    redis_url = os.environ.get("TEST_REDIS_URL")
    if db_connection.vendor != "postgresql" or not redis_url:
        pytest.skip("needs PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL)")
    type(connection).objects.filter(pk=connection.pk).update(poll_minutes=1, provision_minutes=1)
    connection.refresh_from_db()
    connection.save()  # re-registers the schedules with the new intervals
    endpoint = factories.endpoint(connection, name="crm")
    approve_many(endpoint, people, 6)

    env = _worker_env()
    env.update(
        {"REDIS_URL": redis_url, "Q_CLUSTER_NAME": f"test-{uuid.uuid4().hex[:8]}", "Q_WORKERS": "2"}
    )
    procs = [spawn("qcluster", env=env) for _ in range(2)]
    try:
        wait_for(
            lambda: ProvisioningTask.objects.filter(status="ticket_open").count() == 6,
            seconds=150,
            what="ticket creation by the provisioning schedule",
            procs=procs,
        )
        for task in ProvisioningTask.objects.select_related("ticket"):
            requests.post(
                f"{sim.url}/_sim/tickets/{task.ticket.ticket_id}/state",
                json={"state": "closed successful"},
                timeout=5,
            )
        wait_for(
            lambda: AccessRequest.objects.filter(status="completed").count() == 6,
            seconds=150,
            what="completion by the poll schedule",
            procs=procs,
        )
    finally:
        stop(procs)
    assert_exactly_one_ticket_per_task(sim)
    runs = JobRun.objects.filter(trigger="schedule")
    assert runs.filter(name__startswith="provision").exists()
    assert runs.filter(name__startswith="poll").exists()
    assert not JobRun.objects.filter(status="errored").exists()
