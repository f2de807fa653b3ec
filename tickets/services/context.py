"""What a task's templates see (`${user.firstname}` …) and the OTRS agent link of a ticket.

The names are declared in connections.context; a task fills every one of them, so a
template that passes validation and renders in the preview also renders for a real task.
"""

from __future__ import annotations

from connections import context
from connections.models import Connection

from ..models import Account, Operation
from ..models import ProvisioningTask as Task

# Everything a task's template context reads, fetched with the task in one query.
CONTEXT_RELATIONS = (
    "connection",
    "request__beneficiary__manager",
    "request__requester",
    "request__api_client",
    "endpoint__security_system",
)


def task_context(task_id: int | Task) -> dict:
    """The variables a connection's templates see for one task (`${user.firstname}` …).

    Takes a task id, or a task already loaded with CONTEXT_RELATIONS.
    """
    task = (
        task_id
        if isinstance(task_id, Task)
        else Task.objects.select_related(*CONTEXT_RELATIONS).get(pk=task_id)
    )
    access_request = task.request
    identity = access_request.beneficiary
    requester = access_request.requester
    endpoint = task.endpoint
    system = endpoint.security_system
    full_name = f"{identity.first_name} {identity.last_name}".strip()
    return context.build(
        {
            "user": identity.username,
            "user.username": identity.username,
            "user.firstname": identity.first_name,
            "user.lastname": identity.last_name,
            "user.displayname": full_name or identity.username,
            "user.email": identity.email,
            "user.manager": identity.manager.username if identity.manager else "",
            "requestor": access_request.requester_label,
            "requestor.email": requester.email if requester is not None else "",
            "task": str(task.pk),
            "task.id": task.pk,
            "task.operation": task.operation,
            "task.operationLabel": task.get_operation_display(),
            "task.entitlement": task.entitlement,
            "task.accountName": access_request.account_name,
            "task.inventoryNote": inventory_note(task),
            "task.requestNumber": access_request.number or "",
            "task.justification": access_request.justification,
            "endpoint": endpoint.name,
            "endpoint.name": endpoint.name,
            "endpoint.displayName": endpoint.display_name or endpoint.name,
            "securitySystem": system.name,
            "securitySystem.name": system.name,
            "securitySystem.displayName": system.display_name or system.name,
            "entitlements": list(access_request.entitlements)
            or ([task.entitlement] if task.entitlement else []),
            "entitlement": task.entitlement,
            "account": access_request.account_name,
            "correlationKey": task.correlation_key,
        },
        open_values={"user": identity.properties or {}, "endpoint": endpoint.attributes or {}},
    )


# What a ticket says of an account the inventory does not hold (endpoints that allow it).
NOT_IN_INVENTORY = "(not in the bridge's inventory: check that it exists before changing it)"


def inventory_note(task: Task) -> str:
    """NOT_IN_INVENTORY for a task that changes an account the bridge does not know."""
    if task.operation == Operation.CREATE_ACCOUNT:
        return ""
    known = Account.objects.filter(
        identity_id=task.request.beneficiary_id, endpoint_id=task.endpoint_id, active=True
    ).exists()
    return "" if known else NOT_IN_INVENTORY


def agent_link(connection: Connection, ticket_id: int) -> str:
    """The OTRS agent view of a ticket, derived from the web service URL of the create call."""
    calls = (connection.create_ticket_json or {}).get("call") or []
    url = str(calls[0].get("url", "")) if calls and isinstance(calls[0], dict) else ""
    marker = "/nph-genericinterface.pl"
    if marker not in url:
        return ""
    return f"{url.split(marker)[0]}/index.pl?Action=AgentTicketZoom;TicketID={int(ticket_id)}"
