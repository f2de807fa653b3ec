"""Connection services: test a connection and preview its requests.

The console button, the admin and `manage.py test_connection` all call these, never the
client directly (STYLE.md practice 5).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from . import context as variables
from .calls import CheckResult
from .client import TicketClient
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
    """The declared sample values (context.py), with the first endpoint that uses this
    connection when there is one, so the preview shows its name and attributes."""
    endpoint = (
        Endpoint.objects.filter(security_system__service_desk_connection=connection)
        .order_by("name")
        .first()
    )
    # An endpoint without a queue attribute still previews a queue, as most templates use one.
    if endpoint is None:
        return variables.sample(open_values={"endpoint": {"queue": "Raw"}})
    return variables.sample(
        values={
            "endpoint": endpoint.name,
            "endpoint.name": endpoint.name,
            "endpoint.displayName": endpoint.display_name or endpoint.name,
        },
        open_values={"endpoint": {"queue": "Raw", **endpoint.attributes}},
    )
