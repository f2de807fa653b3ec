"""TicketSearch semantics (reference §7) over the in-memory tickets.

Znuny builds SQL from the parameters; we evaluate the same conditions in Python.
The rules worth knowing:

* String filters (Title, TicketNumber, CustomerID, CustomerUserLogin) are Znuny's
  search expressions (query_condition.py: ``&&``, ``||``, ``!``, parentheses,
  quotes; ``*`` and ``%`` wildcards, no implicit ones; without case); several values
  are OR-ed.
* Name lists (Queues, States, Priorities, Types, Locks) that name something
  unknown make Znuny's TicketSearch() give up - the operation then answers ``{}``.
  The same happens for an invalid date, SortBy or OrderBy.
* ``StateType`` and ``States`` are names compared without case (the database looks
  them up).  ``Open`` and ``Closed`` are no shorthands over the web service: the
  operation hands StateType on as a list, which the search core looks up as a type
  name, so ``Open`` is the type "open" alone and ``Closed`` is "closed".  Queues,
  priorities, types and locks are looked up with their case.
* Article criteria (``MIMEBase_<field>``, ``Fulltext``) match Znuny's search index,
  not the text (search_index.py); ``ContentSearch`` (AND, or OR) joins them, and
  ``Fulltext`` means OR and also searches the title.
* Time filters: ``<Prefix>NewerDate/OlderDate`` (``YYYY-MM-DD HH:MM:SS``, UTC) and
  ``<Prefix>NewerMinutes/OlderMinutes`` for the prefixes TicketCreateTime,
  TicketLastChangeTime (the ticket's Changed), TicketChangeTime (any history line),
  TicketCloseTime, TicketPendingTime and ArticleCreateTime.
* ``DynamicField_*`` criteria are ignored: over GET they can only be strings, which
  Znuny silently drops.
* Default order is SortBy=Age, OrderBy=Down: newest ticket first.  Ties are broken
  by TicketID in the same direction.  Default Limit 500.
"""

from __future__ import annotations

import re

from . import masterdata as md
from . import search_index
from .protocol import as_list, perl_true
from .query_condition import BrokenQuery, query_condition
from .store import Store, parse_time


class GiveUp(Exception):
    """Znuny's TicketSearch() returned undef: the operation answers ``{}``."""


def _text_filter(value):
    """A string filter as one test of a field's text, or None if it is effectively absent."""
    patterns = [str(v).replace("*", "%") for v in as_list(value) if perl_true(v)]
    # Znuny skips values that are only wildcards ("%", "**" ...).
    patterns = [p for p in patterns if not re.fullmatch(r"%{1,3}", p)]
    if not patterns:
        return None
    try:
        tests = [query_condition(p) for p in patterns]
    except BrokenQuery:
        raise GiveUp from None
    return lambda text: any(test(text) for test in tests)


def _ids(value) -> set[int] | None:
    values = [v for v in as_list(value) if perl_true(v)]
    if not values:
        return None
    result = set()
    for v in values:
        try:
            result.add(int(str(v).strip()))
        except ValueError:
            raise GiveUp from None
    return result


def _names(value, table: dict[int, str], *, any_case: bool = False) -> set[int] | None:
    values = [v for v in as_list(value) if perl_true(v)]
    if not values:
        return None
    folded = {name.lower(): key for key, name in table.items()}
    result = set()
    for name in values:
        found = folded.get(str(name).lower()) if any_case else md.lookup(table, name=str(name))
        if found is None:
            raise GiveUp
        result.add(found)
    return result


def _state_ids_for_type(value) -> set[int] | None:
    wanted = {str(v).lower() for v in as_list(value) if perl_true(v)}
    if not wanted:
        return None
    result = {s for s in md.STATES if md.state_type_name(s) in wanted}
    if not result:
        raise GiveUp
    return result


TIME_PREFIXES = (
    "TicketCreateTime",
    "TicketLastChangeTime",
    "TicketChangeTime",
    "TicketCloseTime",
    "TicketPendingTime",
    "ArticleCreateTime",
)


