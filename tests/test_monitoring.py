"""/healthz, /readyz and /metrics: liveness, readiness with its reasons, and the Prometheus
metrics read from the database (against the simulator over real HTTP)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from connections.models import ApiCall, ApiCallTally, Connection, PollWatermark
from tests import factories
from tests.test_polling import open_tasks, poll
from tickets import services
from tickets.models import ProvisioningTask

pytestmark = pytest.mark.django_db


def backdate(connection: Connection, minutes: float) -> None:
    """Let `minutes` pass for the connection: it was set up, and last polled well, earlier."""
    earlier = timezone.now() - timedelta(minutes=minutes)
    Connection.objects.filter(pk=connection.pk).update(created_at=earlier, updated_at=earlier)
    PollWatermark.objects.filter(connection=connection, polled_ok_at__isnull=False).update(
        polled_ok_at=earlier
    )


def samples(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def calls_only(found: dict) -> dict:
    return {k: v for k, v in found.items() if k[0].startswith("otrsbridge_otrs_")}


def value(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


# --- /healthz and /readyz ------------------------------------------------------------------


def test_healthz_answers_without_asking_anything(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "alive"}


def test_a_new_connection_is_ready_before_its_first_poll(client, connection):
    Connection.objects.filter(pk=connection.pk).update(poll_minutes=5)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    detail = body["checks"]["connections"][connection.name]["detail"]
    assert detail.startswith("not polled since it was set up or changed")
    assert "at most 15 min allowed: 3 poll intervals of 5 min" in detail


def test_readiness_fails_when_a_connection_stops_polling(
    client, sim, connection, crm, people, caplog
):
    Connection.objects.filter(pk=connection.pk).update(poll_minutes=5)
    open_tasks(crm, people, 2)
    assert poll(connection).errors == []
    assert client.get("/readyz").status_code == 200

    # OTRS refuses the bridge's login from now on; a little later the bridge is still ready
    # (the last good poll is recent)
    factories.otrs_connection(sim, password="changed-in-otrs")
    Connection.objects.filter(pk=connection.pk).update(poll_minutes=5)
    connection.tokens.all().delete()
    assert poll(connection).errors
    backdate(connection, minutes=14)
    still = client.get("/readyz")
    assert still.status_code == 200, still.json()

    # three intervals (15 min) after the last good poll, with every poll since failing
    backdate(connection, minutes=16)
    assert poll(connection).errors
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    reason = body["checks"]["connections"][connection.name]["reason"]
    assert reason.startswith("last poll without an error 16 min ago (at most 15 min allowed")
    assert "is the worker cluster running, and does OTRS answer?" in reason
    logged = [r.getMessage() for r in caplog.records if r.name == "otrsbridge.monitoring"]
    assert logged[-1] == f"not ready: connection {connection.name}: {reason}"
    assert not [r for r in caplog.records if r.name == "django.request"]
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]


def test_a_connection_with_nothing_to_poll_stays_ready_while_it_is_polled(client, connection):
    backdate(connection, minutes=24 * 60)
    response = client.get("/readyz")
    assert response.status_code == 503
    reason = response.json()["checks"]["connections"][connection.name]["reason"]
    assert reason.startswith("never polled without an error since it was set up 24 h 0 min ago")

    result = poll(connection)  # no open ticket: nothing to fetch, and nothing failed
    assert result.tickets == 0 and result.errors == []
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["connections"][connection.name]["detail"].startswith(
        "last good poll"
    )


def test_a_disabled_connection_is_not_checked(client, connection):
    backdate(connection, minutes=24 * 60)
    Connection.objects.filter(pk=connection.pk).update(enabled=False)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["connections"][connection.name] == {
        "ok": True,
        "detail": "disabled: not polled, not checked",
    }


def test_readiness_names_a_broker_that_does_not_answer(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = client.get("/readyz")
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] is False
    assert broker["reason"].startswith("the broker did not answer: ConnectionError")


@pytest.mark.skipif(not os.environ.get("TEST_REDIS_URL"), reason="TEST_REDIS_URL is not set")
def test_readiness_asks_redis_when_it_is_the_broker(client, settings):
    settings.REDIS_URL = os.environ["TEST_REDIS_URL"]
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"] == {"ok": True, "detail": "Redis answers"}


# --- /metrics: who may read it ---------------------------------------------------------------


def test_metrics_only_for_loopback_clients_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200  # the test client comes from 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="192.0.2.7")
    assert refused.status_code == 403
    assert b"set METRICS_TOKEN to allow others" in refused.content
    # through a proxy on the same machine, the client is somewhere else
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="192.0.2.7").status_code == 403


def test_metrics_want_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    assert client.get("/metrics").status_code == 403  # loopback is not enough now
    for wrong in ("Bearer scrape-token-012345678", "Basic scrape-token-0123456789", "Bearer"):
        assert client.get("/metrics", HTTP_AUTHORIZATION=wrong).status_code == 403
    ok = client.get(
        "/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789"
    )
    assert ok.status_code == 200
    assert b"scrape-token" not in ok.content


# --- /metrics: what it says ------------------------------------------------------------------


def test_metrics_tell_tickets_tasks_polls_logins_calls_and_jobs(
    client, sim, connection, crm, people
):
    from tickets import jobs

    tasks = open_tasks(crm, people, 3)
    run = jobs.poll_job(trigger="test")
    assert run.status == "ok"
    services.task_cancel(task=tasks[0], by=people.olga)
    found = samples(client)

    name = connection.name
    assert value(found, "otrsbridge_open_tickets", connection=name) == 3
    assert value(found, "otrsbridge_tasks", connection=name, state="ticket_open") == 2
    assert value(found, "otrsbridge_tasks", connection=name, state="cancelled") == 1
    assert value(found, "otrsbridge_tasks", connection=name, state="failed") == 0
    assert value(found, "otrsbridge_tasks_flagged", connection=name) == 0
    assert 0 <= value(found, "otrsbridge_oldest_open_ticket_age_seconds", connection=name) < 60
    assert 0 <= value(found, "otrsbridge_last_successful_poll_age_seconds", connection=name) < 60
    assert value(found, "otrsbridge_connection_followed", connection=name) == 1
    assert value(found, "otrsbridge_last_login_ok", connection=name) == 1

    # the call counters are the ApiCall rows, by call and outcome
    rows = list(ApiCall.objects.filter(connection=connection))
    assert rows
    for call_name in {r.call_name for r in rows}:
        mine = [r for r in rows if r.call_name == call_name and r.outcome == "ok"]
        labels = {"connection": name, "operation": call_name, "outcome": "ok"}
        assert value(found, "otrsbridge_otrs_calls_total", **labels) == len(mine)
        assert value(found, "otrsbridge_otrs_call_duration_seconds_count", **labels) == len(mine)
        assert value(found, "otrsbridge_otrs_call_duration_seconds_sum", **labels) == pytest.approx(
            sum(r.duration_ms for r in mine) / 1000
        )
        assert value(
            found, "otrsbridge_otrs_call_duration_seconds_bucket", le="+Inf", **labels
        ) == len(mine)
    assert value(found, "otrsbridge_job_last_duration_seconds", job=run.name, status="ok") >= 0

    # a failed login shows as 0
    connection.tokens.update(last_error="login refused")
    assert value(samples(client), "otrsbridge_last_login_ok", connection=name) == 0


def test_call_counters_only_grow_when_old_rows_are_deleted(client, sim, connection, crm, people):
    open_tasks(crm, people, 2)
    before = samples(client)
    key = [k for k in before if k[0] == "otrsbridge_otrs_calls_total"]
    assert key
    ApiCall.objects.update(created_at=timezone.now() - timedelta(days=40))
    for task in ProvisioningTask.objects.all():  # final now: their calls may go
        services.task_cancel(task=task, by=people.olga)
    result = services.api_calls_prune()
    assert (
        result.deleted > 0
        and not ApiCall.objects.filter(created_at__lt=timezone.now() - timedelta(days=30)).exists()
    )
    after = samples(client)
    for k in key:
        assert after[k] == before[k]


def test_each_call_is_counted_once_across_scrapes(client, sim, connection, crm, people):
    open_tasks(crm, people, 1)
    first = calls_only(samples(client))
    assert first == calls_only(samples(client))
    assert not ApiCall.objects.filter(counted=False).exists()
    assert sum(t.calls for t in ApiCallTally.objects.all()) == ApiCall.objects.count()


def test_a_scrape_asks_a_fixed_number_of_queries(client, sim, connection, crm, people):
    from tickets import jobs

    def queries() -> int:
        with CaptureQueriesContext(db) as captured:
            assert client.get("/metrics").status_code == 200
        return len(captured)

    open_tasks(crm, people, 1)
    jobs.poll_job(trigger="test")
    small = queries()
    open_tasks(crm, people, 6)
    other = factories.otrs_connection(sim, name="second")
    open_tasks(factories.endpoint(other, name="erp"), people, 2)
    jobs.poll_job(trigger="test")
    assert queries() == small


def test_metrics_show_no_secret(client, sim, connection, crm, people):
    open_tasks(crm, people, 1)
    text = client.get("/metrics").content.decode()
    assert factories.SIM_PASSWORD not in text
    for token in connection.tokens.all():
        assert token.token not in text


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist(
    client, sim, connection, crm, people
):
    import json
    import re
    from pathlib import Path

    from tickets import jobs

    open_tasks(crm, people, 1)
    jobs.poll_job(trigger="test")
    services.task_cancel(task=ProvisioningTask.objects.first(), by=people.olga)
    exposed = {name for name, _ in samples(client)}
    dashboard = json.loads(
        (Path(__file__).parent.parent / "docs/grafana-dashboard.json").read_text()
    )
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"otrsbridge_\w+", target["expr"])
    }
    assert len(dashboard["panels"]) >= 10
    assert asked <= exposed, asked - exposed
