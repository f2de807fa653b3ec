"""Connection services: test a connection and preview its requests.

The console button, the admin and `manage.py test_connection` all call these, never the
client directly (STYLE.md practice 5).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from .client import CheckResult, TicketClient
from .errors import OTRSError
from .models import Connection, Endpoint


def connection_check(*, connection: Connection) -> CheckResult:
    """Log in and run the test call; record the verdict on the connection."""
    try:
        result = TicketClient(connection).test_connection()
    except OTRSError as exc:  # the documents themselves are invalid
        result = CheckResult(False, exc.message, [])
    Connection.objects.filter(pk=connection.pk).update(
        last_test_at=timezone.now(), last_test_ok=result.ok, last_test_message=result.message
    )
    return result


def connection_preview(*, connection: Connection, context: dict[str, Any]) -> list[dict]:
    """The masked requests that creating a ticket for `context` would send. Sends nothing."""
    return TicketClient(connection).preview_create(context)


def sample_context(connection: Connection) -> dict[str, Any]:
    """A realistic task context for previews, shaped like the one the tickets layer builds."""
    endpoint = _sample_endpoint(connection)
    return {
        "user": {
            "_": "jdoe",
            "username": "jdoe",
            "firstname": "Jane",
            "lastname": "Doe",
            "displayname": "Jane Doe",
            "email": "jane.doe@example.com",
            "id": 1,
        },
        "requestor": {"_": "asmith", "username": "asmith", "email": "a.smith@example.com"},
        "task": {
            "_": 1,
            "id": 1,
            "operation": "add_access",
            "operationLabel": "Add access",
            "accountName": "jdoe",
            "request": "REQ-000001",
            "justification": "Needs read access for the quarterly audit.",
        },
        "endpoint": endpoint,
        "securitySystem": {"_": "sample-system", "name": "sample-system"},
        "entitlements": ["read-only"],
        "entitlement": {"_": "read-only", "name": "read-only"},
        "account": {"_": "jdoe", "name": "jdoe"},
        "correlationKey": "BR-SAMPLE0001",
    }


def _sample_endpoint(connection: Connection) -> dict[str, Any]:
    """The first endpoint that uses this connection, or a stand-in with the usual attributes."""
    endpoint = (
        Endpoint.objects.filter(security_system__service_desk_connection=connection)
        .order_by("name")
        .first()
    )
    if endpoint is None:
        return {"_": "sample-app", "name": "sample-app", "queue": "Raw"}
    return {"queue": "Raw", **endpoint.attributes, "_": endpoint.name, "name": endpoint.name}
