"""Template helpers of the console: status badges and ages.

Badges always carry a text label next to their colour (colour alone fails people who
cannot tell the colours apart), and ages are relative with the absolute time on hover.
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

from connections.models import ApiCall
from tickets.jobs import JOB_TITLES
from tickets.models import (
    OUTBOX_TONES,
    AccessRequest,
    JobRun,
    Outbox,
    ProvisioningTask,
    TaskEvent,
    Ticket,
    parse_id,
    person_display,
)
from tickets.services.governance import decidable
from tickets.services.transitions import worker_parts

register = template.Library()

# A badge gets a bare status string (a TaskEvent's from/to is a task's or a request's state),
# so the tones and labels declared beside each enum are merged here. Where two enums share a
# name ("completed", "failed", "ok") they agree; tests/test_states.py holds them to it.
TONES: dict[str, str] = {
    **ApiCall.TONES,
    **JobRun.TONES,
    **OUTBOX_TONES,
    **AccessRequest.TONES,
    **ProvisioningTask.TONES,
}
LABELS: dict[str, str] = {
    **dict(ApiCall.Outcome.choices),
    **dict(JobRun.Status.choices),
    **dict(Outbox.choices),
    **dict(AccessRequest.Status.choices),
    **dict(ProvisioningTask.Status.choices),
}


@register.simple_tag
def badge(status: str, label: str = "") -> str:
    """A status badge: `{% badge task.status %}` → a coloured pill with the state's name."""
    text = label or LABELS.get(status, status.replace("_", " ").capitalize() if status else "—")
    return format_html(
        '<span class="badge tone-{}" data-status="{}">{}</span>',
        TONES.get(status, "neutral"),
        status,
        text,
    )


def relative(moment: datetime, now: datetime | None = None) -> str:
    """ "12 s ago", "5 min ago", "3 h ago", "4 d ago" (or "in 5 min" for a future time)."""
    now = now or timezone.now()
    seconds = int((now - moment).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds} s"
    elif seconds < 3600:
        text = f"{seconds // 60} min"
    elif seconds < 86400 * 2:
        text = f"{seconds // 3600} h"
    else:
        text = f"{seconds // 86400} d"
    if not future and seconds < 5:
        return "just now"
    return f"in {text}" if future else f"{text} ago"


@register.simple_tag
def age(moment: datetime | None, empty: str = "—") -> str:
    """`<time>` with a relative age as text and the absolute time as tooltip and attribute."""
    if moment is None:
        return empty
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        relative(moment),
    )


@register.filter
def tone(status: str) -> str:
    return TONES.get(status, "neutral")


@register.simple_tag(takes_context=True)
def inbox_count(context) -> int:
    """How many requests wait for a decision this user may make (the number beside
    "Approvals" in the nav): not their own, not for their own access, only where they may."""
    return decidable(context["request"].user).count()


@register.simple_tag(takes_context=True)
def here(context) -> str:
    """The current page, for `next` fields of buttons: without the live-polling parameters,
    so a button inside a polled partial leads back to the page, not to the partial."""
    request = context["request"]
    params = request.GET.copy()
    for name in ("fp", "every"):
        params.pop(name, None)
    return f"{request.path}?{params.urlencode()}" if params else request.path


@register.filter
def get(mapping: dict, key: str):
    """`{{ counts|get:key }}`: a dictionary value by a variable key."""
    return mapping.get(key, 0) if mapping else 0


@register.filter
def job_title(name: str) -> str:
    """ "provision:otrs-demo" → "Provisioning · otrs-demo"."""
    base, _, connection = name.partition(":")
    title = JOB_TITLES.get(base, base.replace("-", " ").capitalize())
    return f"{title} · {connection}" if connection else title


@register.filter
def actor(event: TaskEvent) -> str:
    """Who made a change, as the timeline shows it: a person by name ("Alice Archer
    (alice)"), a job run holding a task in words ("Provisioning · crm on web-1, process
    4711"), anyone else by their label."""
    kind, label = event.actor_kind, event.actor_label
    if kind == TaskEvent.Actor.PERSON and event.actor_user is not None:
        return person_display(event.actor_user)
    if kind == TaskEvent.Actor.JOB:
        parts = worker_parts(label)
        if parts is None:
            return job_title(label) if label else "—"
        job, host, pid = parts
        return f"{job_title(job)} on {host}, process {pid}"
    if kind in (TaskEvent.Actor.API, TaskEvent.Actor.WEBHOOK):
        # "api:iga" and "webhook:otrs-demo", shown under "API" and "Webhook": the name.
        return label.partition(":")[2] or label or "—"
    return label or "—"


@register.filter
def has_ticket(tasks) -> bool:
    """Whether any of (prefetched) tasks has a ticket: no query when the tasks are prefetched."""
    return any(task.ticket_id for task in tasks)


# What caused a call to OTRS in words, by the first part of its ApiCall.ref.
REF_WORDS = {
    "task": "task {}",
    "refresh": "status refresh",
    "poll": "polling",
    "test-connection": "connection test",
}


@register.filter
def ref_words(ref: str) -> str:
    """ "task:9" → "task 9", "poll:otrs-demo" → "polling": a call's cause without its row."""
    kind, _, value = ref.partition(":")
    words = REF_WORDS.get(kind)
    return words.format(value) if words is not None else (ref or "—")


@register.simple_tag
def call_causes(calls) -> dict[str, tuple[str, str]]:
    """What caused each call, in words, and the request page it concerns, by its ref: "task:9"
    is "REQ-000009 · task 9" and "refresh:3" "status of 2026…" (ticket row 3), each linking
    to its request; "poll:otrs-demo" is "polling". Two queries for any number of calls."""
    wanted: dict[str, set[int]] = {"task": set(), "refresh": set()}
    for call in calls:
        kind, _, value = call.ref.partition(":")
        if kind in wanted and (pk := parse_id(value)) is not None:
            wanted[kind].add(pk)
    found: dict[str, tuple[str, str]] = {}
    if wanted["task"]:
        for task in ProvisioningTask.objects.filter(pk__in=wanted["task"]).select_related(
            "request"
        ):
            label = f"{task.request} · task {task.pk}"
            found[f"task:{task.pk}"] = (label, task.request.get_absolute_url())
    if wanted["refresh"]:
        for ticket in Ticket.objects.filter(pk__in=wanted["refresh"]).select_related(
            "task__request"
        ):
            found[f"refresh:{ticket.pk}"] = (f"status of {ticket}", _request_url(ticket))
    return {call.ref: found.get(call.ref) or (ref_words(call.ref), "") for call in calls}


def _request_url(ticket: Ticket) -> str:
    task = getattr(ticket, "task", None)
    return task.request.get_absolute_url() if task is not None else ""
