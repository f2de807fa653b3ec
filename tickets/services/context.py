"""What a task's templates see (`${user.firstname}` …) and the OTRS agent link of a ticket."""

from __future__ import annotations

from connections.models import Connection

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
    endpoint = task.endpoint
    system = endpoint.security_system
    return {
        "user": {
            **{str(k): v for k, v in (identity.properties or {}).items()},
            "_": identity.username,
            "username": identity.username,
            "firstname": identity.first_name,
            "lastname": identity.last_name,
            "email": identity.email,
            "manager": identity.manager.username if identity.manager else "",
        },
        "requestor": access_request.requester_label,
        "task": {
            "_": str(task.pk),
            "id": task.pk,
            "operation": task.operation,
            "operationLabel": task.get_operation_display(),
            "entitlement": task.entitlement,
            "accountName": access_request.account_name,
            "requestNumber": access_request.number or "",
            "justification": access_request.justification,
        },
        "endpoint": {
            **{str(k): v for k, v in (endpoint.attributes or {}).items()},
            "_": endpoint.name,
            "name": endpoint.name,
            "displayName": endpoint.display_name or endpoint.name,
        },
        "securitySystem": {
            "_": system.name,
            "name": system.name,
            "displayName": system.display_name or system.name,
        },
        "entitlements": list(access_request.entitlements)
        or ([task.entitlement] if task.entitlement else []),
        "entitlement": task.entitlement,
        "account": access_request.account_name,
        "correlationKey": task.correlation_key,
    }


def agent_link(connection: Connection, ticket_id: int) -> str:
    """The OTRS agent view of a ticket, derived from the web service URL of the create call."""
    calls = (connection.create_ticket_json or {}).get("call") or []
    url = str(calls[0].get("url", "")) if calls and isinstance(calls[0], dict) else ""
    marker = "/nph-genericinterface.pl"
    if marker not in url:
        return ""
    return f"{url.split(marker)[0]}/index.pl?Action=AgentTicketZoom;TicketID={int(ticket_id)}"
