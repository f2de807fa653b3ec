"""The operations that write a ticket: TicketCreate and TicketUpdate (reference §5, §8).

Their input checks live in ticket_checks; here the checked values become a ticket, its
article and dynamic fields, and the history lines and ``Changed`` time Znuny records
for each real change.  The caller holds ``store.lock``.
"""

from __future__ import annotations

from . import masterdata as md
from .common import Context, Result, as_text, authenticate_for_write, error, trim
from .protocol import perl_true
from .store import Store
from .ticket_checks import (
    check_article,
    check_attachments,
    check_dynamic_fields,
    check_optional_parts,
    check_ticket_values,
)


def ticket_create(ctx: Context, data: dict) -> Result:
    op = "TicketCreate"
    store = ctx.store
    if not data:
        return error(f"{op}.EmptyRequest", f"{op}: The request data is invalid!")
    problem, user = authenticate_for_write(ctx, op, data)
    if problem:
        return problem
    for needed in ("Ticket", "Article"):
        if not isinstance(data.get(needed), dict) or not data[needed]:
            return error(
                f"{op}.MissingParameter", f"{op}: {needed} parameter is missing or not valid!"
            )
    problem = check_optional_parts(op, data)
    if problem:
        return problem

    ticket = trim(data["Ticket"])
    now = store.clock()
    missing = f"{op}.MissingParameter"
    if not perl_true(ticket.get("Title")):
        return error(missing, f"{op}: Ticket->Title parameter is missing!")
    if not perl_true(ticket.get("CustomerUser")):
        return error(missing, f"{op}: Ticket->CustomerUser parameter is missing!")
    if not md.is_email(as_text(ticket["CustomerUser"])):
        return error(f"{op}.InvalidParameter", f"{op}: Ticket->CustomerUser parameter is invalid!")
    for key in ("Queue", "State", "Priority"):
        if not (perl_true(ticket.get(key + "ID")) or perl_true(ticket.get(key))):
            return error(missing, f"{op}: Ticket->{key}ID or Ticket->{key} parameter is required!")
    problem, resolved = check_ticket_values(op, store, ticket, now)
    if problem:
        return problem

    queue_name = md.QUEUES[resolved["QueueID"]]
    problem, article = check_article(
        op,
        trim(data["Article"]),
        default_to=queue_name,
        default_from=as_text(ticket["CustomerUser"]),
    )
    if problem:
        return problem
    problem, df_values = check_dynamic_fields(op, store, data.get("DynamicField"))
    if problem:
        return problem
    problem, article["Attachments"] = check_attachments(op, data.get("Attachment"))
    if problem:
        return problem

    state_id = resolved["StateID"]
    fields = {
        "Title": as_text(ticket["Title"]),
        "QueueID": resolved["QueueID"],
        "StateID": state_id,
        "PriorityID": resolved["PriorityID"],
        "TypeID": resolved.get("TypeID", 1),
        "CustomerUserID": as_text(ticket["CustomerUser"]),
        "CustomerID": as_text(ticket.get("CustomerID")),
    }
    state_type = md.state_type_name(state_id)
    if state_type == "closed":
        fields["ClosedAt"] = int(now)

    # In the order of Znuny's TicketCreate operation, each step with its history line.
    uid = user["UserID"]
    created = store.new_ticket(fields, uid)
    if "LockID" in resolved:
        store.set_lock(created, resolved["LockID"], uid)
    if state_type.startswith("pending") and "PendingUntil" in resolved:
        store.set_pending_time(created, resolved["PendingUntil"], uid)
    for name, value in df_values.items():
        _set_dynamic_field(store, created, name, value, uid)
    article_id = store.add_article(
        created, article, uid, history=("NewTicket", "%%GenericInterface Create")
    )
    owner = resolved.get("OwnerID")
    _set_user(store, created, "OwnerID", owner or uid, uid)
    if owner and "LockID" not in resolved:
        store.set_lock(created, 2, uid)  # an explicit owner locks the new ticket, even a closed one
    if "ResponsibleID" in resolved:
        _set_user(store, created, "ResponsibleID", resolved["ResponsibleID"], uid)
    store.save()
    return Result(
        data={
            "ArticleID": article_id,
            "TicketID": str(created["TicketID"]),
            "TicketNumber": created["TicketNumber"],
        },
        committed=True,
    )


