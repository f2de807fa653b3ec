"""django-q2 task functions. Thin: take ids, call a service, nothing else (practice 6)."""

from __future__ import annotations

from . import services


def provision_due_tasks(connection_id: int | None = None, trigger: str = "schedule"):
    """The WSRETRY equivalent: create tickets for due tasks."""
    return services.provision_job(trigger=trigger, connection_id=connection_id).summary


def poll_open_tickets(connection_id: int | None = None, trigger: str = "schedule"):
    """Poll open tickets and apply their states."""
    return services.poll_job(trigger=trigger, connection_id=connection_id).summary


def provision_task(task_id: int):
    """Instant provisioning of one task, queued at approval."""
    return services.provision_one(task_id=task_id)


def refresh_ticket(ticket_pk: int, connection_name: str = ""):
    """Fetch one ticket's state now (queued by the OTRS webhook)."""
    return services.refresh_one(ticket_pk=ticket_pk, source=connection_name)
