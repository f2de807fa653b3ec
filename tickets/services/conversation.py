"""The bridge's side of a ticket's conversation: the notes it adds to a task's ticket (a
cancel, a failed sibling, the beneficiary leaving or changing), and the agent's closing
article it reads back.

`note_ticket` only queues a note (a TicketNote row and an event): it never waits on OTRS.
The notes job sends what is due, one TicketUpdate each through the connection's
updateTicketCall, and writes the outcome on the task's timeline. A transient failure is
tried again with backoff; a note that cannot be sent is marked failed, flags its task, and
an operator can send it again. Nothing is dropped.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from connections import templating
from connections.client import TicketClient
from connections.errors import Article, OTRSError
from connections.models import Endpoint
from connections.spec_conversation import NOTE_KINDS

from .. import limits
from ..models import ConsoleUser, Identity, Operation, Ticket, TicketNote
from ..models import ProvisioningTask as Task
from . import notifications
from .context import CONTEXT_RELATIONS, task_context
from .transitions import SYSTEM, Actor, TransitionError, _task_event

log = logging.getLogger(__name__)

# Sent by note_ticket and note_retry on commit; tickets/apps.py connects it to the job queue.
notes_wanted = Signal()

# The pauses between a note's tries; after the last one it is marked failed (about a day).
RETRY_DELAYS = tuple(timedelta(minutes=m) for m in (1, 5, 15, 60, 3 * 60, 6 * 60, 12 * 60))
NOTE_TRIES = len(RETRY_DELAYS) + 1
# How long one sending attempt holds a note.
_SENDING_LEASE = timedelta(minutes=5)
# How much of the agent's closing article a task keeps.
_EXCERPT = limits.OUTCOME_REASON


def note_ticket(*, task: Task, kind: str, actor: Actor, why: str = "") -> TicketNote | None:
    """Queue an article for the task's open ticket; None when it has no open ticket.

    `kind` names one of the connection's note templates (connections.spec_conversation
    NOTE_KINDS). A "cancelled" note also moves the ticket to the connection's cancel state.
    """
    if kind not in NOTE_KINDS:
        raise ValueError(f"unknown kind of note {kind!r}; the kinds are {', '.join(NOTE_KINDS)}")
    ticket = (
        Ticket.objects.filter(pk=task.ticket_id, is_open=True).first() if task.ticket_id else None
    )
    if ticket is None:
        return None
    with transaction.atomic():
        note = TicketNote.objects.create(
            task=task,
            kind=kind,
            why=why.replace("\x00", "")[: limits.NOTE_WHY],
            # Who it was, as the agent reads it.
            actor_label=actor.display[: limits.ACTOR_LABEL],
            next_attempt_at=timezone.now(),
        )
        _task_event(task, f'note "{NOTE_KINDS[kind].label}" queued for OTRS ticket {ticket}', actor)
        transaction.on_commit(lambda: notes_wanted.send(sender=TicketNote, note_ids=[note.pk]))
    return note


def note_siblings_failed(*, task: Task, actor: Actor, why: str) -> int:
    """Tell the open tickets of the task's request that this task failed; how many were told."""
    told = 0
    siblings = Task.objects.filter(request_id=task.request_id, ticket__is_open=True).exclude(
        pk=task.pk
    )
    for sibling in siblings.exclude(status__in=Task.TERMINAL):
        reason = f"task {task.pk} ({task.get_operation_display()}) failed: {why}"
        told += (
            note_ticket(task=sibling, kind="sibling_failed", actor=actor, why=reason) is not None
        )
    return told


def note_beneficiary_left(*, identity: Identity, endpoint: Endpoint, actor: Actor, why: str) -> int:
    """Tell the open tickets of the person's unfinished tasks on the endpoint that they left
    (all but the removal of their account); each ticket once, however often it is asked."""
    told = TicketNote.objects.filter(kind="beneficiary_left").values("task_id")
    tasks = (
        Task.objects.filter(request__beneficiary=identity, endpoint=endpoint, ticket__is_open=True)
        .exclude(status__in=Task.TERMINAL)
        .exclude(operation=Operation.REMOVE_ACCOUNT)
        .exclude(pk__in=told)
        .order_by("id")
    )
    return sum(
        note_ticket(task=task, kind="beneficiary_left", actor=actor, why=why) is not None
        for task in tasks
    )