def ticket_update(ctx: Context, data: dict) -> Result:
    op = "TicketUpdate"
    store = ctx.store
    if not data:
        return error(f"{op}.EmptyRequest", f"{op}: The request data is invalid!")
    if not perl_true(data.get("TicketID")) and not perl_true(data.get("TicketNumber")):
        return error(f"{op}.MissingParameter", f"{op}: TicketID or TicketNumber is required!")
    problem, user = authenticate_for_write(ctx, op, data)
    if problem:
        return problem
    if perl_true(data.get("TicketNumber")):
        ticket = store.find_by_number(data["TicketNumber"])
    else:
        ticket = store.get(data["TicketID"]) if isinstance(data["TicketID"], (str, int)) else None
    if ticket is None:
        return error(f"{op}.AccessDenied", f"{op}: User does not have access to the ticket!")
    if data.get("Ticket") is not None and not (isinstance(data["Ticket"], dict) and data["Ticket"]):
        return error(f"{op}.InvalidParameter", f"{op}: Ticket parameter is not valid!")
    problem = check_optional_parts(op, data)
    if problem:
        return problem

    now = store.clock()
    changes = trim(data.get("Ticket") or {})
    problem, resolved = check_ticket_values(op, store, changes, now)
    if problem:
        return problem

    article = None
    if data.get("Article") is not None:
        if not (isinstance(data["Article"], dict) and data["Article"]):
            return error(f"{op}.InvalidParameter", f"{op}: Article parameter is not valid!")
        agent = f"{user['UserFirstname']} {user['UserLastname']}"
        problem, article = check_article(
            op, trim(data["Article"]), default_to="", default_from=agent
        )
        if problem:
            return problem
    problem, df_values = check_dynamic_fields(op, store, data.get("DynamicField"))
    if problem:
        return problem
    if data.get("Attachment") is not None:
        if article is None:
            return error(
                f"{op}.MissingParameter", f"{op}: To create an attachment an article is needed!"
            )
        problem, article["Attachments"] = check_attachments(op, data["Attachment"])
        if problem:
            return problem

    uid = user["UserID"]
    problem, state_changed = _apply_ticket_changes(store, ticket, changes, resolved, uid)
    if problem:
        store.save()  # what came before the refused step stays, as in Znuny
        return problem
    body = {"TicketID": str(ticket["TicketID"]), "TicketNumber": ticket["TicketNumber"]}
    if not perl_true(data.get("TicketNumber")):
        body["TicketID"] = as_text(data["TicketID"])  # echoed as written ("03")
    if article is not None:
        body["ArticleID"] = store.add_article(
            ticket, article, uid, history=("AddNote", "%%GenericInterface Note")
        )
        store.touch(ticket, uid)
    for name, value in df_values.items():
        if _set_dynamic_field(store, ticket, name, value, uid):
            store.touch(ticket, uid)
    store.save()
    return Result(
        data=body, committed=True, state_changes=[ticket["TicketID"]] if state_changed else []
    )


