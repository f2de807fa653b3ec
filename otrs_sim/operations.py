"""The GenericInterface operations by name (reference §4-§8), and those that write no
ticket: SessionCreate/Get, TicketGet (and TicketGetList), TicketHistoryGet and
TicketSearch.

Each operation takes the merged request data (query + route + body, see
protocol.merge_params) and returns a ``common.Result``.  TicketCreate and
TicketUpdate live in ticket_writes, with their input checks in ticket_checks; what
every operation shares (Context, Result, error, Auth()) is in common.

Check order and message texts follow the Znuny sources quoted in the reference; the
caller holds ``store.lock`` while an operation runs.
"""

from __future__ import annotations

from . import masterdata as md
from .common import Context, Result, as_text, authenticate, error
from .protocol import as_list, perl_true
from .search import search
from .store import article_view, fmt_time, history_view, ticket_view
from .ticket_writes import ticket_create, ticket_update

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
        user = ctx.store.authenticate(login, as_text(data.get("Password")))
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
    login_at = int(session["Created"])
    values = {
        # The agent's preferences as a fresh Znuny 6.5.10 keeps them in the session.
        **md.AGENT_PREFERENCES,
        "ChangeTime": fmt_time(ctx.store.started),
        "CreateTime": fmt_time(ctx.store.started),
        "UserLastLogin": str(login_at),
        "UserLastLoginTimestamp": fmt_time(login_at),
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


# ---------------------------------------------------------------------- TicketGet


def _split_ids(value) -> list | None:
    """TicketID as "2,3" / "1, 2" / repeated keys; None for a wrong structure."""
    if isinstance(value, list):
        return value if value else None
    if isinstance(value, (str, int)):
        parts = str(value).split(",")
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
    # Znuny 6.5.10 checks no id's form: each is looked up as the database reads it
    # (store.get), and one that names no ticket denies the whole call.
    tickets = [store.get(i) for i in ids]
    if any(t is None for t in tickets):
        return error(f"{op}.AccessDenied", f"{op}: User does not have access to the ticket!")

    with_articles = perl_true(data.get("AllArticles"))
    sender_filter = {str(v) for v in as_list(data.get("ArticleSenderType")) if perl_true(v)}
    order_desc = as_text(data.get("ArticleOrder")).upper() == "DESC"
    try:
        limit = int(as_text(data.get("ArticleLimit")) or 0)
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
                # Znuny leaves the Article key out when no article is left to show.
                articles=articles or None,
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
                    "History": [
                        history_view(h, as_text(ticket_id)) for h in store.get(ticket_id)["History"]
                    ],
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
