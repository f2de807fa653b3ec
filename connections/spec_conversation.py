"""The ticket conversation in TicketStatusJSON: the call that adds an article to a ticket
(`updateTicketCall`, with `cancelState` and the `notes` templates) and the call that reads
a closing ticket's newest articles (`closingArticleCall`).

The kinds of note and their variables are declared here once: validation, the built-in
texts, the note model's choices and README derive from them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .documents import ClosingArticleSpec, NoteTemplate, UpdateSpec
from .paths import join_path
from .spec_calls import (
    TASK_SCOPE,
    Scope,
    check_templates,
    read_call,
    read_one_ticket_call,
)
from .spec_fields import Report, type_name

# What a cancel does to the ticket unless the document says otherwise.
DEFAULT_CANCEL_STATE = "closed unsuccessful"


class NoteKind(NamedTuple):
    label: str  # for a person reading the timeline
    subject: str  # the built-in texts, used when the document has none for this kind
    body: str


NOTE_KINDS: dict[str, NoteKind] = {
    "cancelled": NoteKind(
        "Cancelled",
        "Cancelled: ${task.operationLabel} for ${user.username} on ${endpoint.displayName}",
        "This access request (${task.requestNumber}, key ${correlationKey}) was cancelled "
        "in the bridge.\nCancelled by: ${note.actor}\nWhy: ${note.why|no reason given}\n\n"
        "Do not make this change. If you already made it, undo it and say so in a note.",
    ),
    "sibling_failed": NoteKind(
        "Another ticket of the request failed",
        "Another ticket of ${task.requestNumber} failed",
        "Another task of access request ${task.requestNumber} failed in the bridge: "
        "${note.why|no details}\nCheck that this change still makes sense on its own "
        "before you make it.",
    ),
    "beneficiary_left": NoteKind(
        "The beneficiary left",
        "${user.displayname} has left",
        "The person this access is for, ${user.displayname} (${user.username}), has left: "
        "${note.why|no details}\nDo not grant new access; close this ticket as "
        '"closed unsuccessful" and say why.',
    ),
    "identity_changed": NoteKind(
        "The beneficiary's details changed",
        "Details of ${user.username} changed",
        "The name or email address of the person this access is for changed: "
        "${note.why|no details}\nNow: ${user.displayname} <${user.email}>",
    ),
}

# The variables a note template may use besides the task's (connections/context.py).
NOTE_VARIABLES: dict[str, str] = {
    "note.actor": "who caused the note: a person's name, a job or an API client",
    "note.why": "the reason they gave (may be empty)",
}

NOTE_SCOPE = Scope(
    roots=TASK_SCOPE.roots - {"access_token"},
    dotted=TASK_SCOPE.dotted | frozenset(NOTE_VARIABLES),
)
# The variables of updateTicketCall itself: the rendered note goes in whole.
UPDATE_SCOPE = Scope(
    roots=frozenset({"access_token", "ticketID"}),
    dotted=frozenset({"note.subject", "note.body", "note.state"}),
)


def update_spec(report: Report, document: dict, auths: dict | None) -> UpdateSpec | None:
    raw = document.get("updateTicketCall")
    if raw is None:
        for key in ("cancelState", "notes"):
            if key in document:
                report.add(key, "needs an updateTicketCall to send it")
        return None
    where = "updateTicketCall"
    call = read_call(
        report, raw, where, scope=UPDATE_SCOPE, auths=auths, default_name="ticketUpdate"
    )
    if call is None:
        return None
    for needed in ("ticketID", "note.body"):
        if needed not in call.variables:
            report.add(where, f"must use ${{{needed}}}")
    if "note.state" not in call.variables:
        report.add(where, "must use ${note.state}, or a cancel cannot move the ticket")
    cancel_state = document.get("cancelState", DEFAULT_CANCEL_STATE)
    if not isinstance(cancel_state, str):
        report.add("cancelState", f"must be a string, not {type_name(cancel_state)}")
        cancel_state = DEFAULT_CANCEL_STATE
    return UpdateSpec(
        call=call,
        article_id_path=report.path(raw, "articleIdPath", where),
        cancel_state=cancel_state.strip(),
        notes=_notes(report, document, auths),
    )


def _notes(report: Report, document: dict, auths: dict | None) -> dict[str, NoteTemplate]:
    """The document's note templates over the built-in ones, each checked like a call's."""
    notes = {kind: NoteTemplate(shown.subject, shown.body) for kind, shown in NOTE_KINDS.items()}
    raw = report.mapping(document, "notes", "")
    for kind, template in raw.items():
        where = join_path("notes", str(kind))
        if kind not in NOTE_KINDS:
            report.add(where, f"unknown kind of note; the kinds are {', '.join(NOTE_KINDS)}")
            continue
        if not isinstance(template, dict):
            report.add(where, f"must be an object with subject and body, not {type_name(template)}")
            continue
        unknown = sorted(set(template) - {"subject", "body"})
        if unknown:
            report.add(where, f"unknown key(s) {', '.join(unknown)}; a note has subject and body")
        subject = report.string(template, "subject", where, required=True)
        body = report.string(template, "body", where, required=True)
        for key, text in (("subject", subject), ("body", body)):
            check_templates(report, text, join_path(where, key), NOTE_SCOPE, None, "")
        if subject and body:
            notes[kind] = NoteTemplate(subject, body)
    return notes


def closing_article_spec(
    report: Report, document: dict, auths: dict | None
) -> ClosingArticleSpec | None:
    raw: Any = document.get("closingArticleCall")
    if raw is None:
        return None
    where = "closingArticleCall"
    call = read_one_ticket_call(report, raw, where, auths=auths, default_name="closingArticle")
    if call is None:
        return None
    return ClosingArticleSpec(
        call=call,
        article_list_path=report.path(raw, "articleListPath", where, required=True),
        subject_path=report.path(raw, "subjectPath", where) or "Subject",
        body_path=report.path(raw, "bodyPath", where) or "Body",
        article_id_path=report.path(raw, "articleIdPath", where) or "ArticleID",
        article_number_path=report.path(raw, "articleNumberPath", where) or "ArticleNumber",
    )
