"""Reading ticket states: the status call in batches or one by one, a batch halved around
an id OTRS refuses, and the target of a merged ticket.

What a state read is apart from HTTP: the client hands in `run(call, variables)`, which
sends one call with its session and judges the answer (as correlation.py is handed it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .documents import CallSpec, StatusSpec
from .errors import (
    OTRSError,
    TicketStatus,
    as_ticket_id,
    means_missing,
    merge_target,
    ticket_status,
    value_at,
)

Run = Callable[[CallSpec, dict], Any]


def read(
    status: StatusSpec, batch_size: int, ticket_ids: list[int], run: Run
) -> dict[int, TicketStatus]:
    """The state of each ticket; ids OTRS does not (or no longer) show are left out."""
    ids = list(dict.fromkeys(int(i) for i in ticket_ids))
    found: dict[int, TicketStatus] = {}
    if status.batch:
        size = batch_size or status.batch.size
        for start in range(0, len(ids), size):
            found.update(_batch(status, ids[start : start + size], run))
    else:
        for ticket_id in ids:
            found.update(_single(status, ticket_id, run))
    merge = status.merge_target
    if merge:
        for ticket_id, ticket in found.items():
            if ticket.state in merge.states or ticket.state_type == "merged":
                found[ticket_id] = replace(
                    ticket, merged_into=_merge_target(status, ticket_id, run)
                )
    return found


def _batch(status: StatusSpec, ids: list[int], run: Run) -> dict[int, TicketStatus]:
    assert status.batch is not None
    found = {}
    for node in ticket_nodes(run, status.call, ids, status.batch.ticket_list_path):
        ticket_id = as_ticket_id(value_at(node, status.batch.ticket_id_path))
        if ticket_id in ids:
            found[ticket_id] = ticket_status(status, node, ticket_id)
    return found


def ticket_nodes(run: Run, call: CallSpec, ids: list[int], list_path: str) -> list:
    """The tickets one call with `${ticketIDs}` lists at `list_path`. OTRS refuses the
    whole batch for one id it does not show: then halve it to isolate that id."""
    try:
        body = run(call, {"ticketIDs": ",".join(map(str, ids))})
    except OTRSError as exc:
        if not means_missing(exc):
            raise
        if len(ids) == 1:
            return []
        half = len(ids) // 2
        return [
            *ticket_nodes(run, call, ids[:half], list_path),
            *ticket_nodes(run, call, ids[half:], list_path),
        ]
    tickets = value_at(body, list_path)
    if not isinstance(tickets, list):
        raise OTRSError(
            f"{call.name} answered without a ticket list at {list_path}", permanent=True
        )
    return tickets


def _single(status: StatusSpec, ticket_id: int, run: Run) -> dict[int, TicketStatus]:
    try:
        body = run(status.call, {"ticketID": ticket_id})
    except OTRSError as exc:
        if means_missing(exc):
            return {}
        raise
    return {ticket_id: ticket_status(status, body, ticket_id)}


def _merge_target(status: StatusSpec, ticket_id: int, run: Run) -> int | None:
    """The ticket a merged ticket went into; None when that cannot be learned now."""
    merge = status.merge_target
    assert merge is not None
    try:
        body = run(merge.call, {"ticketID": ticket_id})
    except OTRSError:
        return None  # logged as an ApiCall; the next poll asks again
    return merge_target(merge, body)
