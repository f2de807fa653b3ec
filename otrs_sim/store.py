"""In-memory state of the simulated Znuny: agents, sessions, tickets, articles, history.

One ``threading.RLock`` (``Store.lock``) guards everything.  The HTTP layer holds it
for the whole duration of an operation, so validation and the write it guards are
atomic - 50 concurrent TicketCreates get 50 distinct TicketIDs and TicketNumbers.

Tickets are kept as plain dicts so they can be written to the ``--state`` file as
JSON unchanged.  ``ticket_view()`` turns one into the exact TicketGet shape of
Znuny 6.5.10 (reference §6.2/§6.3: numbers and strings where Znuny has them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from . import masterdata as md
from .protocol import OPERATIONS

SESSION_ALPHABET = string.ascii_letters + string.digits
SYSTEM_ID = "10"
STATE_FILE_VERSION = 1


def fmt_time(epoch: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC (the observed system runs in UTC)."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(text: str) -> int | None:
    """Inverse of fmt_time; None when the text is not a valid timestamp."""
    try:
        parsed = datetime.strptime(str(text).strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return int(parsed.replace(tzinfo=UTC).timestamp())


# The number MySQL reads at the start of a text it compares with a number column.
_MYSQL_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)")


def mysql_id(value) -> int | None:
    """The ticket id a text names when Znuny binds it into ``WHERE id = ?``.

    Znuny 6.5.10 checks no id's form: MySQL reads the leading number of the text
    (" 3", "03", "3abc", "3.0" and "3e0" are all 3; "abc" is 0) and a value that is no
    whole positive number matches no ticket.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    found = _MYSQL_NUMBER.match(str(value))
    if not found:
        return None
    number = float(found.group(1))
    return int(number) if number > 0 and number.is_integer() else None