def notes_send_due(*, limit: int = 100) -> str:
    """Send the notes that are due, oldest first (the notes job)."""
    due = TicketNote.due_ids(limit)
    outcomes = [note_send(note_id=pk) for pk in due]
    sent = outcomes.count(TicketNote.Status.SENT)
    return f"{len(due)} note(s) due, {sent} sent" if due else "no notes due"


def note_send(*, note_id: int) -> str:
    """Send one due note now: its TicketUpdate, then the outcome on the timeline.

    Claimed with a conditional UPDATE, so two workers never send one note twice; a worker
    that dies mid-call leaves it due again once its short lease has passed.
    """
    if not TicketNote.claim(note_id, _SENDING_LEASE):
        return "taken"
    note = TicketNote.objects.select_related(
        *(f"task__{name}" for name in CONTEXT_RELATIONS), "task__ticket"
    ).get(pk=note_id)
    task = note.task
    ticket = task.ticket
    assert ticket is not None  # note_ticket queues only notes of tasks with a ticket
    try:
        client = TicketClient(task.connection)
        update = client.documents.status.update
        template = update.notes[note.kind] if update else None
        state = update.cancel_state if update and note.kind == "cancelled" else ""
        rendered = _render(note, template) if template else {}
        earlier = _added_before(client, note, ticket, rendered)
        if earlier is not None:
            article_id = earlier.article_id
        else:
            # Should this worker die in the call, the next one searches before sending.
            TicketNote.objects.filter(pk=note.pk).update(maybe_added=True)
            article_id = client.update_ticket(
                ticket.ticket_id, {**rendered, "state": state}, ref=f"task:{task.pk}"
            )
    except OTRSError as exc:
        return _failed(note, exc)
    with transaction.atomic():
        TicketNote.objects.filter(pk=note.pk).update(
            status=TicketNote.Status.SENT,
            sent_at=timezone.now(),
            last_error="",
            subject=rendered["subject"][: limits.NOTE_SUBJECT],
            state=state,
            article_id=article_id,
        )
        moved = f" and set its state to {state!r}" if state else ""
        found = " (by an earlier try whose answer was lost)" if earlier is not None else ""
        _note_event(note, f'OTRS ticket {ticket}: note "{_label(note)}" added{moved}{found}')
        Task.objects.filter(pk=task.pk, flag__startswith=_FLAG).update(flag="")
    return TicketNote.Status.SENT


_FLAG = "the ticket was not told"


def _added_before(
    client: TicketClient, note: TicketNote, ticket: Ticket, rendered: dict[str, str]
) -> Article | None:
    """The article an earlier try of this note added after all, or None.

    A try whose answer was lost (a timeout, a reset, a 5xx after OTRS wrote: `maybe_added`)
    may have added the article; sending it again would add it twice. So before such a note
    is sent again, the ticket's newest articles (closingArticleCall) are read, and an
    article with the note's subject and text that no other note of the ticket claims is
    taken as this one. The note is sent again (and may appear twice) when that cannot be
    told: no closingArticleCall, the read failing, more agent articles since than it reads,
    or another sent note of the ticket whose article id is not known.
    """
    if not note.maybe_added or not rendered:
        return None
    others = TicketNote.objects.filter(task__ticket=ticket, status=TicketNote.Status.SENT).exclude(
        pk=note.pk
    )
    if others.filter(article_id__isnull=True).exists():
        return None
    try:
        articles = client.closing_articles(ticket.ticket_id, ref=f"task:{note.task_id}")
    except OTRSError as exc:
        log.warning("note %s: the ticket's articles could not be read: %s", note.pk, exc.message)
        return None
    claimed = set(others.values_list("article_id", flat=True))
    wanted = (_printable(rendered["subject"]), _printable(rendered["body"]))
    for article in articles:
        if article.article_id in claimed:
            continue
        if (_printable(article.subject), _printable(article.body)) == wanted:
            return article
    return None


def _render(note: TicketNote, template) -> dict[str, str]:
    """The note's subject and body with the task's variables and the note's own."""
    context = task_context(note.task)
    context["note"] = {"actor": note.actor_label, "why": note.why}
    where = f"TicketStatusJSON notes.{note.kind}"
    try:
        return {
            "subject": templating.render_string(
                template.subject, context, where=f"{where}.subject"
            ),
            "body": templating.render_string(template.body, context, where=f"{where}.body"),
        }
    except templating.TemplateError as exc:
        raise OTRSError(str(exc), permanent=True) from None


