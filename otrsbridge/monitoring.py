"""For the people who run it: liveness (/healthz), readiness (/readyz) and Prometheus
metrics (/metrics).

Readiness asks the database, the broker (Redis when REDIS_URL is set, the ORM broker's
table otherwise) and whether each enabled connection is still followed: its last poll
cycle without an error ended less than three poll intervals ago (see `poll_check`).

Every gauge of /metrics is read from the database at scrape time, with a fixed number of
queries, so any web process answers for all of them (gunicorn workers, django-q2
clusters, other machines). The OTRS call counters and latency histogram come from the
ApiCall rows through their running totals (connections.call_tally), for the same reason.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db import connection as db
from django.db.models import Count, Max, Min, Q, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from connections.call_tally import count_new_calls
from connections.models import ApiCallTally, Connection, ConnectionToken
from otrsbridge.logins import client_address
from tickets.models import JobRun, ProvisioningTask, Ticket

log = logging.getLogger(__name__)

# A connection is followed while its last good poll is younger than this many intervals.
POLL_INTERVALS_ALLOWED = 3
# How long the Redis probe may wait, so that a hung broker answers 503, not a timeout.
BROKER_PROBE_SECONDS = 2.0


# --- readiness -------------------------------------------------------------------------------


@dataclass
class PollState:
    """What readiness and /metrics know about one connection's polling."""

    name: str
    enabled: bool
    poll_minutes: int
    changed_at: datetime  # created, or last saved (enabled again, re-configured)
    polled_ok_at: datetime | None

    def check(self, now: datetime) -> tuple[bool, str]:
        """Is the connection followed, and in words why (not)?

        The rule: the last poll cycle that met no error ended less than three poll
        intervals ago. A cycle with nothing to fetch (no open tickets) is such a cycle, so a
        quiet connection stays ready. The clock starts no earlier than the connection was
        created or last saved, so a new, re-enabled or re-configured connection has three
        intervals for its first good poll before it counts as stopped.
        """
        if not self.enabled:
            return True, "disabled: not polled, not checked"
        limit = timedelta(minutes=self.poll_minutes * POLL_INTERVALS_ALLOWED)
        since = max(self.changed_at, self.polled_ok_at or self.changed_at)
        allowed = (
            f"at most {_minutes(limit)} allowed: {POLL_INTERVALS_ALLOWED} poll intervals "
            f"of {self.poll_minutes} min"
        )
        if now - since <= limit:
            if self.polled_ok_at is None or self.polled_ok_at < self.changed_at:
                return (
                    True,
                    f"not polled since it was set up or changed {_ago(now, since)}; {allowed}",
                )
            return True, f"last good poll {_ago(now, self.polled_ok_at)}"
        if self.polled_ok_at is None:
            return False, (
                f"never polled without an error since it was set up {_ago(now, since)} ({allowed}); "
                "is the worker cluster running, and does OTRS answer?"
            )
        return False, (
            f"last poll without an error {_ago(now, self.polled_ok_at)} ({allowed}); "
            "is the worker cluster running, and does OTRS answer? (see the overview's jobs)"
        )


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"