def minute_text(epoch: float) -> str:
    """``YYYY-MM-DD HH:MM``, as Znuny writes a pending time into the history."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%d %H:%M")


def ticket_number(epoch: float, counter: int) -> str:
    """DateChecksum TicketNumber: YYYYMMDD + SystemID + 5-digit counter + check digit.

    The check digit weights the digits 1,2,1,2,... from the left, takes the sum
    modulo 10 and subtracts it from 10 (10 becomes 1) - this reproduces both
    observed numbers 2026112610000015 and 2026112610000024.
    """
    date = datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y%m%d")
    base = f"{date}{SYSTEM_ID}{counter:05d}"
    total = sum(int(d) * (1 if i % 2 == 0 else 2) for i, d in enumerate(base))
    check = 10 - total % 10
    if check == 10:
        check = 1
    return f"{base}{check}"


class Store:
    """All simulator data plus the counters shown by ``/_sim/stats``."""

    def __init__(
        self,
        user: str,
        password: str,
        *,
        state_file=None,
        welcome_ticket=False,
        dynamic_fields=(),
        clock=time.time,
    ):
        self.lock = threading.RLock()
        self.clock = clock
        self.started = clock()  # when the agents were "created"
        self.state_file = state_file
        self.welcome_ticket = welcome_ticket
        self.dynamic_field_names = tuple(sorted(set(md.STOCK_DYNAMIC_FIELDS) | set(dynamic_fields)))
        self.users = {
            md.ROOT_USER_ID: {
                "UserID": md.ROOT_USER_ID,
                "UserLogin": md.ROOT_LOGIN,
                "UserFirstname": "Admin",
                "UserLastname": "OTRS",
                "UserEmail": "root@localhost",
                "Password": None,  # root cannot log in to the simulator
            },
            2: {
                "UserID": 2,
                "UserLogin": user,
                "UserFirstname": "Bridge",
                "UserLastname": "Agent",
                "UserEmail": f"{user}@example.com" if "@" not in user else user,
                "Password": password,
            },
        }
        self.next_ticket_id = 2
        self.next_article_id = 2
        self.next_history_id = 1
        self.tn_counter = 0
        self.tickets: dict[int, dict] = {}
        self.sessions: dict[str, dict] = {}
        self._reset_counters()
        if state_file and os.path.exists(state_file):
            self.load()
        elif welcome_ticket:
            self._add_welcome_ticket()

    # ------------------------------------------------------------------ counters

    def _reset_counters(self):
        self.calls: Counter = Counter({op: 0 for op in OPERATIONS})
        self.faults: Counter = Counter(
            {"http500": 0, "reset": 0, "html500": 0, "raw_html": 0, "dropped_after_commit": 0}
        )
        self.transport: Counter = Counter({"no_route": 0, "unknown_webservice": 0})
        in_flight = getattr(self, "webhooks", Counter())["pending"]  # survives a reset
        self.webhooks: Counter = Counter(
            {"sent": 0, "failed": 0, "retried": 0, "abandoned": 0, "pending": in_flight}
        )

    def stats(self) -> dict:
        with self.lock:
            by_state = Counter(md.STATE_NAMES[t["StateID"]] for t in self.tickets.values())
            return {
                "calls": dict(self.calls),
                "faults": dict(self.faults),
                "transport": dict(self.transport),
                "tickets": len(self.tickets),
                "tickets_by_state": dict(sorted(by_state.items())),
                "sessions": len(self.sessions),
                "webhooks": dict(self.webhooks),
            }

    def reset(self, reset_ids: bool = False):
        """Forget tickets, sessions and counters.  IDs keep counting unless asked,
        so a client that remembers TicketID 2 never sees a different ticket 2."""
        with self.lock:
            self.tickets.clear()
            self.sessions.clear()
            self._reset_counters()
            if reset_ids:
                self.next_ticket_id = 2
                self.next_article_id = 2
                self.next_history_id = 1
                self.tn_counter = 0
                if self.welcome_ticket:
                    self._add_welcome_ticket()
            self.save()

    # ------------------------------------------------------------------ agents & sessions

    def user_by_login(self, login):
        for user in self.users.values():
            if user["UserLogin"] == login:
                return user
        return None

    def authenticate(self, login, password):
        """Agent login check; returns the user dict or None."""
        user = self.user_by_login(login)
        if user and user["Password"] is not None and password == user["Password"]:
            return user
        return None

    def create_session(self, user: dict, remote_addr: str = "", user_agent: str = "") -> str:
        with self.lock:
            session_id = "".join(secrets.choice(SESSION_ALPHABET) for _ in range(32))
            now = self.clock()
            self.sessions[session_id] = {
                "UserID": user["UserID"],
                "UserLogin": user["UserLogin"],
                "UserType": "User",
                "Created": now,
                "RemoteAddr": remote_addr,
                "UserAgent": user_agent,
            }
            self.save()
            return session_id

    def check_session(self, session_id, idle_ttl: float, max_ttl: float):
        """Return the session's user or None.  Expiry counts from creation (the GI
        never refreshes UserLastRequest) and an expired session is deleted, so it
        fails exactly like an unknown SessionID afterwards."""
        with self.lock:
            session = self.sessions.get(str(session_id))
            if session is None:
                return None
            age = self.clock() - session["Created"]
            if age >= idle_ttl or age >= max_ttl:
                del self.sessions[str(session_id)]
                self.save()
                return None
            return self.users.get(session["UserID"])

    def expire_sessions(self, session_id: str | None = None) -> int:
        """End every session, or only `session_id` (as Znuny's RemoveSessionID does)."""
        with self.lock:
            if session_id is not None:
                count = 1 if self.sessions.pop(str(session_id), None) else 0
            else:
                count = len(self.sessions)
                self.sessions.clear()
            self.save()
            return count

    # ------------------------------------------------------------------ tickets

    def get(self, ticket_id) -> dict | None:
        """The ticket a TicketID names, read as Znuny's database reads it (mysql_id)."""
        found = mysql_id(ticket_id)
        return None if found is None else self.tickets.get(found)

    def find_by_number(self, number) -> dict | None:
        for ticket in self.tickets.values():
            if ticket["TicketNumber"] == str(number):
                return ticket
        return None

    def _add_welcome_ticket(self):
        now = self.clock()
        ticket = self._blank_ticket(1, "2015071510123456", now)
        ticket.update(
            Title="Welcome to Znuny!",
            CustomerUserID="customer@example.com",
            CustomerID="",
            OwnerID=1,
            CreateBy=1,
            ChangeBy=1,
        )
        self.tickets[1] = ticket
        self.add_history(ticket, "NewTicket", "%%2015071510123456%%Raw%%3 normal%%new%%1", 1)
        self.add_article(
            ticket,
            {
                "From": "Znuny Feedback <feedback@znuny.org>",
                "To": "Your Znuny System",
                "Subject": "Welcome to Znuny!",
                "Body": "Welcome to Znuny!\n\nThis ticket was created by the simulator.",
                "ContentType": "text/plain; charset=utf8",
                "MimeType": "text/plain",
                "Charset": "utf8",
                "CommunicationChannelID": 1,
                "SenderTypeID": 3,
                "IsVisibleForCustomer": 1,
                "TimeUnit": 0,
                "Attachments": [],
            },
            user_id=1,
            article_id=1,
        )

    def _blank_ticket(self, ticket_id: int, number: str, now: float) -> dict:
        return {
            "TicketID": ticket_id,
            "TicketNumber": number,
            "Title": "",
            "QueueID": 2,
            "StateID": 1,
            "PriorityID": 3,
            "TypeID": 1,
            "LockID": 1,
            "OwnerID": 2,
            "ResponsibleID": md.ROOT_USER_ID,
            "CustomerUserID": "",
            "CustomerID": "",
            "Created": int(now),
            "Changed": int(now),
            "CreateBy": 2,
            "ChangeBy": 2,
            "PendingUntil": 0,
            "ClosedAt": None,
            "ArchiveFlag": "n",
            "DynamicFields": {},
            "MergedInto": None,
            "Articles": [],
            "History": [],
        }

    def new_ticket(self, fields: dict, user_id: int) -> dict:
        """Create a ticket from already validated field IDs, as Znuny's core does: owned
        by root and unlocked, with its NewTicket and CustomerUpdate lines. The operation
        then sets the owner, lock and responsible it was given."""
        now = self.clock()
        self.tn_counter += 1
        ticket = self._blank_ticket(self.next_ticket_id, ticket_number(now, self.tn_counter), now)
        self.next_ticket_id += 1
        ticket.update(fields)
        ticket.update(OwnerID=md.ROOT_USER_ID, ResponsibleID=md.ROOT_USER_ID, LockID=1)
        ticket["CreateBy"] = ticket["ChangeBy"] = user_id
        self.tickets[ticket["TicketID"]] = ticket
        self.add_history(
            ticket,
            "NewTicket",
            f"%%{ticket['TicketNumber']}%%{md.QUEUES[ticket['QueueID']]}"
            f"%%{md.PRIORITIES[ticket['PriorityID']]}%%{md.STATE_NAMES[ticket['StateID']]}"
            f"%%{ticket['TicketID']}",
            user_id,
        )
        self.add_history(
            ticket,
            "CustomerUpdate",
            f"%%CustomerID={ticket['CustomerID']};CustomerUser={ticket['CustomerUserID']};",
            user_id,
        )
        return ticket

    def add_article(
        self,
        ticket: dict,
        article: dict,
        user_id: int,
        article_id=None,
        history: tuple[str, str] = ("AddNote", "%%Note"),
    ) -> int:
        """Add an article with its history line; an agent's article (or a customer's
        answer to one) restarts the ticket's unlock timeout, as Znuny's ArticleCreate does."""
        now = self.clock()
        if article_id is None:
            article_id = self.next_article_id
            self.next_article_id += 1
        record = dict(article)
        record.update(
            ArticleID=article_id,
            ArticleNumber=len(ticket["Articles"]) + 1,
            CreateBy=user_id,
            Created=int(now),
        )
        earlier = [a for a in ticket["Articles"] if md.SENDER_TYPES[a["SenderTypeID"]] != "system"]
        ticket["Articles"].append(record)
        self.add_history(ticket, history[0], history[1], user_id, article_id=article_id)
        sender = md.SENDER_TYPES[record["SenderTypeID"]]
        answered = bool(earlier) and md.SENDER_TYPES[earlier[-1]["SenderTypeID"]] == "agent"
        if sender == "agent" or (sender == "customer" and answered):
            self.reset_unlock_timeout(ticket, user_id)
        return article_id

    def reset_unlock_timeout(self, ticket: dict, user_id: int) -> None:
        """TicketUnlockTimeoutUpdate: a history line only when the second changes."""
        now = int(self.clock())
        if ticket.get("UnlockTimeout", 0) == now:
            return
        ticket["UnlockTimeout"] = now
        self.add_history(ticket, "Misc", "Reset of unlock time.", user_id)
        self.touch(ticket, user_id)

    def set_lock(self, ticket: dict, lock_id: int, user_id: int) -> bool:
        """TicketLockSet: a Lock/Unlock line for a real change; locking restarts the timeout."""
        if ticket["LockID"] == lock_id:
            return False
        ticket["LockID"] = lock_id
        kind = {1: "Unlock", 2: "Lock"}.get(lock_id, "Misc")
        self.add_history(ticket, kind, f"%%{md.LOCKS[lock_id]}", user_id)
        self.touch(ticket, user_id)
        if lock_id == 2:
            self.reset_unlock_timeout(ticket, user_id)
        return True

    def add_history(
        self, ticket: dict, history_type: str, name: str, user_id: int, article_id=None
    ):
        ticket["History"].append(
            {
                "HistoryID": self.next_history_id,
                "TicketID": ticket["TicketID"],
                "ArticleID": article_id,
                "Name": name,
                "HistoryType": history_type,
                "HistoryTypeID": md.HISTORY_TYPES[history_type],
                "CreateBy": user_id,
                "Created": int(self.clock()),
                "OwnerID": ticket["OwnerID"],
                "PriorityID": ticket["PriorityID"],
                "QueueID": ticket["QueueID"],
                "StateID": ticket["StateID"],
                "TypeID": ticket["TypeID"],
            }
        )
        self.next_history_id += 1

    def touch(self, ticket: dict, user_id: int):
        ticket["Changed"] = int(self.clock())
        ticket["ChangeBy"] = user_id

    def set_pending_time(self, ticket: dict, epoch: int, user_id: int) -> None:
        """TicketPendingTimeSet: its history line names the minute (zeros for none)."""
        ticket["PendingUntil"] = epoch
        shown = minute_text(epoch) if epoch else "00-00-00 00:00"
        self.add_history(ticket, "SetPendingTime", f"%%{shown}", user_id)
        self.touch(ticket, user_id)

    def set_state(self, ticket: dict, state_id: int, user_id: int) -> bool:
        """TicketStateSet; True if the state changed.  A state that is not pending
        clears the pending time (Znuny's TicketPendingTimeReset event, which writes its
        line whether or not a time was set)."""
        if ticket["StateID"] == state_id:
            return False
        old = md.STATE_NAMES[ticket["StateID"]]
        ticket["StateID"] = state_id
        self.add_history(ticket, "StateUpdate", f"%%{old}%%{md.STATE_NAMES[state_id]}%%", user_id)
        if md.state_type_name(state_id) == "closed":
            ticket["ClosedAt"] = int(self.clock())
        self.touch(ticket, user_id)
        if not md.state_type_name(state_id).startswith("pending"):
            self.set_pending_time(ticket, 0, user_id)
        return True

    def unlock_if_closing(self, ticket: dict, state_id: int, user_id: int) -> None:
        """A closed state forces the ticket unlocked, before the state is set."""
        if md.state_type_name(state_id) == "closed":
            self.set_lock(ticket, 1, user_id)

    def merge(self, ticket: dict, target: dict, user_id: int):
        """Merge ``ticket`` into ``target`` as Znuny's TicketMerge does: the articles and
        their history lines move to the target, a note stays behind, both tickets get a
        "Merged" line ``%%<old TN>%%<old id>%%<new TN>%%<new id>`` and a link, and the
        old ticket goes to state "merged"."""
        target["Articles"].extend(ticket["Articles"])
        target["Articles"].sort(key=lambda a: (a["Created"], a["ArticleID"]))
        for number, article in enumerate(target["Articles"], start=1):
            article["ArticleNumber"] = number  # Znuny counts them in time order when read
        ticket["Articles"] = []
        moved = [h for h in ticket["History"] if h["ArticleID"]]
        ticket["History"] = [h for h in ticket["History"] if not h["ArticleID"]]
        target["History"].extend(moved)
        target["History"].sort(key=lambda h: (h["Created"], h["HistoryID"]))
        old_tn, new_tn = ticket["TicketNumber"], target["TicketNumber"]
        note = {
            "From": "",
            "To": "",
            "Subject": "Ticket Merged",
            "Body": f"Merged Ticket {old_tn} to {new_tn}.",
            "ContentType": "text/plain; charset=ascii",
            "MimeType": "text/plain",
            "Charset": "ascii",
            "CommunicationChannelID": md.lookup(md.CHANNELS, name="Internal"),
            "SenderTypeID": md.lookup(md.SENDER_TYPES, name="agent"),
            "IsVisibleForCustomer": 1,
            "TimeUnit": 0,
            "Attachments": [],
        }
        self.add_article(ticket, note, user_id)
        name = f"%%{old_tn}%%{ticket['TicketID']}%%{new_tn}%%{target['TicketID']}"
        ticket["MergedInto"] = target["TicketID"]
        self.add_history(ticket, "Merged", name, user_id)
        self.add_history(target, "Merged", name, user_id)
        self.add_history(
            ticket,
            "TicketLinkAdd",
            f"%%{new_tn}%%{target['TicketID']}%%{ticket['TicketID']}",
            user_id,
        )
        self.add_history(
            target,
            "TicketLinkAdd",
            f"%%{old_tn}%%{ticket['TicketID']}%%{target['TicketID']}",
            user_id,
        )
        self.touch(target, user_id)
        self.set_state(ticket, md.state_id_by_name("merged"), user_id)
        self.set_lock(ticket, 1, user_id)
        self.touch(ticket, user_id)

    # ------------------------------------------------------------------ persistence

    def save(self):
        """Write the state file atomically (temp file + rename), if one is configured."""
        if not self.state_file:
            return
        with self.lock:
            data = {
                "version": STATE_FILE_VERSION,
                "next_ticket_id": self.next_ticket_id,
                "next_article_id": self.next_article_id,
                "next_history_id": self.next_history_id,
                "tn_counter": self.tn_counter,
                "tickets": list(self.tickets.values()),
                "sessions": self.sessions,
            }
            directory = os.path.dirname(os.path.abspath(self.state_file))
            fd, tmp = tempfile.mkstemp(prefix=".otrs_sim.", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle, ensure_ascii=False)
                os.replace(tmp, self.state_file)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

    def load(self):
        with open(self.state_file, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") != STATE_FILE_VERSION:
            raise ValueError(f"{self.state_file}: unsupported state file version")
        with self.lock:
            self.next_ticket_id = data["next_ticket_id"]
            self.next_article_id = data["next_article_id"]
            self.next_history_id = data["next_history_id"]
            self.tn_counter = data["tn_counter"]
            self.tickets = {t["TicketID"]: t for t in data["tickets"]}
            self.sessions = data.get("sessions", {})


# ---------------------------------------------------------------------- rendering


def _login(store: Store, user_id: int) -> str:
    user = store.users.get(user_id)
    return user["UserLogin"] if user else ""


def ticket_view(store: Store, ticket: dict, *, dynamic_fields=False, articles=None) -> dict:
    """The TicketGet representation (Znuny 6.5.10 types: ids are numbers here).

    ``articles`` is an already filtered list of article records or None to omit.
    ``SLA``/``Service`` are absent because they are never set in the simulator.
    """
    now = store.clock()
    state_id = ticket["StateID"]
    pending = md.state_type_name(state_id).startswith("pending")
    view = {
        "Age": max(0, int(now) - ticket["Created"]),
        "ArchiveFlag": ticket["ArchiveFlag"],
        "ChangeBy": ticket["ChangeBy"],
        "Changed": fmt_time(ticket["Changed"]),
        "CreateBy": ticket["CreateBy"],
        "Created": fmt_time(ticket["Created"]),
        "CustomerID": ticket["CustomerID"],
        "CustomerUserID": ticket["CustomerUserID"],
        "EscalationResponseTime": 0,
        "EscalationSolutionTime": 0,
        "EscalationTime": 0,
        "EscalationUpdateTime": 0,
        "GroupID": md.QUEUE_GROUP_ID,
        "Lock": md.LOCKS[ticket["LockID"]],
        "LockID": ticket["LockID"],
        "Owner": _login(store, ticket["OwnerID"]),
        "OwnerID": ticket["OwnerID"],
        "Priority": md.PRIORITIES[ticket["PriorityID"]],
        "PriorityID": ticket["PriorityID"],
        "Queue": md.QUEUES[ticket["QueueID"]],
        "QueueID": ticket["QueueID"],
        "RealTillTimeNotUsed": ticket["PendingUntil"],
        "Responsible": _login(store, ticket["ResponsibleID"]),
        "ResponsibleID": ticket["ResponsibleID"],
        "SLAID": "",
        "ServiceID": "",
        "State": md.STATE_NAMES[state_id],
        "StateID": state_id,
        "StateType": md.state_type_name(state_id),
        "TicketID": ticket["TicketID"],
        "TicketNumber": ticket["TicketNumber"],
        "TimeUnit": sum(int(a.get("TimeUnit") or 0) for a in ticket["Articles"]),
        "Title": ticket["Title"],
        "Type": md.TYPES[ticket["TypeID"]],
        "TypeID": ticket["TypeID"],
        "UnlockTimeout": ticket.get("UnlockTimeout", ticket["Created"]),
        "UntilTime": (ticket["PendingUntil"] - int(now))
        if pending and ticket["PendingUntil"]
        else 0,
    }
    if dynamic_fields:
        view["DynamicField"] = [
            {"Name": name, "Value": ticket["DynamicFields"].get(name)}
            for name in store.dynamic_field_names
        ]
    if articles is not None:
        view["Article"] = articles
    return view


def article_view(
    store: Store, ticket: dict, article: dict, *, attachments=False, attachment_contents=True
) -> dict:
    """One article as TicketGet shows it (SenderTypeID is a string, sic)."""
    view = {
        "ArticleID": article["ArticleID"],
        "ArticleNumber": article["ArticleNumber"],
        "Bcc": article.get("Bcc", ""),
        "Body": article["Body"],
        "Cc": article.get("Cc", ""),
        "ChangeBy": article["CreateBy"],
        "ChangeTime": fmt_time(article["Created"]),
        "Charset": article["Charset"],
        "CommunicationChannelID": article["CommunicationChannelID"],
        "ContentCharset": article["Charset"],
        "ContentType": article["ContentType"],
        "CreateBy": article["CreateBy"],
        "CreateTime": fmt_time(article["Created"]),
        "From": article["From"],
        "InReplyTo": "",
        "IncomingTime": article["Created"],
        "IsVisibleForCustomer": article["IsVisibleForCustomer"],
        "MessageID": "",
        "MimeType": article["MimeType"],
        "References": "",
        "ReplyTo": article.get("ReplyTo", ""),
        "SenderType": md.SENDER_TYPES[article["SenderTypeID"]],
        "SenderTypeID": str(article["SenderTypeID"]),
        "Subject": article["Subject"],
        "TicketID": ticket["TicketID"],
        "TimeUnit": article.get("TimeUnit") or 0,
        "To": article["To"],
    }
    if attachments and article.get("Attachments"):
        view["Attachment"] = [
            {
                "Content": att["Content"] if attachment_contents else "",
                "ContentAlternative": "",
                "ContentID": "",
                "ContentType": att["ContentType"],
                "FileID": index,
                "Filename": att["Filename"],
                "FilesizeRaw": att["FilesizeRaw"],
            }
            for index, att in enumerate(article["Attachments"], start=1)
        ]
    return view


def history_view(entry: dict, ticket_id: str | None = None) -> dict:
    """The attributes TicketHistoryGet lets through (its %SafeAttributes).  TicketID is
    the id as the request wrote it (Znuny echoes "03" for ticket 3); ArticleID is 0 for
    a line about no article."""
    return {
        "ArticleID": entry["ArticleID"] or 0,
        "CreateBy": entry["CreateBy"],
        "CreateTime": fmt_time(entry["Created"]),
        "HistoryType": entry["HistoryType"],
        "HistoryTypeID": entry["HistoryTypeID"],
        "Name": entry["Name"],
        "OwnerID": entry["OwnerID"],
        "PriorityID": entry["PriorityID"],
        "QueueID": entry["QueueID"],
        "StateID": entry["StateID"],
        "TicketID": str(entry["TicketID"]) if ticket_id is None else ticket_id,
        "TypeID": entry["TypeID"],
    }
