"""Finding a task's ticket again by its correlation key; the client runs the calls.

Each searchCall is tried in turn. Of one search's hits, keyCheckCall reads at most
KEY_CHECKED_HITS in one call, and a hit is adopted only when it carries the key (of
several, the oldest: the first created). A search whose hits were all refused leaves a
note for the task's timeline saying which and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .calls import CreatedTicket, Reconciled
from .documents import CallSpec, CreateTicketSpec, KeyCheckSpec
from .errors import OTRSError, as_ticket_id, ids_at, value_at

# The most hits of one search that keyCheckCall reads, in one call: a search answering with
# more tickets than this ignores its filter (OTRS lists the newest first), and 20 tickets
# with their first article stay well below the answer size limit.
KEY_CHECKED_HITS = 20

# Runs one call with these variables and returns its answer's body.
Run = Callable[[CallSpec, dict], Any]
# The tickets one call with ${ticketIDs} lists at a path: (call, ids, path) → tickets.
Read = Callable[[CallSpec, list[int], str], list]


def reconcile(create: CreateTicketSpec, context: dict, run: Run, read: Read) -> Reconciled:
    """The ticket carrying `context["correlationKey"]`, if a search finds one; its number
    is "" when the key check's answer does not hold it."""
    if not create.searches:
        return Reconciled(None)
    key = str(context.get("correlationKey") or "")
    if not key:
        raise OTRSError(
            "no correlation key to search by; the bridge never searches without one",
            permanent=True,
        )
    check = create.key_check
    assert check is not None  # spec requires one beside a searchCall
    notes: list[str] = []
    refused: set[int] = set()
    for search in create.searches:
        body = run(search.call, context)
        path = search.ticket_list_path or search.call.ticket_id_path
        hits = [i for i in ids_at(body, path, search.call.name) if i not in refused]
        if not hits:
            continue
        shown = hits[:KEY_CHECKED_HITS]
        proven = _carrying(check, read(check.call, shown, check.ticket_list_path), shown, key)
        if proven:
            ticket_id = min(proven)
            return Reconciled(CreatedTicket(ticket_id, proven[ticket_id]), tuple(notes))
        refused.update(shown)
        more = len(hits) - len(shown)
        notes.append(
            f"{search.call.name} found ticket(s) {', '.join(map(str, shown))}"
            + (f" and {more} more (does it ignore its filter?)" if more else "")
            + f"; none carries {key} at {', '.join(check.key_paths)}, so none was adopted"
        )
    return Reconciled(None, tuple(notes))


def _carrying(check: KeyCheckSpec, tickets: list, ids: list[int], key: str) -> dict[int, str]:
    """Of the tickets read, those among `ids` that carry `key`: id → ticket number."""
    found = {}
    for ticket in tickets:
        ticket_id = as_ticket_id(value_at(ticket, check.ticket_id_path))
        if ticket_id in ids and check.carries(ticket, key):
            found[ticket_id] = str(value_at(ticket, check.call.ticket_number_path) or "")
    return found