def _apply_ticket_changes(
    store: Store, ticket: dict, changes: dict, resolved: dict, uid: int
) -> tuple[Result | None, bool]:
    """Apply validated Ticket fields in the order of Znuny's TicketUpdate operation; a
    history line and ``Changed`` for each real change.

    Returns (the error that stopped it, or None; whether the state changed, which
    triggers the webhook). A pending state without a pending time stops the update
    there: what came before it stays written, as in Znuny.
    """
    title = changes.get("Title")
    if isinstance(title, str) and title != "":
        _set_field(
            store, ticket, "Title", title, uid, "TitleUpdate", f"%%{ticket['Title']}%%{title}"
        )
    if "QueueID" in resolved:
        old, new = ticket["QueueID"], resolved["QueueID"]
        note = f"%%{md.QUEUES[new]}%%{new}%%{md.QUEUES[old]}%%{old}"
        if _set_field(store, ticket, "QueueID", new, uid, "Move", note):
            store.set_lock(ticket, 1, md.ROOT_USER_ID)  # ForceUnlockOnMove, as the system
    if "LockID" in resolved:
        store.set_lock(ticket, resolved["LockID"], uid)
    if "TypeID" in resolved:
        new = resolved["TypeID"]
        _set_field(store, ticket, "TypeID", new, uid, "TypeUpdate", f"%%{md.TYPES[new]}")
    state_changed = False
    if "StateID" in resolved:
        state_id = resolved["StateID"]
        store.unlock_if_closing(ticket, state_id, uid)
        if md.state_type_name(state_id).startswith("pending"):
            if "PendingUntil" not in resolved:
                return error(
                    "TicketUpdate.MissingParameter",
                    "Can't set a ticket on a pending state without pendig time!",  # sic
                ), False
            store.set_pending_time(ticket, resolved["PendingUntil"], uid)
        state_changed = store.set_state(ticket, state_id, uid)
    customer = changes.get("CustomerUser")
    customer_id = changes.get("CustomerID")
    if perl_true(customer) or perl_true(customer_id):
        new_user = as_text(customer) or ticket["CustomerUserID"]
        new_id = as_text(customer_id) if perl_true(customer_id) else ticket["CustomerID"]
        if (new_user, new_id) != (ticket["CustomerUserID"], ticket["CustomerID"]):
            ticket["CustomerUserID"], ticket["CustomerID"] = new_user, new_id
            store.add_history(
                ticket, "CustomerUpdate", f"%%CustomerID={new_id};CustomerUser={new_user};", uid
            )
            store.touch(ticket, uid)
    if "PriorityID" in resolved:
        old, new = ticket["PriorityID"], resolved["PriorityID"]
        note = f"%%{md.PRIORITIES[old]}%%{old}%%{md.PRIORITIES[new]}%%{new}"
        _set_field(store, ticket, "PriorityID", new, uid, "PriorityUpdate", note)
    for key in ("OwnerID", "ResponsibleID"):
        if key in resolved:
            _set_user(store, ticket, key, resolved[key], uid)
    return None, state_changed


def _set_user(store: Store, ticket: dict, key: str, user_id: int, uid: int) -> bool:
    """Set the owner or responsible, with Znuny's ``%%<login>%%<id>`` line."""
    kind = "OwnerUpdate" if key == "OwnerID" else "ResponsibleUpdate"
    note = f"%%{store.users[user_id]['UserLogin']}%%{user_id}"
    return _set_field(store, ticket, key, user_id, uid, kind, note)


def _set_field(store: Store, ticket: dict, key: str, value, uid: int, kind: str, note: str) -> bool:
    """Set one ticket field; only a new value writes the history line and ``Changed``."""
    if ticket[key] == value:
        return False
    ticket[key] = value
    store.add_history(ticket, kind, note, uid)
    store.touch(ticket, uid)
    return True


def _set_dynamic_field(store: Store, ticket: dict, name: str, value, uid: int) -> bool:
    """Set one dynamic field with its history line; False when it already had the value.

    A new ticket has no values yet, so its history lines carry an empty OldValue.
    """
    old = ticket["DynamicFields"].get(name)
    if old == value:
        return False
    ticket["DynamicFields"][name] = value
    store.add_history(
        ticket,
        "TicketDynamicFieldUpdate",
        f"%%FieldName%%{name}%%Value%%{value}%%OldValue%%{'' if old is None else old}",
        uid,
    )
    return True
