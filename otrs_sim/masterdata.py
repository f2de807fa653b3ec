"""Default master data of a fresh Znuny 6.5 system (reference §9).

The IDs matter: clients map states by name *and* by ID, and the stock data has a
surprising order (StateID 2 and 3 are the closed states, 4 is ``open``).  Everything
here is read-only; the store only ever refers to these tables by ID.
"""

from __future__ import annotations

import re

# StateTypeID -> name
STATE_TYPES: dict[int, str] = {
    1: "new",
    2: "open",
    3: "closed",
    4: "pending reminder",
    5: "pending auto",
    6: "removed",
    7: "merged",
}

# StateID -> (name, StateTypeID)
STATES: dict[int, tuple[str, int]] = {
    1: ("new", 1),
    2: ("closed successful", 3),
    3: ("closed unsuccessful", 3),
    4: ("open", 2),
    5: ("removed", 6),
    6: ("pending reminder", 4),
    7: ("pending auto close+", 5),
    8: ("pending auto close-", 5),
    9: ("merged", 7),
}

STATE_NAMES: dict[int, str] = {sid: name for sid, (name, _type) in STATES.items()}

# QueueID -> name (all in group 1 "users")
QUEUES: dict[int, str] = {1: "Postmaster", 2: "Raw", 3: "Junk", 4: "Misc"}
QUEUE_GROUP_ID = 1

PRIORITIES: dict[int, str] = {
    1: "1 very low",
    2: "2 low",
    3: "3 normal",
    4: "4 high",
    5: "5 very high",
}

LOCKS: dict[int, str] = {1: "unlock", 2: "lock", 3: "tmp_lock"}

TYPES: dict[int, str] = {1: "Unclassified"}

# Communication channels (Internal = 3 observed; Email 1, Phone 2 per stock data).
CHANNELS: dict[int, str] = {1: "Email", 2: "Phone", 3: "Internal"}

# Article sender types (agent = 1 observed).
SENDER_TYPES: dict[int, str] = {1: "agent", 2: "system", 3: "customer"}

# Ticket dynamic fields of a fresh Znuny (observed, sorted by name).  The two
# calendar fields are Date/Time fields; the others are text-like.
STOCK_DYNAMIC_FIELDS: tuple[str, ...] = (
    "ProcessManagementActivityID",
    "ProcessManagementAttachment",
    "ProcessManagementProcessID",
    "TicketCalendarEndTime",
    "TicketCalendarStartTime",
)
DATETIME_DYNAMIC_FIELDS = frozenset({"TicketCalendarEndTime", "TicketCalendarStartTime"})

# Ticket history types used by the simulator, with their IDs in the ticket_history_type
# table of Znuny 6.5.10 (read from the shared server); clients should key on the name.
HISTORY_TYPES: dict[str, int] = {
    "NewTicket": 1,
    "AddNote": 15,
    "Move": 16,
    "Lock": 17,
    "Unlock": 18,
    "CustomerUpdate": 21,
    "PriorityUpdate": 22,
    "OwnerUpdate": 23,
    "Misc": 25,
    "SetPendingTime": 26,
    "StateUpdate": 27,
    "TicketDynamicFieldUpdate": 28,
    "TicketLinkAdd": 30,
    "Merged": 33,
    "ResponsibleUpdate": 34,
    "TypeUpdate": 37,
    "TitleUpdate": 50,
}

ROOT_USER_ID = 1
ROOT_LOGIN = "root@localhost"

# Preferences of a fresh agent that SessionGet shows besides the session's own keys
# (Znuny 6.5.10 also shows "UserTitle": null, left out here: every value is text).
AGENT_PREFERENCES: dict[str, str] = {
    "AdminCommunicationLogPageShown": "25",
    "AdminDynamicFieldsOverviewPageShown": "25",
    "UserCreateNextMask": "",
    "UserLastViewsLimit": "5",
    "UserLastViewsPosition": "Avatar",
    "UserLoginFailed": "0",
    "UserRefreshTime": "0",
    "UserTicketOverviewMediumPageShown": "20",
    "UserTicketOverviewPreviewPageShown": "15",
    "UserTicketOverviewSmallPageShown": "25",
    "ValidID": "1",
}

_EMAIL_RE = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[A-Za-z0-9-]{2,}$")
# SysConfig CheckEmailInvalidAddress as shared/znuny/setup.sh sets it (Znuny's default
# refuses example.com, which the bridge's tests and demo use).
_INVALID_EMAIL_RE = re.compile(r"\.invalid$", re.I)

# Charsets accepted in Article ContentType / Charset (Znuny asks Perl's Encode).
KNOWN_CHARSETS = frozenset(
    {
        "utf8",
        "utf-8",
        "us-ascii",
        "ascii",
        "latin1",
        "iso-8859-1",
        "iso-8859-2",
        "iso-8859-15",
        "windows-1252",
        "cp1252",
        "utf-16",
        "utf16",
    }
)


def is_email(value: str) -> bool:
    """Znuny accepts an unknown CustomerUser only when it is a valid e-mail address."""
    return bool(_EMAIL_RE.match(value or "")) and not _INVALID_EMAIL_RE.search(value)


def state_type_name(state_id: int) -> str:
    return STATE_TYPES[STATES[state_id][1]]


def state_id_by_name(name: str) -> int | None:
    for sid, (sname, _type_id) in STATES.items():
        if sname == name:
            return sid
    return None


def lookup(table: dict[int, str], name=None, id_=None) -> int | None:
    """Resolve a name-or-ID pair against a master data table, like Znuny's Validate*().

    An ID wins when both are given (Znuny validates the ID first).  Returns the ID or
    None when the value does not exist.
    """
    if id_ not in (None, ""):
        try:
            value = int(str(id_).strip())
        except ValueError:
            return None
        return value if value in table else None
    if name not in (None, ""):
        for key, value in table.items():
            if value == name:
                return key
    return None
