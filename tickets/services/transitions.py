"""The shared ground of every state change: who made it (Actor), the transitions allowed,
the guarded move (`_move`) and the event each change records.

The rules every module of this package keeps are in the package docstring
(tickets/services/__init__.py).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from django.dispatch import Signal
from django.utils import timezone

from connections.models import Connection

from .. import limits
from ..models import AccessRequest, ApiClient, ConsoleUser, TaskEvent
from ..models import ProvisioningTask as Task
from . import notifications


class TransitionError(Exception):
    """The change is not allowed from the state the row is in now. Nothing was written."""


class RequestInvalid(Exception):
    """A submitted request is wrong. `fields` maps a field name to its messages."""

    def __init__(self, fields: dict[str, list[str]]):
        self.fields = fields
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()))


@dataclass(frozen=True)
class Actor:
    """Who caused a change: a person, a job, the webhook, an API client or the system."""

    kind: str
    label: str
    user: ConsoleUser | None = None

    @classmethod
    def person(cls, user: ConsoleUser) -> Actor:
        return cls(TaskEvent.Actor.PERSON, user.get_username(), user)

    @classmethod
    def job(cls, name: str) -> Actor:
        return cls(TaskEvent.Actor.JOB, name)

    @classmethod
    def webhook(cls, connection: Connection) -> Actor:
        return cls(TaskEvent.Actor.WEBHOOK, f"webhook:{connection.name}")

    @classmethod
    def api(cls, client: ApiClient) -> Actor:
        return cls(TaskEvent.Actor.API, f"api:{client.name}")

    @property
    def display(self) -> str:
        """Who it was, as a person (or a ticket's agent) reads it: a name, "API client iga",
        "OTRS Bridge (provision:crm on web-1)" for a job run holding a task, a job's label."""
        if self.user is not None:
            return self.user.get_full_name() or self.label
        if self.kind == TaskEvent.Actor.API:
            return f"API client {self.label.removeprefix('api:')}"
        parts = worker_parts(self.label) if self.kind == TaskEvent.Actor.JOB else None
        if parts is not None:
            return f"OTRS Bridge ({parts[0]} on {parts[1]})"
        return self.label


SYSTEM = Actor(TaskEvent.Actor.SYSTEM, "system")


def worker_name(kind: str) -> str:
    """The lease owner of a job run: the job's kind, the machine and process it runs in and
    a tag of this run, e.g. `instant:web-1:4711:3fa2c9`. An operator finds the process that
    holds a task from it (`worker_parts` reads it back); the tag keeps two runs of one
    process apart."""
    host = socket.gethostname().split(".")[0][:40]
    # The kind gives way to the length limit: the process and the tag keep runs apart.
    suffix = f":{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    return kind[: limits.LEASE_OWNER - len(suffix)] + suffix


def worker_parts(owner: str) -> tuple[str, str, int] | None:
    """The job's kind, the machine and the process of a `worker_name`; None for another
    name (a test's, or one written before names had this shape)."""
    parts = owner.split(":")
    if len(parts) < 4 or not (parts[-2].isascii() and parts[-2].isdigit()):
        return None
    return ":".join(parts[:-3]), parts[-3], int(parts[-2])


# Sent inside the transaction of every request status change, with `request_ids`; the
# callback deliveries listen (connected in tickets/apps.py).
request_moved = Signal()


def _event(
    *, request_id: int, task_id: int | None, from_status: str, to: str, reason: str, actor: Actor
) -> TaskEvent:
    event = _event_row(
        request_id=request_id,
        task_id=task_id,
        from_status=from_status,
        to=to,
        reason=reason,
        actor=actor,
    )
    event.save()
    return event


def _task_event(task: Task, reason: str, actor: Actor) -> TaskEvent:
    """An event on the task's timeline that leaves its state as it is (a note sent, a flag,
    a change told to the agent)."""
    return _event(
        request_id=task.request_id,
        task_id=task.pk,
        from_status=task.status,
        to=task.status,
        reason=reason,
        actor=actor,
    )


def _event_row(
    *, request_id: int, task_id: int | None, from_status: str, to: str, reason: str, actor: Actor
) -> TaskEvent:
    """An unsaved event, for bulk_create."""
    return TaskEvent(
        request_id=request_id,
        task_id=task_id,
        from_status=from_status,
        to_status=to,
        # NUL is the one character PostgreSQL cannot store; a reason may quote anything.
        reason=reason.replace("\x00", "")[: limits.EVENT_REASON],
        actor_kind=actor.kind,
        actor_user=actor.user if actor.user is not None and actor.user.pk else None,
        actor_label=actor.label[: limits.ACTOR_LABEL],
    )


def _move(
    obj: Task | AccessRequest,
    to: str,
    *,
    reason: str,
    actor: Actor,
    from_status: str | None = None,
    guard: dict | None = None,
    **fields,
):
    """Move a task or request from its current (or the given) status to `to`, with its event.

    Must run inside a transaction. Raises TransitionError when the move is not allowed or
    the row has moved on; nothing is written then. The object is updated in place.
    `guard` adds conditions, e.g. that the worker moving a claimed task still holds its lease.
    """
    model = type(obj)
    is_task = model is Task
    label = f"Task {obj.pk}" if is_task else f"Request {obj}"
    labels = dict(model.Status.choices)  # a message names states as the console shows them

    def said(status: str | None) -> str:
        return f"“{labels.get(status, status)}”" if status else "gone"

    from_status = from_status or obj.status
    if to not in (Task.TRANSITIONS if is_task else AccessRequest.TRANSITIONS)[from_status]:
        raise TransitionError(f"{label} is {said(from_status)}; it cannot become {said(to)}.")
    now = timezone.now()
    rows = model.objects.filter(pk=obj.pk, status=from_status, **(guard or {}))
    if rows.update(status=to, updated_at=now, **fields) != 1:
        current = model.objects.filter(pk=obj.pk).values_list("status", flat=True).first()
        raise TransitionError(
            f"{label} is {said(current)} now, not {said(from_status)}; nothing was changed."
        )
    _event(
        request_id=obj.request_id if isinstance(obj, Task) else obj.pk,
        task_id=obj.pk if is_task else None,
        from_status=from_status,
        to=to,
        reason=reason,
        actor=actor,
    )
    obj.status, obj.updated_at = to, now
    for name, value in fields.items():
        setattr(obj, name, value)
    if isinstance(obj, Task):
        notifications.after_task_move(obj, to)
    else:
        notifications.after_request_move(obj, to)
    if not is_task:
        request_moved.send(sender=AccessRequest, request_ids=[obj.pk])
    return obj