def _ago(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    return f"{seconds} s ago" if seconds < 120 else f"{_minutes(now - then)} ago"


def poll_states() -> list[PollState]:
    """Every connection's polling facts, in one query."""
    rows = Connection.objects.order_by("name").values_list(
        "name",
        "enabled",
        "poll_minutes",
        "created_at",
        "updated_at",
        "poll_watermark__polled_ok_at",
    )
    return [
        PollState(name, enabled, minutes, max(created, updated), ok)
        for name, enabled, minutes, created, updated, ok in rows
    ]


def _check_database() -> str:
    with db.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "answers"


def _check_broker() -> str:
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=BROKER_PROBE_SECONDS,
            socket_connect_timeout=BROKER_PROBE_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()
        return "Redis answers"
    from django_q.models import OrmQ

    OrmQ.objects.exists()
    return "the database broker's queue table answers"


def readiness(now: datetime | None = None) -> tuple[bool, dict]:
    """Whether the bridge can do its work, and for each part why (not)."""
    now = now or timezone.now()
    checks: dict = {}
    ready = True
    for name, probe in (("database", _check_database), ("broker", _check_broker)):
        try:
            checks[name] = {"ok": True, "detail": probe()}
        except Exception as exc:  # any failure of the probe is the answer
            checks[name] = {"ok": False, "reason": _probe_failure(name, exc)}
            ready = False
    if not checks["database"]["ok"]:
        checks["connections"] = {"ok": False, "reason": "not checked: the database did not answer"}
        return False, checks
    connections = {}
    for state in poll_states():
        ok, text = state.check(now)
        connections[state.name] = {"ok": ok, ("detail" if ok else "reason"): text}
        ready = ready and ok
    checks["connections"] = connections
    return ready, checks


def _probe_failure(name: str, exc: Exception) -> str:
    # The class and the first line only: a driver's message may carry a host, never more.
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    what = "the database" if name == "database" else "the broker"
    return f"{what} did not answer: {type(exc).__name__}{': ' + first if first else ''}"


# --- metrics -----------------------------------------------------------------------------------


class BridgeCollector:
    """The gauges and counters of /metrics, read from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        count_new_calls()
        yield from self._tickets(now)
        yield from self._tasks()
        yield from self._connections(now)
        yield from self._calls()
        yield from self._jobs(now)

    def _tickets(self, now: datetime) -> Iterator[Metric]:
        open_tickets = GaugeMetricFamily(
            "otrsbridge_open_tickets",
            "Tickets open in OTRS that the bridge follows",
            labels=["connection"],
        )
        oldest = GaugeMetricFamily(
            "otrsbridge_oldest_open_ticket_age_seconds",
            "Age of the oldest open ticket, since the bridge created it",
            labels=["connection"],
        )
        rows = (
            Ticket.objects.filter(is_open=True)
            .values_list("connection__name")
            .annotate(n=Count("id"), first=Min("created_at"))
            .order_by()
        )
        for name, n, first in rows:
            open_tickets.add_metric([name], n)
            oldest.add_metric([name], (now - first).total_seconds())
        yield open_tickets
        yield oldest

    def _tasks(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "otrsbridge_tasks",
            "Provisioning tasks by connection and state (state=failed: the failed tasks)",
            labels=["connection", "state"],
        )
        flagged = GaugeMetricFamily(
            "otrsbridge_tasks_flagged",
            "Tasks not yet final that carry a flag (unmapped state, merge, stale)",
            labels=["connection"],
        )
        rows = (
            ProvisioningTask.objects.values_list("connection__name", "status")
            .annotate(
                n=Count("id"),
                flagged=Count("id", filter=~Q(flag="") & ~Q(status__in=ProvisioningTask.TERMINAL)),
            )
            .order_by()
        )
        counts: dict[str, dict[str, int]] = {}
        flags: dict[str, int] = {}
        for name, status, n, flagged_n in rows:
            counts.setdefault(name, {})[status] = n
            flags[name] = flags.get(name, 0) + flagged_n
        for name, by_state in sorted(counts.items()):
            for status in ProvisioningTask.Status.values:
                tasks.add_metric([name, status], by_state.get(status, 0))
            flagged.add_metric([name], flags[name])
        yield tasks
        yield flagged

    def _connections(self, now: datetime) -> Iterator[Metric]:
        poll_age = GaugeMetricFamily(
            "otrsbridge_last_successful_poll_age_seconds",
            "Seconds since the connection's last poll cycle without an error ended",
            labels=["connection"],
        )
        followed = GaugeMetricFamily(
            "otrsbridge_connection_followed",
            "1 while the connection passes readiness (a good poll within "
            f"{POLL_INTERVALS_ALLOWED} intervals)",
            labels=["connection"],
        )
        for state in poll_states():
            if not state.enabled:
                continue
            if state.polled_ok_at is not None:
                poll_age.add_metric([state.name], (now - state.polled_ok_at).total_seconds())
            followed.add_metric([state.name], 1 if state.check(now)[0] else 0)
        login_ok = GaugeMetricFamily(
            "otrsbridge_last_login_ok",
            "1 when the connection's last login (session or token) succeeded, 0 when it failed",
            labels=["connection"],
        )
        login_age = GaugeMetricFamily(
            "otrsbridge_last_login_age_seconds",
            "Seconds since the connection last obtained a session or token",
            labels=["connection"],
        )
        logins: dict[str, tuple[bool, datetime | None]] = {}
        for name, error, obtained in ConnectionToken.objects.values_list(
            "connection__name", "last_error", "obtained_at"
        ):
            ok, last = logins.get(name, (True, None))
            newest = max(filter(None, (last, obtained)), default=None)
            logins[name] = (ok and not error and obtained is not None, newest)
        for name, (ok, obtained) in sorted(logins.items()):
            login_ok.add_metric([name], 1 if ok else 0)
            if obtained is not None:
                login_age.add_metric([name], (now - obtained).total_seconds())
        yield from (poll_age, followed, login_ok, login_age)

    def _calls(self) -> Iterator[Metric]:
        labels = ["connection", "operation", "outcome"]
        calls = CounterMetricFamily(
            "otrsbridge_otrs_calls", "HTTP calls to OTRS, by call and outcome", labels=labels
        )
        latency = HistogramMetricFamily(
            "otrsbridge_otrs_call_duration_seconds",
            "Duration of HTTP calls to OTRS",
            labels=labels,
        )
        bounds = [*ApiCallTally.BUCKETS_MS, None]
        for tally in ApiCallTally.objects.order_by("connection_name", "call_name", "outcome"):
            key = [tally.connection_name, tally.call_name, tally.outcome]
            calls.add_metric(key, tally.calls)
            cumulative, buckets = 0, []
            for bound, n in zip(bounds, tally.buckets, strict=False):
                cumulative += n
                buckets.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
            if len(tally.buckets) < len(bounds):
                buckets.append(("+Inf", tally.calls))
            latency.add_metric(key, buckets, tally.duration_ms / 1000)
        yield calls
        yield latency

    def _jobs(self, now: datetime) -> Iterator[Metric]:
        duration = GaugeMetricFamily(
            "otrsbridge_job_last_duration_seconds",
            "Duration of each job's last finished run",
            labels=["job", "status"],
        )
        finished = GaugeMetricFamily(
            "otrsbridge_job_last_finished_age_seconds",
            "Seconds since each job's last run finished",
            labels=["job"],
        )
        last_runs = JobRun.objects.filter(
            pk__in=Subquery(
                JobRun.objects.filter(finished_at__isnull=False)
                .values("name")
                .annotate(last=Max("pk"))
                .values("last")
            )
        ).order_by("name")
        for run in last_runs:
            assert run.finished_at is not None
            duration.add_metric(
                [run.name, run.status], (run.finished_at - run.started_at).total_seconds()
            )
            finished.add_metric([run.name], (now - run.finished_at).total_seconds())
        yield duration
        yield finished


def metrics_text() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector())  # type: ignore[arg-type]
    return generate_latest(registry)


def metrics_allowed(request: HttpRequest) -> bool:
    """With METRICS_TOKEN: the bearer token, compared in constant time. Without: loopback
    clients only, and none that came through a proxy the settings do not name."""
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        scheme, _, value = sent.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        )
    if not settings.TRUSTED_PROXY_COUNT and (
        "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META
    ):
        return False
    try:
        return ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


# --- views -------------------------------------------------------------------------------------


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is alive and answers; asks nothing else."""
    return JsonResponse({"status": "alive"})


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    try:
        ready, checks = readiness()
    except DatabaseError as exc:
        ready, checks = (
            False,
            {"database": {"ok": False, "reason": _probe_failure("database", exc)}},
        )
    response = JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
    if not ready:
        # One line with the reasons instead of Django's "Service Unavailable" error line.
        response._has_been_logged = True  # type: ignore[attr-defined]
        log.warning("not ready: %s", "; ".join(_failures(checks)))
    return response


def _failures(checks: dict) -> Iterator[str]:
    for name, check in checks.items():
        if "ok" in check:
            if not check["ok"]:
                yield f"{name}: {check['reason']}"
        else:
            yield from _failures({f"connection {k}": v for k, v in check.items()})


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        reason = (
            "a bearer token is required (METRICS_TOKEN)"
            if settings.METRICS_TOKEN
            else "only loopback clients may read the metrics; set METRICS_TOKEN to allow others"
        )
        return HttpResponse(reason + "\n", status=403, content_type="text/plain")
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