def _failed(note: TicketNote, exc: OTRSError) -> str:
    """Try again later with backoff, or, when the error is permanent or the tries are used
    up, mark the note failed and flag its task."""
    message = exc.message[:2000]
    # As before this try (`note` was read before it), or set when it may have reached OTRS.
    reached = {"maybe_added": note.maybe_added or exc.outcome_unknown}
    if not exc.permanent and note.attempts < NOTE_TRIES:
        delay = RETRY_DELAYS[note.attempts - 1]
        with transaction.atomic():
            TicketNote.objects.filter(pk=note.pk).update(
                last_error=message, next_attempt_at=timezone.now() + delay, **reached
            )
            _note_event(
                note,
                f'note "{_label(note)}" not added yet (try {note.attempts} of {NOTE_TRIES}), '
                f"will try again in {int(delay.total_seconds())} s: {message}",
            )
        return TicketNote.Status.PENDING
    with transaction.atomic():
        TicketNote.objects.filter(pk=note.pk).update(
            status=TicketNote.Status.FAILED, last_error=message, next_attempt_at=None, **reached
        )
        _note_event(
            note,
            f'note "{_label(note)}" could not be added to the OTRS ticket (send it again '
            f"from the request's page once the cause is fixed): {message}",
        )
        flag = f'{_FLAG}: the "{_label(note)}" note failed'
        Task.objects.filter(pk=note.task_id).update(flag=flag[:200])
        notifications.notify_soon(notifications.TASK_FLAGGED, note.task_id)
    return TicketNote.Status.FAILED


def note_retry(*, note: TicketNote, by: ConsoleUser | None = None) -> TicketNote:
    """Send a failed note again, with fresh tries (the console's and the admin's button)."""
    actor = Actor.person(by) if by is not None else SYSTEM
    with transaction.atomic():
        changed = TicketNote.objects.filter(pk=note.pk, status=TicketNote.Status.FAILED).update(
            status=TicketNote.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
        )
        if not changed:
            raise TransitionError(f"The note {note.pk} has not failed; it is not sent again.")
        _note_event(note, f'note "{_label(note)}" to be sent again', actor=actor)
        transaction.on_commit(lambda: notes_wanted.send(sender=TicketNote, note_ids=[note.pk]))
    note.refresh_from_db()
    return note


def _label(note: TicketNote) -> str:
    return NOTE_KINDS[note.kind].label


def _note_event(note: TicketNote, reason: str, *, actor: Actor | None = None) -> None:
    task = Task.objects.only("request_id", "status").get(pk=note.task_id)
    _task_event(task, reason, actor or Actor.job("notes"))


# --- the agent's reason -----------------------------------------------------------------------


def closing_article(client: TicketClient, ticket: Ticket) -> Article | None:
    """The newest article of a closing ticket that the bridge did not write itself (the
    agent's reason), or None when there is none (an agent who closed without writing) or it
    cannot be read now. Best effort: a failed read is logged as its ApiCall and never holds
    up the close."""
    try:
        articles = client.closing_articles(ticket.ticket_id, ref=f"refresh:{ticket.pk}")
    except OTRSError as exc:
        log.warning("ticket %s: its closing article could not be read: %s", ticket, exc.message)
        return None
    # The bridge's own: the article TicketCreate wrote, by the id kept from its answer (also
    # that of a ticket merged into this one, whose articles moved here), and the notes it
    # added since. A ticket adopted after a lost answer has no id kept: its first article
    # (number 1) is the create article, unless other tickets were merged into it.
    merged_in = dict(
        Ticket.objects.filter(
            connection_id=ticket.connection_id, merged_into=ticket.ticket_id
        ).values_list("pk", "create_article_id")
    )
    ours = set(
        TicketNote.objects.filter(
            Q(task__ticket=ticket) | Q(task__ticket__in=list(merged_in)), article_id__isnull=False
        ).values_list("article_id", flat=True)
    )
    ours |= {ticket.create_article_id, *merged_in.values()}
    first_is_ours = ticket.create_article_id is None and not merged_in
    for article in articles:
        if first_is_ours and article.number == 1:
            continue
        if article.article_id is None or article.article_id not in ours:
            return article
    return None


def outcome_fields(article: Article | None) -> dict[str, str]:
    """What a task keeps of the agent's closing article: its subject and an excerpt."""
    if article is None:
        return {}
    text = _printable(article.body)
    excerpt = text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"
    return {
        "outcome_subject": _printable(article.subject)[: limits.OUTCOME_SUBJECT],
        "outcome_reason": excerpt,
    }


def _printable(text: str) -> str:
    """One line of printable text: an agent's article may hold anything, NUL included,
    which PostgreSQL refuses to store."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())
