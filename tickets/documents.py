"""The request document of the JSON API (the Request schema in tickets/openapi.py): what
`GET /api/v1/requests/<id>` answers and what a callback delivery POSTs."""

from __future__ import annotations

from .models import AccessRequest, ProvisioningTask, Ticket


def ticket_document(ticket: Ticket | None) -> dict | None:
    if ticket is None:
        return None
    return {
        "id": ticket.ticket_id,
        "number": ticket.ticket_number or None,
        "state": ticket.state or None,
        "state_type": ticket.state_type or None,
        "url": ticket.agent_url or None,
    }


def task_document(task: ProvisioningTask) -> dict:
    return {
        "id": task.pk,
        "operation": task.operation,
        "entitlement": task.entitlement or None,
        "status": task.status,
        "attempts": task.attempts,
        "last_error": task.last_error or None,
        "reason": (
            {"subject": task.outcome_subject, "excerpt": task.outcome_reason}
            if task.outcome_subject or task.outcome_reason
            else None
        ),
        "ticket": ticket_document(task.ticket),
    }


def request_document(access_request: AccessRequest) -> dict:
    """The fixed request shape of the API (see the Request schema in tickets/openapi.py)."""
    return {
        "id": access_request.pk,
        "number": access_request.number,
        "status": access_request.status,
        "tasks": [task_document(t) for t in access_request.tasks.all()],
    }
