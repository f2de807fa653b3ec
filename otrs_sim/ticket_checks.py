"""Input checks of TicketCreate and TicketUpdate (Znuny's Operation/Ticket/Common.pm and
the _Check*() methods of both operations): the name/ID pairs of a ticket, its pending
time, the article, dynamic fields and attachments.

Each check returns ``(error Result or None, normalised value)``; check order and
message texts follow the Znuny sources quoted in the reference.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

from . import masterdata as md
from .common import Result, as_text, error, trim
from .protocol import as_list, perl_true
from .store import Store, parse_time


def check_optional_parts(op: str, data: dict) -> Result | None:
    """DynamicField and Attachment may be left out, but not given empty."""
    for optional in ("DynamicField", "Attachment"):
        value = data.get(optional)
        if value is not None and not (isinstance(value, (dict, list)) and value):
            return error(
                f"{op}.MissingParameter", f"{op}: {optional} parameter is missing or not valid!"
            )
    return None


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


def check_ticket_values(
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
        if not md.is_email(as_text(ticket["CustomerUser"])):
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


def check_article(op: str, article: dict, *, default_to: str, default_from: str):
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
    if perl_true(article.get("ArticleSend")) and not md.is_email(as_text(article.get("To"))):
        return error(
            "TicketCreate.InvalidParameter",
            "TicketCreate: Article->To parameter must be a valid email address when"
            " Article->ArticleSend is set!",
        ), None

    content_type = as_text(article.get("ContentType"))
    mime_type = as_text(article.get("MimeType"))
    charset = as_text(article.get("Charset"))
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
    if perl_true(article.get("NoAgentNotify")) and as_text(article.get("NoAgentNotify")) != "1":
        return error(invalid, f"{op}: Article->NoAgent parameter is invalid!"), None

    visible = article.get("IsVisibleForCustomer")
    record = {
        "From": as_text(article.get("From")) or default_from,
        "To": as_text(article.get("To")) or default_to,
        "Cc": as_text(article.get("Cc")),
        "Bcc": as_text(article.get("Bcc")),
        "ReplyTo": as_text(article.get("ReplyTo")),
        "Subject": as_text(article["Subject"]),
        "Body": as_text(article["Body"]),
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


def check_dynamic_fields(op: str, store: Store, value) -> tuple[Result | None, dict]:
    """Validate DynamicField items (None: none given); a non-object item is a 500 fault
    (Znuny quirk)."""
    spaces = "  " if op == "TicketCreate" else " "  # TicketCreate's text has two (sic)
    values: dict = {}
    for item in as_list(value):
        if not isinstance(item, dict) or not item:
            return Result(fault=f"{op}: Ticket->DynamicField parameter is invalid!"), values
        item = trim(item)
        for needed in ("Name", "Value"):
            v = item.get(needed)
            if v is None or not (
                isinstance(v, (str, int, float, list)) and not isinstance(v, bool)
            ):
                return error(
                    f"{op}.MissingParameter",
                    f"{op}: DynamicField->{needed}{spaces}parameter is missing!",
                ), values
        name = as_text(item["Name"])
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
        values[name] = field_value if isinstance(field_value, list) else as_text(field_value)
    return None, values


def check_attachments(op: str, value) -> tuple[Result | None, list]:
    """Validate Attachment items (None: none given); a non-object item is a 500 fault."""
    spaces = "  " if op == "TicketCreate" else " "
    attachments = []
    for item in as_list(value):
        if not isinstance(item, dict) or not item:
            return Result(fault=f"{op}: Ticket->Attachment parameter is invalid!"), attachments
        item = trim(item)
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
