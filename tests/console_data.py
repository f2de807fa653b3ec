"""Bulk test data for the console tests and the console benchmark.

Real requests go through tickets.services in the tests that are about behaviour. The
query-count tests and the benchmark need hundreds or thousands of rows in every state,
which the services would take minutes to make through OTRS, so this module writes them
with bulk_create: requests in all states, their tasks, tickets for the tasks that have
one, and a few events.
"""

from __future__ import annotations

import itertools
import secrets

from django.db import transaction
from django.utils import timezone

from connections.models import Endpoint
from tickets.models import (
    AccessRequest,
    Identity,
    ProvisioningTask,
    TaskEvent,
    Ticket,
)

TS = ProvisioningTask.Status
RS = AccessRequest.Status

# Each task state with the request state that goes with it.
SHAPES = [
    (None, RS.PENDING_APPROVAL),
    (TS.NEW, RS.APPROVED),
    (TS.RETRY_WAIT, RS.APPROVED),
    (TS.TICKET_OPEN, RS.IN_PROGRESS),
    (TS.TICKET_PENDING, RS.IN_PROGRESS),
    (TS.COMPLETED, RS.COMPLETED),
    (TS.FAILED, RS.FAILED),
    (TS.CANCELLED, RS.CANCELLED),
    (TS.DISCONTINUED, RS.FAILED),
]
WITH_TICKET = {TS.TICKET_OPEN, TS.TICKET_PENDING, TS.COMPLETED, TS.DISCONTINUED}


def make_requests(
    count: int,
    *,
    endpoint: Endpoint,
    requester=None,
    start: int = 1,
    batch: int = 5000,
    events: bool = True,
) -> None:
    """Write `count` requests cycling through every state, with tasks and tickets.

    Numbers run from REQ-<start>; each batch is one transaction (one commit, not one per
    INSERT statement, which is what makes 100,000 rows take seconds instead of minutes).
    """
    shapes = itertools.cycle(SHAPES)
    for offset in range(0, count, batch):
        numbers = range(start + offset, start + offset + min(batch, count - offset))
        with transaction.atomic():
            _write_batch(numbers, [next(shapes) for _ in numbers], endpoint, requester, events)


def _write_batch(numbers: range, plan: list, endpoint: Endpoint, requester, events: bool) -> None:
    connection = endpoint.security_system.service_desk_connection
    now = timezone.now()
    identities = Identity.objects.bulk_create(
        [
            Identity(username=f"person{n:06d}", first_name="Person", last_name=f"No{n}")
            for n in numbers
        ]
    )
    requests = AccessRequest.objects.bulk_create(
        [
            AccessRequest(
                number=f"REQ-{n:06d}",
                requester=requester,
                beneficiary=identity,
                endpoint=endpoint,
                operation="add_access",
                account_name=identity.username,
                entitlements=["crm-read"],
                status=request_status,
            )
            for n, identity, (_, request_status) in zip(numbers, identities, plan, strict=True)
        ]
    )
    tickets = Ticket.objects.bulk_create(
        [
            Ticket(
                connection=connection,
                ticket_id=n,
                ticket_number=f"2026{n:010d}",
                state="open",
                is_open=task_status in (TS.TICKET_OPEN, TS.TICKET_PENDING),
                agent_url=f"http://otrs.example/otrs/index.pl?Action=AgentTicketZoom;TicketID={n}",
            )
            for n, (task_status, _) in zip(numbers, plan, strict=True)
            if task_status in WITH_TICKET
        ]
    )
    ticket_of = iter(tickets)
    tasks = ProvisioningTask.objects.bulk_create(
        [
            ProvisioningTask(
                request=r,
                endpoint=endpoint,
                connection=connection,
                operation="add_access",
                entitlement="crm-read",
                status=task_status,
                attempts=1,
                correlation_key="BR-" + secrets.token_hex(6).upper(),
                ticket=next(ticket_of) if task_status in WITH_TICKET else None,
                last_error="OTRS said no" if task_status == TS.FAILED else "",
                flag="unmapped state: merged" if task_status == TS.TICKET_PENDING else "",
                completed_at=now if task_status in ProvisioningTask.TERMINAL else None,
            )
            for r, (task_status, _) in zip(requests, plan, strict=True)
            if task_status is not None
        ]
    )
    if events:
        TaskEvent.objects.bulk_create(
            [
                TaskEvent(
                    request_id=t.request_id,
                    task=t,
                    from_status="claimed",
                    to_status=t.status,
                    reason="made by the test data builder",
                    actor_kind="system",
                    actor_label="system",
                )
                for t in tasks
            ]
        )
