"""The simulator's own HTML pages: the ticket board at ``/`` and the agent zoom view.

A human (or a browser test) plays the OTRS agent here: every ticket has buttons that
POST to ``/_sim/tickets/<id>/state`` and come back with a 303 redirect.  Each button
has an aria-label such as "Close successful ticket 2026112610000015" so tests can
find it by accessible name.  Self-contained: inline CSS, no scripts, no assets.
"""

from __future__ import annotations

from html import escape

from . import masterdata as md
from .store import Store, fmt_time

# (state name, button text, aria-label prefix)
BUTTONS = (
    ("open", "Open", "Open ticket"),
    ("pending reminder", "Pending", "Pending reminder ticket"),
    ("closed successful", "Close successful", "Close successful ticket"),
    ("closed unsuccessful", "Close unsuccessful", "Close unsuccessful ticket"),
)

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1f2430}
header{background:#2d3a4b;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c9d1dc;font-size:13px}
main{padding:16px 24px;max-width:1280px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;
 margin-bottom:16px}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f8f9fb;font-weight:600;font-size:12px;text-transform:uppercase;color:#596273}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
td.actions,.state{white-space:nowrap}
form{display:inline;margin:0}
button{font:inherit;font-size:12px;padding:3px 8px;margin:1px;border:1px solid #b8c0cc;
 border-radius:4px;background:#fff;cursor:pointer}
button:hover{background:#eef2f7}
button.close-ok{border-color:#3c8d5a;color:#2a6b41}
button.close-fail{border-color:#b54848;color:#8f2f2f}
.state{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;
 background:#e8ecf2}
.state-new{background:#e3f0ff}.state-open{background:#fff4d6}
.state-closed{background:#ddf3e4}.state-pending{background:#efe6ff}
.state-merged,.state-removed{background:#eee}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dt{color:#596273}dd{margin:0}
.kv{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px}
.kv span b{font-weight:600}
.empty{color:#7a8494;font-style:italic}
pre{white-space:pre-wrap;background:#f8f9fb;padding:8px;border-radius:4px;margin:4px 0}
a{color:#2457a6}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def _state_badge(state_id: int) -> str:
    type_name = md.state_type_name(state_id).split()[0]
    return (
        f'<span class="state state-{escape(type_name)}">{escape(md.STATE_NAMES[state_id])}</span>'
    )


def _buttons(ticket: dict, next_url: str) -> str:
    parts = []
    for state, text, label in BUTTONS:
        css = {"closed successful": "close-ok", "closed unsuccessful": "close-fail"}.get(state, "")
        current = "true" if md.STATE_NAMES[ticket["StateID"]] == state else "false"
        parts.append(
            f'<form method="post" action="/_sim/tickets/{ticket["TicketID"]}/state">'
            f'<input type="hidden" name="state" value="{escape(state)}">'
            f'<input type="hidden" name="next" value="{escape(next_url)}">'
            f'<button type="submit" class="{css}" data-current="{current}" '
            f'aria-label="{escape(label)} {escape(ticket["TicketNumber"])}">{escape(text)}</button>'
            "</form>"
        )
    return "".join(parts)


def _kv(pairs) -> str:
    return (
        '<div class="kv">'
        + "".join(f"<span>{escape(str(k))}: <b>{escape(str(v))}</b></span>" for k, v in pairs)
        + "</div>"
    )


def index(store: Store, config: dict, base_url: str) -> str:
    """The board: tickets newest first, counters, knobs."""
    with store.lock:
        tickets = sorted(
            store.tickets.values(), key=lambda t: (t["Created"], t["TicketID"]), reverse=True
        )
        stats = store.stats()
        rows = []
        for t in tickets:
            zoom = f"/otrs/index.pl?Action=AgentTicketZoom;TicketID={t['TicketID']}"
            rows.append(
                "<tr>"
                f'<td class="num">{t["TicketID"]}</td>'
                f'<td class="num"><a href="{escape(zoom)}">{escape(t["TicketNumber"])}</a></td>'
                f"<td>{escape(t['Title'])}</td>"
                f"<td>{escape(md.QUEUES[t['QueueID']])}</td>"
                f"<td>{_state_badge(t['StateID'])}</td>"
                f'<td class="num">{fmt_time(t["Created"])}</td>'
                f'<td class="num">{fmt_time(t["Changed"])}</td>'
                f'<td class="actions">{_buttons(t, "/")}</td>'
                "</tr>"
            )
    table = (
        "<table><thead><tr><th>TicketID</th><th>TicketNumber</th><th>Title</th><th>Queue</th>"
        "<th>State</th><th>Created</th><th>Changed</th><th>Agent actions</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else '<p class="empty">No tickets yet.</p>'
    )
    calls = [(k, v) for k, v in stats["calls"].items()]
    body = (
        "<header><h1>OTRS simulator</h1>"
        f"<p>GenericInterface base URL: {escape(base_url)}</p></header><main>"
        f'<section aria-label="Tickets"><h2>Tickets ({stats["tickets"]})</h2>{table}'
        '<p><a href="/">Refresh</a></p></section>'
        f'<section aria-label="Counters"><h2>Operation calls</h2>{_kv(calls)}'
        f'<h2 style="margin-top:10px">Faults injected</h2>{_kv(stats["faults"].items())}'
        f'<h2 style="margin-top:10px">Webhooks</h2>{_kv(stats["webhooks"].items())}'
        f'<h2 style="margin-top:10px">Tickets by state</h2>'
        f"{_kv(stats['tickets_by_state'].items()) if stats['tickets_by_state'] else '<p class=empty>none</p>'}"
        "</section>"
        f'<section aria-label="Knobs"><h2>Knobs</h2>{_kv(config.items())}'
        "<p>Change with <code>POST /_sim/config</code> (JSON).</p></section>"
        "</main>"
    )
    return _page("OTRS simulator", body)


def zoom(store: Store, ticket_id, alias: str) -> str | None:
    """AgentTicketZoom stand-in; None when the ticket does not exist."""
    with store.lock:
        ticket = store.get(ticket_id)
        if ticket is None:
            return None
        owner = store.users.get(ticket["OwnerID"], {}).get("UserLogin", "")
        here = f"/{alias}/index.pl?Action=AgentTicketZoom;TicketID={ticket['TicketID']}"
        facts = [
            ("TicketID", ticket["TicketID"]),
            ("TicketNumber", ticket["TicketNumber"]),
            ("Title", ticket["Title"]),
            ("Queue", md.QUEUES[ticket["QueueID"]]),
            ("State", md.STATE_NAMES[ticket["StateID"]]),
            ("Priority", md.PRIORITIES[ticket["PriorityID"]]),
            ("Lock", md.LOCKS[ticket["LockID"]]),
            ("Owner", owner),
            ("Customer user", ticket["CustomerUserID"]),
            ("Created", fmt_time(ticket["Created"])),
            ("Changed", fmt_time(ticket["Changed"])),
        ]
        if ticket.get("MergedInto"):
            facts.append(("Merged into", ticket["MergedInto"]))
        for name, value in sorted(ticket["DynamicFields"].items()):
            facts.append((name, value))
        dl = (
            "<dl>"
            + "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
            + "</dl>"
        )
        articles = (
            "".join(
                f"<h3>#{a['ArticleNumber']} {escape(a['Subject'])}</h3>"
                f"<p>From {escape(a['From'])} to {escape(a['To'])}, {fmt_time(a['Created'])}</p>"
                f"<pre>{escape(a['Body'])}</pre>"
                for a in ticket["Articles"]
            )
            or '<p class="empty">No articles.</p>'
        )
        history = "".join(
            f'<tr><td class="num">{fmt_time(h["Created"])}</td><td>{escape(h["HistoryType"])}</td>'
            f"<td>{escape(h['Name'])}</td></tr>"
            for h in ticket["History"]
        )
        title = f"Ticket#{ticket['TicketNumber']} — {ticket['Title']}"
        body = (
            f'<header><h1>{escape(title)}</h1><p><a style="color:#c9d1dc" href="/">'
            "Back to the OTRS simulator</a></p></header><main>"
            f'<section aria-label="Ticket"><h2>Ticket</h2>{dl}'
            f"<p>{_buttons(ticket, here)}</p></section>"
            f'<section aria-label="Articles"><h2>Articles</h2>{articles}</section>'
            f'<section aria-label="History"><h2>History</h2><table><thead><tr><th>Time</th>'
            f"<th>Type</th><th>Name</th></tr></thead><tbody>{history}</tbody></table></section>"
            "</main>"
        )
    return _page(title, body)


def not_found(message: str) -> str:
    return _page(
        "Not found — OTRS simulator",
        f"<header><h1>OTRS simulator</h1></header><main><section><p>{escape(message)}</p>"
        '<p><a href="/">Back to the ticket list</a></p></section></main>',
    )