def _time_bounds(params: dict, prefix: str, now: int) -> tuple[int | None, int | None]:
    newer = older = None
    for suffix in ("NewerDate", "OlderDate"):
        raw = params.get(prefix + suffix)
        if perl_true(raw):
            parsed = parse_time(raw if not isinstance(raw, list) else raw[0])
            if parsed is None:
                raise GiveUp
            if suffix == "NewerDate":
                newer = parsed
            else:
                older = parsed
    for suffix in ("NewerMinutes", "OlderMinutes"):
        raw = params.get(prefix + suffix)
        if perl_true(raw):
            try:
                minutes = int(str(raw if not isinstance(raw, list) else raw[0]).strip())
            except ValueError:
                raise GiveUp from None
            bound = now - minutes * 60
            if suffix == "NewerMinutes":
                newer = bound if newer is None else max(newer, bound)
            else:
                older = bound if older is None else min(older, bound)
    return newer, older


def _times(ticket: dict, prefix: str) -> list[int]:
    if prefix == "TicketCreateTime":
        return [ticket["Created"]]
    if prefix == "TicketLastChangeTime":
        return [ticket["Changed"]]
    if prefix == "TicketChangeTime":
        return [h["Created"] for h in ticket["History"]]
    if prefix == "TicketCloseTime":
        return [ticket["ClosedAt"]] if ticket["ClosedAt"] else []
    if prefix == "TicketPendingTime":
        pending = md.state_type_name(ticket["StateID"]).startswith("pending")
        return [ticket["PendingUntil"]] if pending and ticket["PendingUntil"] else []
    return [a["Created"] for a in ticket["Articles"]]


def _sort_value(store: Store, ticket: dict, key: str):
    login = lambda uid: store.users.get(uid, {}).get("UserLogin", "")  # noqa: E731
    values = {
        "Age": lambda t: t["Created"],
        "Changed": lambda t: t["Changed"],
        "Created": lambda t: t["Created"],
        "TicketNumber": lambda t: t["TicketNumber"],
        "Title": lambda t: t["Title"].lower(),
        "Owner": lambda t: login(t["OwnerID"]),
        "Responsible": lambda t: login(t["ResponsibleID"]),
        "CustomerID": lambda t: t["CustomerID"],
        "State": lambda t: md.STATE_NAMES[t["StateID"]],
        "Queue": lambda t: md.QUEUES[t["QueueID"]],
        "Priority": lambda t: t["PriorityID"],
        "Type": lambda t: md.TYPES[t["TypeID"]],
        "Lock": lambda t: t["LockID"],
        "Service": lambda t: "",
        "SLA": lambda t: "",
        "PendingTime": lambda t: t["PendingUntil"],
        "EscalationTime": lambda t: 0,
        "EscalationUpdateTime": lambda t: 0,
        "EscalationResponseTime": lambda t: 0,
        "EscalationSolutionTime": lambda t: 0,
    }
    if key not in values:
        raise GiveUp
    return values[key](ticket)


def _article_criteria(params: dict):
    """The article criteria as one condition on a ticket, or None when there are none.

    Znuny joins the index per article: the criteria (AND or OR, see ContentSearch)
    must hold for one article; Fulltext's title test needs no article at all.
    """
    terms = []
    for field in search_index.FIELDS:
        pattern = _article_pattern(params.get(f"MIMEBase_{field}"))
        if pattern is not None:
            terms.append((field, pattern))
    fulltext = _article_pattern(params.get("Fulltext"))
    if not terms and fulltext is None:
        return None
    how = as_text_value(params.get("ContentSearch")).upper() or "AND"
    if fulltext is not None:
        how = "OR"
    if how not in ("AND", "OR"):
        raise GiveUp  # Znuny writes it into the SQL as it is, which then fails
    join = all if how == "AND" else any

    def matches(ticket: dict) -> bool:
        if fulltext is not None and search_index.matches(fulltext, ticket["Title"].lower()):
            return True
        for article in ticket["Articles"]:
            index = search_index.article_index(article)
            tests = [search_index.matches(p, index[f]) for f, p in terms]
            if fulltext is not None:
                tests.append(any(search_index.matches(fulltext, v) for v in index.values()))
            if join(tests):
                return True
        return False

    return matches


