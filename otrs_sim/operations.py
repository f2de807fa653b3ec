"""The GenericInterface operations: SessionCreate/Get, TicketCreate/Get/Search/Update,
TicketHistoryGet (reference §4-§8).

Each operation takes the merged request data (query + route + body, see
protocol.merge_params) and returns a ``Result``.  Business errors are ordinary
results whose data is ``{"Error": {...}}`` - the transport sends them with HTTP 200,
exactly like Znuny.  ``Result.fault`` is the rare "operation returned Success => 0"
case that Znuny answers with HTTP 500 and a faultcode/faultstring JSON body.

Check order and message texts follow the Znuny sources quoted in the reference; the
caller holds ``store.lock`` while an operation runs.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import masterdata as md
from .protocol import perl_true
from .search import search
from .store import Store, article_view, fmt_time, history_view, parse_time, ticket_view


@dataclass
class Context:
    """What an operation needs besides its data."""

    store: Store
    session_ttl: float
    session_max_ttl: float
    remote_addr: str = ""
    user_agent: str = ""


@dataclass
class Result:
    data: dict | None = None
    fault: str | None = None
    committed: bool = False  # a write happened (drop_after_commit applies)
    state_changes: list[int] = field(default_factory=list)  # TicketIDs for the webhook


def error(code: str, message: str) -> Result:
    return Result(data={"Error": {"ErrorCode": code, "ErrorMessage": message}})


def _trim(values: dict) -> dict:
    """Znuny strips leading/trailing whitespace from every string value."""
    return {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}


def _text(value) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------- authentication


def authenticate(ctx: Context, data: dict):
    """Common.pm Auth(): a non-empty SessionID alone decides; else UserLogin+Password;
    else CustomerUserLogin+Password (no customer users exist here, so that fails)."""
    session_id = data.get("SessionID")
    if perl_true(session_id):
        if not isinstance(session_id, str):
            return None
        return ctx.store.check_session(session_id, ctx.session_ttl, ctx.session_max_ttl)
    login = data.get("UserLogin")
    if perl_true(login) and isinstance(login, str):
        return ctx.store.authenticate(login, _text(data.get("Password")))
    return None


def _credentials_missing(op: str, data: dict) -> Result | None:
    """Create/Update check presence of credentials before authenticating."""
    if not (
        perl_true(data.get("UserLogin"))
        or perl_true(data.get("CustomerUserLogin"))
        or perl_true(data.get("SessionID"))
    ):
        return error(
            f"{op}.MissingParameter",
            f"{op}: UserLogin, CustomerUserLogin or SessionID is required!",
        )
    if perl_true(data.get("UserLogin")) or perl_true(data.get("CustomerUserLogin")):
        if not perl_true(data.get("Password")):
            return error(f"{op}.MissingParameter", f"{op}: Password or SessionID is required!")
    return None


# ---------------------------------------------------------------------- sessions


def session_create(ctx: Context, data: dict) -> Result:
    if not data:
        return error("SessionCreate.MissingParameter", "SessionCreate: The request is empty!")
    if not perl_true(data.get("Password")):
        return error(
            "SessionCreate.MissingParameter", "SessionCreate: Password parameter is missing!"
        )
    user = None
    login = data.get("UserLogin")
    if perl_true(login) and isinstance(login, str):
        user = ctx.store.authenticate(login, _text(data.get("Password")))
    if user is None:
        return error("SessionCreate.AuthFail", "SessionCreate: Authorization failing!")
    session_id = ctx.store.create_session(user, ctx.remote_addr, ctx.user_agent)
    return Result(data={"SessionID": session_id})


def session_get(ctx: Context, data: dict) -> Result:
    if not data:
        return error("SessionGet.MissingParameter", "SessionGet: The request is empty!")
    session_id = data.get("SessionID")
    if not perl_true(session_id):
        return error("SessionGet.MissingParameter", "SessionGet: SessionID is missing!")
    user = None
    if isinstance(session_id, str):
        user = ctx.store.check_session(session_id, ctx.session_ttl, ctx.session_max_ttl)
    if user is None:
        return error("SessionGet.SessionInvalid", "SessionGet: SessionID is Invalid!")
    session = ctx.store.sessions[session_id]
    values = {
        "SessionSource": "GenericInterface",
        "UserEmail": user["UserEmail"],
        "UserFirstname": user["UserFirstname"],
        "UserFullname": f"{user['UserFirstname']} {user['UserLastname']}",
        "UserID": str(user["UserID"]),
        "UserLastRequest": str(int(session["Created"])),
        "UserLastname": user["UserLastname"],
        "UserLogin": user["UserLogin"],
        "UserRemoteAddr": session.get("RemoteAddr", ""),
        "UserRemoteUserAgent": session.get("UserAgent", ""),
        "UserSessionStart": str(int(session["Created"])),
        "UserType": session["UserType"],
    }
    return Result(data={"SessionData": [{"Key": k, "Value": values[k]} for k in sorted(values)]})


# ---------------------------------------------------------------------- validation helpers


def _user_id(store: Store, id_value, login) -> int | None:
    if perl_true(id_value):
        try:
            uid = int(str(id_value).strip())
        except ValueError:
            return None
        return uid if uid in store.users else None
    user = store.user_by_login(login) if perl_true(login) else None
    return user["UserID"] if user else None


def _pending_epoch(pending, now: float) -> int | None:
    """PendingTime as ``{"Diff": minutes}`` or ``{"Year","Month","Day","Hour","Minute"}``."""
    if not isinstance(pending, dict) or not pending:
        return None
    if "Diff" in pending:
        try:
            return int(now) + int(str(pending["Diff"]).strip()) * 60
        except ValueError:
            return None
    try:
        moment = datetime(
            int(pending["Year"]),
            int(pending["Month"]),
            int(pending["Day"]),
            int(pending["Hour"]),
            int(pending["Minute"]),
            tzinfo=UTC,
        )
    except (KeyError, TypeError, ValueError):
        return None
    return int(moment.timestamp())


def _check_ticket_values(
    op: str, store: Store, ticket: dict, now: float
) -> tuple[Result | None, dict]:
    """Validate the optional name/ID pairs shared by Create and Update.

    Returns (error or None, resolved IDs of the fields that were given).
    """
    resolved: dict = {}
    invalid = f"{op}.InvalidParameter"

    def pair(key, table):
        if perl_true(ticket.get(key + "ID")) or perl_true(ticket.get(key)):
            found = md.lookup(table, name=ticket.get(key), id_=ticket.get(key + "ID") or None)
            if found is None:
                return error(
                    invalid, f"{op}: Ticket->{key}ID or Ticket->{key} parameter is invalid!"
                )
            resolved[key + "ID"] = found
        return None

    if perl_true(ticket.get("CustomerUser")):
        if not md.is_email(_text(ticket["CustomerUser"])):
            return error(invalid, f"{op}: Ticket->CustomerUser parameter is invalid!"), resolved
    checks = [("Queue", md.QUEUES), ("Lock", md.LOCKS), ("Type", md.TYPES)]
    for key, table in checks:
        problem = pair(key, table)
        if problem:
            return problem, resolved
    for key in ("Service", "SLA"):  # a fresh system has neither services nor SLAs
        if perl_true(ticket.get(key + "ID")) or perl_true(ticket.get(key)):
            return error(
                invalid, f"{op}: Ticket->{key}ID or Ticket->{key} parameter is invalid!"
            ), resolved
    for key, table in (("State", md.STATE_NAMES), ("Priority", md.PRIORITIES)):
        problem = pair(key, table)
        if problem:
            return problem, resolved
    for key in ("Owner", "Responsible"):
        if perl_true(ticket.get(key + "ID")) or perl_true(ticket.get(key)):
            uid = _user_id(store, ticket.get(key + "ID"), ticket.get(key))
            if uid is None:
                return error(
                    invalid, f"{op}: Ticket->{key}ID or Ticket->{key} parameter is invalid!"
                ), resolved
            resolved[key + "ID"] = uid
    if perl_true(ticket.get("PendingTime")):
        epoch = _pending_epoch(ticket["PendingTime"], now)
        if epoch is None:
            return error(invalid, f"{op}: Ticket->PendingTime parameter is invalid!"), resolved
        resolved["PendingUntil"] = epoch
    return None, resolved


_MIME_RE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


def _check_article(op: str, article: dict, *, default_to: str, default_from: str):
    """_CheckArticle(): returns (error Result or None, normalised article record)."""
    missing = f"{op}.MissingParameter"
    invalid = f"{op}.InvalidParameter"
    for needed in ("Subject", "Body"):
        if not perl_true(article.get(needed)):
            return error(missing, f"{op}: Article->{needed} parameter is missing!"), None

    channel_id = md.lookup(
        md.CHANNELS,
        name=article.get("CommunicationChannel") or "Internal",
        id_=article.get("CommunicationChannelID") or None,
    )
    if channel_id is None:
        return error(
            invalid,
            f"{op}: Article->CommunicationChannel or Article->CommunicationChannelID parameter"
            " is invalid or not supported!",
        ), None
    sender_id = md.lookup(
        md.SENDER_TYPES,
        name=article.get("SenderType") or "agent",
        id_=article.get("SenderTypeID") or None,
    )
    if sender_id is None:
        return error(
            invalid, f"{op}: Article->SenderTypeID or Ticket->SenderType parameter is invalid!"
        ), None
    if perl_true(article.get("ArticleSend")) and not md.is_email(_text(article.get("To"))):
        return error(
            "TicketCreate.InvalidParameter",
            "TicketCreate: Article->To parameter must be a valid email address when"
            " Article->ArticleSend is set!",
        ), None

    content_type = _text(article.get("ContentType"))
    mime_type = _text(article.get("MimeType"))
    charset = _text(article.get("Charset"))
    if not content_type and not mime_type and not charset:
        return error(
            missing,
            f"{op}: Article->ContentType or Ticket->MimeType and Article->Charset parameters"
            " are required!",
        ), None
    if mime_type and not charset:
        return error(missing, f"{op}: Article->Charset is required!"), None
    if charset and not mime_type:
        return error(missing, f"{op}: Article->MimeType is required!"), None
    if mime_type:
        mime_type = mime_type.lower()
        if not _MIME_RE.match(mime_type):
            return error(invalid, f"{op}: Article->MimeType is invalid!"), None
    if charset:
        charset = charset.lower()
        if charset not in md.KNOWN_CHARSETS:
            return error(invalid, f"{op}: Article->Charset is invalid!"), None
    if content_type:
        content_type = " ".join(content_type.splitlines()).lower()
        found = re.search(r"charset\s*=\s*[\"']?([^\s\"';]+)", content_type)
        ct_charset = found.group(1) if found else ""
        ct_mime = re.match(r"^(\w+/[\w.+-]+)", content_type)
        if ct_charset not in md.KNOWN_CHARSETS or not ct_mime:
            return error(invalid, f"{op}: Article->ContentType is invalid!"), None
        mime_type, charset = ct_mime.group(1), ct_charset
    else:
        content_type = f"{mime_type}; charset={charset}"

    time_unit = article.get("TimeUnit")
    if perl_true(time_unit):
        try:
            time_unit = float(str(time_unit).replace(",", "."))
            time_unit = int(time_unit) if time_unit.is_integer() else time_unit
        except ValueError:
            return error(invalid, f"{op}: Article->TimeUnit parameter is invalid!"), None
    else:
        time_unit = 0
    if perl_true(article.get("NoAgentNotify")) and _text(article.get("NoAgentNotify")) != "1":
        return error(invalid, f"{op}: Article->NoAgent parameter is invalid!"), None

    visible = article.get("IsVisibleForCustomer")
    record = {
        "From": _text(article.get("From")) or default_from,
        "To": _text(article.get("To")) or default_to,
        "Cc": _text(article.get("Cc")),
        "Bcc": _text(article.get("Bcc")),
        "ReplyTo": _text(article.get("ReplyTo")),
        "Subject": _text(article["Subject"]),
        "Body": _text(article["Body"]),
        "ContentType": content_type,
        "MimeType": mime_type,
        "Charset": charset,
        "CommunicationChannelID": channel_id,
        "SenderTypeID": sender_id,
        "IsVisibleForCustomer": 1 if visible is None else (1 if perl_true(visible) else 0),
        "TimeUnit": time_unit,
        "Attachments": [],
    }
    return None, record


def _as_items(value) -> list:
    return value if isinstance(value, list) else [value]


def _check_dynamic_fields(op: str, store: Store, value) -> tuple[Result | None, dict]:
    """Validate DynamicField items; a non-object item is a 500 fault (Znuny quirk)."""
    spaces = "  " if op == "TicketCreate" else " "  # TicketCreate's text has two (sic)
    values: dict = {}
    for item in _as_items(value):
        if not isinstance(item, dict) or not item:
            return Result(fault=f"{op}: Ticket->DynamicField parameter is invalid!"), values
        item = _trim(item)
        for needed in ("Name", "Value"):
            v = item.get(needed)
            if v is None or not (
                isinstance(v, (str, int, float, list)) and not isinstance(v, bool)
            ):
                return error(
                    f"{op}.MissingParameter",
                    f"{op}: DynamicField->{needed}{spaces}parameter is missing!",
                ), values
        name = _text(item["Name"])
        if name not in store.dynamic_field_names:
            return error(
                f"{op}.InvalidParameter", f"{op}: DynamicField->Name parameter is invalid!"
            ), values
        field_value = item["Value"]
        if name in md.DATETIME_DYNAMIC_FIELDS:
            if not isinstance(field_value, str) or (
                field_value and parse_time(field_value) is None
            ):
                return error(
                    f"{op}.InvalidParameter", f"{op}: DynamicField->Value parameter is invalid!"
                ), values
        values[name] = field_value if isinstance(field_value, list) else _text(field_value)
    return None, values


def _check_attachments(op: str, value) -> tuple[Result | None, list]:
    spaces = "  " if op == "TicketCreate" else " "
    attachments = []
    for item in _as_items(value):
        if not isinstance(item, dict) or not item:
            return Result(fault=f"{op}: Ticket->Attachment parameter is invalid!"), attachments
        item = _trim(item)
        for needed in ("Content", "ContentType", "Filename"):
            if not (isinstance(item.get(needed), str) and item.get(needed)):
                return error(
                    f"{op}.MissingParameter",
                    f"{op}: Attachment->{needed}{spaces}parameter is missing!",
                ), attachments
        try:
            size = len(base64.b64decode(item["Content"], validate=False))
        except (binascii.Error, ValueError):
            size = 0
        if not _MIME_RE.match(item["ContentType"].split(";")[0].strip().lower()):
            return error(
                f"{op}.InvalidParameter", f"{op}: Attachment->ContentType is invalid!"
            ), attachments
        attachments.append(
            {
                "Content": item["Content"],
                "ContentType": item["ContentType"],
                "Filename": item["Filename"],
                "FilesizeRaw": size,
            }
        )
    return None, attachments


# ---------------------------------------------------------------------- TicketCreate


def ticket_create(ctx: Context, data: dict) -> Result:
    op = "TicketCreate"
    store = ctx.store
    if not data:
        return error(f"{op}.EmptyRequest", f"{op}: The request data is invalid!")
    problem = _credentials_missing(op, data)
    if problem:
        return problem
    user = authenticate(ctx, data)
    if user is None:
        return error(f"{op}.AuthFail", f"{op}: User could not be authenticated!")
    for needed in ("Ticket", "Article"):
        if not isinstance(data.get(needed), dict) or not data[needed]:
            return error(
                f"{op}.MissingParameter", f"{op}: {needed} parameter is missing or not valid!"
            )
    for optional in ("DynamicField", "Attachment"):
        value = data.get(optional)
        if value is not None and not (isinstance(value, (dict, list)) and value):
            return error(
                f"{op}.MissingParameter", f"{op}: {optional} parameter is missing or not valid!"
            )

    ticket = _trim(data["Ticket"])
    now = store.clock()
    missing = f"{op}.MissingParameter"
    if not perl_true(ticket.get("Title")):
        return error(missing, f"{op}: Ticket->Title parameter is missing!")
    if not perl_true(ticket.get("CustomerUser")):
        return error(missing, f"{op}: Ticket->CustomerUser parameter is missing!")
    if not md.is_email(_text(ticket["CustomerUser"])):
        return error(f"{op}.InvalidParameter", f"{op}: Ticket->CustomerUser parameter is invalid!")
    for key in ("Queue", "State", "Priority"):
        if not (perl_true(ticket.get(key + "ID")) or perl_true(ticket.get(key))):
            return error(missing, f"{op}: Ticket->{key}ID or Ticket->{key} parameter is required!")
    problem, resolved = _check_ticket_values(op, store, ticket, now)
    if problem:
        return problem

    queue_name = md.QUEUES[resolved["QueueID"]]
    problem, article = _check_article(
        op,
        _trim(data["Article"]),
        default_to=queue_name,
        default_from=_text(ticket["CustomerUser"]),
    )
    if problem:
        return problem
    df_values: dict = {}
    if data.get("DynamicField") is not None:
        problem, df_values = _check_dynamic_fields(op, store, data["DynamicField"])
        if problem:
            return problem
    if data.get("Attachment") is not None:
        problem, article["Attachments"] = _check_attachments(op, data["Attachment"])
        if problem:
            return problem

    state_id = resolved["StateID"]
    fields = {
        "Title": _text(ticket["Title"]),
        "QueueID": resolved["QueueID"],
        "StateID": state_id,
        "PriorityID": resolved["PriorityID"],
        "TypeID": resolved.get("TypeID", 1),
        "OwnerID": resolved.get("OwnerID", user["UserID"]),
        "ResponsibleID": resolved.get("ResponsibleID", md.ROOT_USER_ID),
        "CustomerUserID": _text(ticket["CustomerUser"]),
        "CustomerID": _text(ticket.get("CustomerID")),
        "LockID": 1,
    }
    if "LockID" in resolved:
        fields["LockID"] = resolved["LockID"]
    elif "OwnerID" in resolved:
        fields["LockID"] = 2  # an explicit owner locks the ticket unless Lock was given
    if md.state_type_name(state_id) == "closed":
        fields["LockID"] = 1
    if md.state_type_name(state_id).startswith("pending") and "PendingUntil" in resolved:
        fields["PendingUntil"] = resolved["PendingUntil"]
    if md.state_type_name(state_id) == "closed":
        fields["ClosedAt"] = int(now)

    created = store.new_ticket(fields, user["UserID"])
    for name, value in df_values.items():
        created["DynamicFields"][name] = value
        store.add_history(
            created,
            "TicketDynamicFieldUpdate",
            f"%%FieldName%%{name}%%Value%%{value}%%OldValue%%",
            user["UserID"],
        )
    article_id = store.add_article(created, article, user["UserID"])
    store.save()
    return Result(
        data={
            "ArticleID": article_id,
            "TicketID": str(created["TicketID"]),
            "TicketNumber": created["TicketNumber"],
        },
        committed=True,
    )


# ---------------------------------------------------------------------- TicketGet


def _split_ids(value) -> list | None:
    """TicketID as "2,3" / "1, 2" / repeated keys; None for a wrong structure."""
    if isinstance(value, list):
        return value if value else None
    if isinstance(value, (str, int)):
        parts = re.split(r"\s*,\s*", str(value))
        while parts and parts[-1] == "":
            parts.pop()  # Perl's split drops trailing empty fields
        return parts
    return None


def ticket_get(ctx: Context, data: dict) -> Result:
    op = "TicketGet"
    store = ctx.store
    user = authenticate(ctx, data)
    if user is None:
        return error(f"{op}.AuthFail", f"{op}: Authorization failing!")
    if not perl_true(data.get("TicketID")):
        return error(f"{op}.MissingParameter", f"{op}: TicketID parameter is missing!")
    ids = _split_ids(data["TicketID"])
    if ids is None:
        return error(f"{op}.WrongStructure", f"{op}: Structure for TicketID is not correct!")
    if any(not re.fullmatch(r"[1-9]\d*", _text(i)) for i in ids):
        return error(f"{op}.WrongStructure", f"{op}: Invalid ticket ID parameter(s) found!")
    tickets = [store.get(i) for i in ids]
    if any(t is None for t in tickets):
        return error(f"{op}.AccessDenied", f"{op}: User does not have access to the ticket!")

    with_articles = perl_true(data.get("AllArticles"))
    sender_filter = {str(v) for v in _as_items(data.get("ArticleSenderType")) if perl_true(v)}
    order_desc = _text(data.get("ArticleOrder")).upper() == "DESC"
    try:
        limit = int(_text(data.get("ArticleLimit")) or 0)
    except ValueError:
        limit = 0
    attachments = perl_true(data.get("Attachments"))
    contents = True  # GetAttachmentContents defaults to 1
    if "GetAttachmentContents" in data:
        contents = perl_true(data["GetAttachmentContents"])

    result = []
    for ticket in tickets:
        articles = None
        if with_articles:
            records = [
                a
                for a in ticket["Articles"]
                if not sender_filter or md.SENDER_TYPES[a["SenderTypeID"]] in sender_filter
            ]
            if order_desc:
                records = list(reversed(records))
            if limit > 0:
                records = records[:limit]
            articles = [
                article_view(
                    store, ticket, a, attachments=attachments, attachment_contents=contents
                )
                for a in records
            ]
        result.append(
            ticket_view(
                store,
                ticket,
                dynamic_fields=perl_true(data.get("DynamicFields")),
                articles=articles,
            )
        )
    return Result(data={"Ticket": result})


def ticket_history_get(ctx: Context, data: dict) -> Result:
    """Minimal TicketHistoryGet: ``{"TicketHistory":[{"TicketID":"2","History":[...]}]}``.

    History lines carry Znuny's %SafeAttributes.  A merged ticket has a line with
    HistoryType "Merged" and Name ``%%<old TN>%%<old id>%%<new TN>%%<new id>``.
    """
    op = "TicketHistoryGet"
    store = ctx.store
    user = authenticate(ctx, data)
    if user is None:
        return error(f"{op}.AuthFail", f"{op}: Authorization failing!")
    if not perl_true(data.get("TicketID")):
        return error(f"{op}.MissingParameter", f"{op}: TicketID parameter is missing!")
    value = data["TicketID"]
    ids = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else None
    if not ids:
        return error(f"{op}.WrongStructure", f"{op}: Structure for TicketID is not correct!")
    for ticket_id in ids:
        if store.get(ticket_id) is None:
            return error(
                f"{op}.AccessDenied", f"{op}: User does not have access to the ticket {ticket_id}!"
            )
    return Result(
        data={
            "TicketHistory": [
                {
                    "TicketID": ticket_id,
                    "History": [history_view(h) for h in store.get(ticket_id)["History"]],
                }
                for ticket_id in ids
            ]
        }
    )


# ---------------------------------------------------------------------- TicketSearch


def ticket_search(ctx: Context, data: dict) -> Result:
    user = authenticate(ctx, data)
    if user is None:
        return error("TicketSearch.AuthFail", "TicketSearch: Authorization failing!")
    ids = search(ctx.store, data)
    return Result(data={"TicketID": ids} if ids else {})


# ---------------------------------------------------------------------- TicketUpdate


def ticket_update(ctx: Context, data: dict) -> Result:
    op = "TicketUpdate"
    store = ctx.store
    if not data:
        return error(f"{op}.EmptyRequest", f"{op}: The request data is invalid!")
    if not perl_true(data.get("TicketID")) and not perl_true(data.get("TicketNumber")):
        return error(f"{op}.MissingParameter", f"{op}: TicketID or TicketNumber is required!")
    problem = _credentials_missing(op, data)
    if problem:
        return problem
    user = authenticate(ctx, data)
    if user is None:
        return error(f"{op}.AuthFail", f"{op}: User could not be authenticated!")
    if perl_true(data.get("TicketNumber")):
        ticket = store.find_by_number(data["TicketNumber"])
    else:
        ticket = store.get(data["TicketID"]) if isinstance(data["TicketID"], (str, int)) else None
    if ticket is None:
        return error(f"{op}.AccessDenied", f"{op}: User does not have access to the ticket!")
    if data.get("Ticket") is not None and not (isinstance(data["Ticket"], dict) and data["Ticket"]):
        return error(f"{op}.InvalidParameter", f"{op}: Ticket parameter is not valid!")
    for optional in ("DynamicField", "Attachment"):
        value = data.get(optional)
        if value is not None and not (isinstance(value, (dict, list)) and value):
            return error(
                f"{op}.MissingParameter", f"{op}: {optional} parameter is missing or not valid!"
            )

    now = store.clock()
    changes = _trim(data.get("Ticket") or {})
    problem, resolved = _check_ticket_values(op, store, changes, now)
    if problem:
        return problem

    article = None
    if data.get("Article") is not None:
        if not (isinstance(data["Article"], dict) and data["Article"]):
            return error(f"{op}.InvalidParameter", f"{op}: Article parameter is not valid!")
        agent = f"{user['UserFirstname']} {user['UserLastname']}"
        problem, article = _check_article(
            op, _trim(data["Article"]), default_to="", default_from=agent
        )
        if problem:
            return problem
    df_values: dict = {}
    if data.get("DynamicField") is not None:
        problem, df_values = _check_dynamic_fields(op, store, data["DynamicField"])
        if problem:
            return problem
    if data.get("Attachment") is not None:
        if article is None:
            return error(
                f"{op}.MissingParameter", f"{op}: To create an attachment an article is needed!"
            )
        problem, article["Attachments"] = _check_attachments(op, data["Attachment"])
        if problem:
            return problem

    uid = user["UserID"]
    state_changed = _apply_ticket_changes(store, ticket, changes, resolved, uid)
    for name, value in df_values.items():
        old = ticket["DynamicFields"].get(name)
        if old != value:
            ticket["DynamicFields"][name] = value
            store.add_history(
                ticket,
                "TicketDynamicFieldUpdate",
                f"%%FieldName%%{name}%%Value%%{value}%%OldValue%%{'' if old is None else old}",
                uid,
            )
            store.touch(ticket, uid)
    body = {"TicketID": str(ticket["TicketID"]), "TicketNumber": ticket["TicketNumber"]}
    if article is not None:
        body["ArticleID"] = store.add_article(ticket, article, uid)
        store.touch(ticket, uid)
    store.save()
    return Result(
        data=body, committed=True, state_changes=[ticket["TicketID"]] if state_changed else []
    )


def _apply_ticket_changes(
    store: Store, ticket: dict, changes: dict, resolved: dict, uid: int
) -> bool:
    """Apply validated Ticket fields; history line + Changed for each real change.

    Returns True when the state changed (the webhook trigger).
    """
    title = changes.get("Title")
    if isinstance(title, str) and title != "" and title != ticket["Title"]:
        store.add_history(ticket, "TitleUpdate", f"%%{ticket['Title']}%%{title}", uid)
        ticket["Title"] = title
        store.touch(ticket, uid)
    if "QueueID" in resolved and resolved["QueueID"] != ticket["QueueID"]:
        old = ticket["QueueID"]
        ticket["QueueID"] = resolved["QueueID"]
        store.add_history(
            ticket,
            "Move",
            f"%%{md.QUEUES[ticket['QueueID']]}%%{ticket['QueueID']}%%{md.QUEUES[old]}%%{old}",
            uid,
        )
        store.touch(ticket, uid)
    if "LockID" in resolved and resolved["LockID"] != ticket["LockID"]:
        ticket["LockID"] = resolved["LockID"]
        kind = "Unlock" if resolved["LockID"] == 1 else "Lock"
        store.add_history(ticket, kind, f"%%{md.LOCKS[ticket['LockID']]}", uid)
        store.touch(ticket, uid)
    if "TypeID" in resolved and resolved["TypeID"] != ticket["TypeID"]:
        ticket["TypeID"] = resolved["TypeID"]
        store.add_history(ticket, "TypeUpdate", f"%%{md.TYPES[ticket['TypeID']]}", uid)
        store.touch(ticket, uid)
    customer = changes.get("CustomerUser")
    customer_id = changes.get("CustomerID")
    if perl_true(customer) or perl_true(customer_id):
        new_user = _text(customer) or ticket["CustomerUserID"]
        new_id = _text(customer_id) if perl_true(customer_id) else ticket["CustomerID"]
        if (new_user, new_id) != (ticket["CustomerUserID"], ticket["CustomerID"]):
            ticket["CustomerUserID"], ticket["CustomerID"] = new_user, new_id
            store.add_history(
                ticket, "CustomerUpdate", f"%%CustomerID={new_id};CustomerUser={new_user};", uid
            )
            store.touch(ticket, uid)
    if "PriorityID" in resolved and resolved["PriorityID"] != ticket["PriorityID"]:
        old = ticket["PriorityID"]
        ticket["PriorityID"] = resolved["PriorityID"]
        store.add_history(
            ticket,
            "PriorityUpdate",
            f"%%{md.PRIORITIES[old]}%%{old}%%{md.PRIORITIES[ticket['PriorityID']]}%%{ticket['PriorityID']}",
            uid,
        )
        store.touch(ticket, uid)
    owner_changed = False
    for key, kind in (("OwnerID", "OwnerUpdate"), ("ResponsibleID", "ResponsibleUpdate")):
        if key in resolved and resolved[key] != ticket[key]:
            ticket[key] = resolved[key]
            login = store.users[ticket[key]]["UserLogin"]
            store.add_history(ticket, kind, f"%%{login}%%{ticket[key]}", uid)
            store.touch(ticket, uid)
            owner_changed = owner_changed or key == "OwnerID"
    state_changed = False
    if "StateID" in resolved:
        state_changed = store.set_state(ticket, resolved["StateID"], uid)
        if not owner_changed:
            store.unlock_if_closed(ticket, uid)
    if "PendingUntil" in resolved and md.state_type_name(ticket["StateID"]).startswith("pending"):
        if ticket["PendingUntil"] != resolved["PendingUntil"]:
            ticket["PendingUntil"] = resolved["PendingUntil"]
            store.add_history(
                ticket, "SetPendingTime", f"%%{fmt_time(resolved['PendingUntil'])}", uid
            )
            store.touch(ticket, uid)
    return state_changed


OPERATION_FUNCTIONS = {
    "SessionCreate": session_create,
    "SessionGet": session_get,
    "TicketCreate": ticket_create,
    "TicketGet": ticket_get,
    "TicketGetList": ticket_get,
    "TicketHistoryGet": ticket_history_get,
    "TicketSearch": ticket_search,
    "TicketUpdate": ticket_update,
}


def run(operation: str, ctx: Context, data: dict) -> Result:
    return OPERATION_FUNCTIONS[operation](ctx, data)