def _article_pattern(value):
    if not perl_true(value) or not isinstance(value, str):
        return None  # Znuny takes only a string here: a repeated key is ignored
    return search_index.like_pattern(value.strip())


def as_text_value(value) -> str:
    """A parameter the operation takes only as a string, trimmed ("" otherwise)."""
    return value.strip() if isinstance(value, str) else ""


def search(store: Store, params: dict) -> list[str]:
    """Return matching TicketIDs as strings, in result order (may be empty)."""
    try:
        return _search(store, params)
    except GiveUp:
        return []


def _search(store: Store, params: dict) -> list[str]:
    now = int(store.clock())
    conditions = []

    like_fields = {
        "Title": "Title",
        "TicketNumber": "TicketNumber",
        "CustomerID": "CustomerID",
        "CustomerUserLogin": "CustomerUserID",
    }
    for param, field in like_fields.items():
        matches = _text_filter(params.get(param))
        if matches is not None:
            conditions.append(lambda t, f=field, m=matches: m(str(t[f] or "")))

    id_fields = {
        "TicketID": "TicketID",
        "QueueIDs": "QueueID",
        "StateIDs": "StateID",
        "PriorityIDs": "PriorityID",
        "TypeIDs": "TypeID",
        "LockIDs": "LockID",
        "OwnerIDs": "OwnerID",
        "ResponsibleIDs": "ResponsibleID",
        "CreatedUserIDs": "CreateBy",
    }
    for param, field in id_fields.items():
        wanted = _ids(params.get(param))
        if wanted is not None:
            conditions.append(lambda t, f=field, w=wanted: t[f] in w)

    name_fields = {
        "Queues": ("QueueID", md.QUEUES),
        "States": ("StateID", md.STATE_NAMES),
        "Priorities": ("PriorityID", md.PRIORITIES),
        "Types": ("TypeID", md.TYPES),
        "Locks": ("LockID", md.LOCKS),
    }
    for param, (field, table) in name_fields.items():
        wanted = _names(params.get(param), table, any_case=param == "States")
        if wanted is not None:
            conditions.append(lambda t, f=field, w=wanted: t[f] in w)

    state_type_ids = _state_ids_for_type(params.get("StateType"))
    if state_type_ids is not None:
        conditions.append(lambda t, w=state_type_ids: t["StateID"] in w)
    type_ids = _ids(params.get("StateTypeIDs"))
    if type_ids is not None:
        conditions.append(lambda t, w=type_ids: md.STATES[t["StateID"]][1] in w)

    for prefix in TIME_PREFIXES:
        newer, older = _time_bounds(params, prefix, now)
        if newer is None and older is None:
            continue

        def in_range(t, p=prefix, lo=newer, hi=older):
            return any((lo is None or v >= lo) and (hi is None or v <= hi) for v in _times(t, p))

        conditions.append(in_range)

    article_match = _article_criteria(params)
    if article_match is not None:
        conditions.append(article_match)

    sort_by = [str(v) for v in as_list(params.get("SortBy")) if perl_true(v)] or ["Age"]
    order_by = [str(v) for v in as_list(params.get("OrderBy")) if perl_true(v)] or ["Down"]
    if any(o not in ("Up", "Down") for o in order_by):
        raise GiveUp

    limit = 500
    raw_limit = params.get("Limit")
    if perl_true(raw_limit) and not isinstance(raw_limit, list):
        try:
            limit = int(str(raw_limit).strip()) or 500
        except ValueError:
            limit = 500

    matches = [t for t in store.tickets.values() if all(c(t) for c in conditions)]
    # Stable multi-key sort: apply the least significant key first.
    order_by += [order_by[-1]] * max(0, len(sort_by) - len(order_by))
    keys = list(zip(sort_by, order_by[: len(sort_by)], strict=True))
    matches.sort(key=lambda t: t["TicketID"], reverse=keys[0][1] == "Down")
    for key, direction in reversed(keys):
        matches.sort(key=lambda t, k=key: _sort_value(store, t, k), reverse=direction == "Down")
    return [str(t["TicketID"]) for t in matches[:limit]]
