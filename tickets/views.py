"""Console pages and buttons.

Views stay small: reads come from selectors, every change goes through services (which
check permissions again and refuse wrong transitions), and each button answers with a
message and a redirect (POST, then redirect, then GET), so a reload never repeats it.

Live pages (overview, board, request detail) render their changing part as a partial in
templates/tickets/htmx/. The full page includes the same partial, and htmx polls it: the
partial carries a fingerprint of what it shows, and while that stays the same, the next
poll waits twice as long (2 s up to 30 s). A request detail stops polling once the
request is finished.
"""

from __future__ import annotations

import hashlib
import re
from functools import partial

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from . import jobs, selectors, services
from .forms import CancelForm, DecisionForm, RequestFilterForm, SubmitRequestForm, filter_text
from .models import (
    APPROVE_PERMISSION,
    OPERATE_PERMISSION,
    SUBMIT_PERMISSION,
    UNCONFIRMED_LABEL,
    VIEW_ALL_PERMISSION,
    AccessRequest,
    CallbackDelivery,
    ConsoleUser,
    ProvisioningTask,
    TicketNote,
    parse_id,
)
from .validators import username_problem

PAGE_SIZE = 50
LIVE_FASTEST, LIVE_SLOWEST = 2, 30

# What changes in a partial without its data changing: relative ages ("5 s ago") and the
# per-render CSRF mask. The fingerprint ignores them.
_VOLATILE = re.compile(r"(<time\b[^>]*>)[^<]*(</time>)|(csrfmiddlewaretoken\" value=\")[^\"]*")


def fingerprint(html: str) -> str:
    stable = _VOLATILE.sub(lambda m: "".join(g or "" for g in m.groups()), html)
    return hashlib.sha256(stable.encode()).hexdigest()[:16]


def next_interval(params, fp: str) -> int:
    """Poll again in 2 s after a change; double the wait while nothing changes, up to 30 s."""
    if params.get("fp") != fp:
        return LIVE_FASTEST
    try:
        previous = int(params.get("every", LIVE_FASTEST))
    except ValueError:
        previous = LIVE_FASTEST
    return min(max(previous, LIVE_FASTEST) * 2, LIVE_SLOWEST)


def render_live(
    request: HttpRequest, *, page: str, partial: str, context: dict, polling: bool = True
) -> HttpResponse:
    """Render a live page, or only its partial when htmx asks for it."""
    body = render_to_string(partial, context, request)
    fp = fingerprint(body)
    interval = next_interval(request.GET, fp)
    params = request.GET.copy()
    params["fp"], params["every"] = fp, str(interval)
    live = {
        "body": mark_safe(body),  # rendered by our own template, escaped there
        "fp": fp,
        "interval": interval,
        "url": f"{request.path}?{params.urlencode()}" if polling else "",
    }
    if request.headers.get("HX-Request") and not request.headers.get("HX-Boosted"):
        return render(request, "tickets/htmx/live.html", {"live": live})
    return render(request, page, {**context, "live": live})


class ConsoleRequest(HttpRequest):
    """A request to a login_required view, whose user is therefore signed in."""

    user: ConsoleUser


def _back(request: HttpRequest, default: str) -> HttpResponse:
    """Redirect to the page the button was on (a local `next`), or to `default`."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


def _apply_and_report(request: HttpRequest, action, success) -> bool:
    """Run a service call; say what happened. A refused transition becomes an error message.
    `success` is the message, or a function of the call's result that words it."""
    try:
        result = action()
    except services.TransitionError as exc:
        messages.error(request, str(exc))
        return False
    messages.success(request, success(result) if callable(success) else success)
    return True


# --- pages ------------------------------------------------------------------------------------


@login_required
@require_GET
def overview(request: ConsoleRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_ALL_PERMISSION):
        context = {"mine": selectors.my_requests(request.user)}
        return render(request, "tickets/overview_requester.html", context)
    return render_live(
        request,
        page="tickets/overview.html",
        partial="tickets/htmx/overview.html",
        context={"overview": selectors.overview()},
    )


@login_required
@require_GET
@permission_required(VIEW_ALL_PERMISSION, raise_exception=True)
def board(request: HttpRequest) -> HttpResponse:
    connection = filter_text(request.GET, "connection")
    columns = selectors.board(connection=connection)
    return render_live(
        request,
        page="tickets/board.html",
        partial="tickets/htmx/board.html",
        context={
            "columns": columns,
            "connection": connection,
            # The bulk retry shows only when a card on the board can be ticked.
            "retryable": any(task.retryable for column in columns for task in column.cards),
        },
    )


@login_required
@require_GET
def request_list(request: ConsoleRequest) -> HttpResponse:
    form = RequestFilterForm(request.GET)
    requests = selectors.request_list(request.user, form.filters())
    page = selectors.request_page(requests, request.GET.get("page"), PAGE_SIZE)
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "tickets/request_list.html",
        {
            "form": form,
            "page": page,
            "failed": selectors.failed_task_ids(page.object_list),
            "query": params.urlencode(),
            "filtered": bool(form.filters()),
        },
    )


@login_required
@require_GET
def request_detail(request: ConsoleRequest, pk: int) -> HttpResponse:
    access_request = get_object_or_404(
        selectors.visible_requests(request.user).select_related(
            "beneficiary", "endpoint", "requester", "api_client", "decided_by"
        ),
        pk=pk,
    )
    tasks, timeline = selectors.request_detail(access_request)
    notes, deliveries = selectors.request_outboxes(access_request, tasks)
    for task in tasks:
        task.unsent_notes = notes.get(task.pk, [])  # type: ignore[attr-defined]
    finished = access_request.is_terminal
    refusal = (
        services.governance.decision_refusal(access_request, request.user)
        if access_request.awaits_decision
        else ""
    )
    return render_live(
        request,
        page="tickets/request_detail.html",
        partial="tickets/htmx/request_detail.html",
        context={
            "access_request": access_request,
            "tasks": tasks,
            "timeline": timeline,
            "finished": finished,
            "refusal": refusal,
            "step": services.governance.approval_step(access_request)
            if access_request.awaits_decision
            else "",
            "deliveries": deliveries,
            # The reason field of the cancel dialogs (no id: there is one per task).
            "cancel_form": CancelForm(auto_id=False),
        },
        polling=not finished or bool(notes),
    )


@login_required
@require_GET
def identity_list(request: ConsoleRequest) -> HttpResponse:
    q = filter_text(request.GET, "q")
    identities = selectors.visible_identities(request.user)
    if q:
        identities = identities.filter(
            Q(username__icontains=q) | Q(first_name__icontains=q) | Q(last_name__icontains=q)
        )
    page = Paginator(identities.order_by("username"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "tickets/identity_list.html", {"page": page, "q": q})


@login_required
@require_GET
def identity_detail(request: ConsoleRequest, username: str) -> HttpResponse:
    if username_problem(username):  # no Identity has such a name (nor can a NUL be queried)
        raise Http404("No such person.")
    identity = get_object_or_404(selectors.visible_identities(request.user), username=username)
    requests = selectors.for_request_table(
        selectors.visible_requests(request.user).filter(beneficiary=identity)
    ).order_by("-created_at", "-id")[:20]
    return render(
        request,
        "tickets/identity.html",
        {
            "identity": identity,
            "accounts": selectors.identity_access(identity, request.user),
            "requests": requests,
            "unconfirmed_label": UNCONFIRMED_LABEL,
        },
    )


@login_required
@require_GET
@permission_required(APPROVE_PERMISSION, raise_exception=True)
def inbox(request: ConsoleRequest) -> HttpResponse:
    """Requests waiting for a decision: first those this user may decide, then the others,
    each with the rule that leaves it to someone else."""
    pending = selectors.approval_inbox()
    governance = services.governance
    mine = set(
        governance.decidable(request.user)
        .filter(pk__in=[r.pk for r in pending])
        .values_list("pk", flat=True)
    )
    memo: dict = {}
    for r in pending:
        r.step = governance.approval_step(r, memo=memo)  # type: ignore[attr-defined]
        r.refusal = (  # type: ignore[attr-defined]
            "" if r.pk in mine else governance.decision_refusal(r, request.user, memo=memo)
        )
    return render(
        request,
        "tickets/inbox.html",
        {
            "yours": [r for r in pending if r.pk in mine],
            "others": [r for r in pending if r.pk not in mine],
        },
    )


@login_required
@permission_required(SUBMIT_PERMISSION, raise_exception=True)
def submit(request: ConsoleRequest) -> HttpResponse:
    if request.method != "POST":
        initial = {
            "beneficiary": request.GET.get("beneficiary") or request.user.get_username(),
            "endpoint": request.GET.get("endpoint"),
        }
        return render(request, "tickets/submit.html", {"form": SubmitRequestForm(initial=initial)})
    form = SubmitRequestForm(request.POST)
    if form.is_valid():
        try:
            access_request = services.request_submit(
                requester=request.user, **form.service_arguments()
            )
        except services.RequestInvalid as exc:
            form.add_service_errors(exc.fields)
        else:
            messages.success(
                request, f"{access_request.number} was submitted. It now waits for an approver."
            )
            return redirect(access_request)
    return render(request, "tickets/submit.html", {"form": form}, status=400)


@login_required
@require_GET
@permission_required(SUBMIT_PERMISSION, raise_exception=True)
def submit_entitlements(request: HttpRequest) -> HttpResponse:
    """The entitlement checkboxes of the chosen endpoint (htmx swaps them in)."""
    form = SubmitRequestForm(initial={"endpoint": request.GET.get("endpoint")})
    return render(request, "tickets/htmx/entitlements.html", {"form": form})


# --- buttons ----------------------------------------------------------------------------------


@login_required
@require_POST
def request_decide(request: ConsoleRequest, pk: int, decision: str) -> HttpResponse:
    """Approve or reject. The page shows the buttons only to who may decide; the service
    refuses everyone else with the rule that stops them (a 403 page that names it)."""
    access_request = get_object_or_404(AccessRequest, pk=pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        # The comment is part of the decision: without it, nothing is decided.
        verb = "approved" if decision == "approve" else "rejected"
        for message in form.error_lines():
            messages.error(request, f"{access_request} was not {verb}: {message}")
        return _back(request, reverse("tickets:inbox"))
    comment = form.cleaned_data["comment"]
    if decision == "approve":
        _apply_and_report(
            request,
            lambda: services.request_approve(
                access_request=access_request, by=request.user, comment=comment
            ),
            lambda decided: (
                f"First approval of {decided} recorded; it now waits for a second approver."
                if decided.status == AccessRequest.Status.PENDING_APPROVAL
                else f"{decided} approved. Its tasks are queued for the service desk."
            ),
        )
    else:
        _apply_and_report(
            request,
            lambda: services.request_reject(
                access_request=access_request, by=request.user, comment=comment
            ),
            f"{access_request} rejected.",
        )
    return _back(request, reverse("tickets:inbox"))


@login_required
@require_POST
def request_cancel(request: ConsoleRequest, pk: int) -> HttpResponse:
    access_request = get_object_or_404(selectors.visible_requests(request.user), pk=pk)
    reason = _cancel_reason(request, f"{access_request} was not cancelled")
    if reason is not None:
        _apply_and_report(
            request,
            lambda: services.request_cancel(
                access_request=access_request, by=request.user, reason=reason
            ),
            f"{access_request} cancelled.",
        )
    return _back(request, access_request.get_absolute_url())


def _cancel_reason(request: ConsoleRequest, refused: str) -> str | None:
    """The reason a cancel dialog gave; None (and the errors shown) when it is refused."""
    form = CancelForm(request.POST)
    if form.is_valid():
        return form.cleaned_data["reason"]
    for message in form.error_lines():
        messages.error(request, f"{refused}: {message}")
    return None


# What the per-task buttons do: the service to call and what to say afterwards.
TASK_ACTIONS = {
    "retry": (services.task_retry, "is queued again"),
    "cancel": (services.task_cancel, "cancelled"),
}


@login_required
@require_POST
@permission_required(OPERATE_PERMISSION, raise_exception=True)
def note_retry(request: ConsoleRequest, pk: int) -> HttpResponse:
    """Send a failed note to its ticket again (the button beside it on a request's page)."""
    note = get_object_or_404(TicketNote.objects.select_related("task__request"), pk=pk)
    _apply_and_report(
        request,
        lambda: services.note_retry(note=note, by=request.user),
        f"The note to the ticket of task {note.task_id} is queued again.",
    )
    return _back(request, note.task.request.get_absolute_url())


@login_required
@require_POST
@permission_required(OPERATE_PERMISSION, raise_exception=True)
def delivery_redeliver(request: ConsoleRequest, pk: int) -> HttpResponse:
    """Deliver a callback to its API client again (a request's page)."""
    delivery = get_object_or_404(CallbackDelivery.objects.select_related("request"), pk=pk)
    _apply_and_report(
        request,
        lambda: services.delivery_redeliver(delivery=delivery, by=request.user),
        f"The callback of {delivery.request} is queued again.",
    )
    return _back(request, delivery.request.get_absolute_url())


@login_required
@require_POST
@permission_required(OPERATE_PERMISSION, raise_exception=True)
def task_action(request: ConsoleRequest, pk: int, action: str) -> HttpResponse:
    """Retry or cancel one task (the buttons on a request's page)."""
    task = get_object_or_404(ProvisioningTask.objects.select_related("request"), pk=pk)
    service, done = TASK_ACTIONS[action]
    if action == "cancel":
        why = _cancel_reason(request, f"Task {task.pk} of {task.request} was not cancelled")
        if why is None:
            return _back(request, task.request.get_absolute_url())
        service = partial(services.task_cancel, why=why)
    _apply_and_report(
        request,
        lambda: service(task=task, by=request.user),
        f"Task {task.pk} of {task.request} {done}.",
    )
    return _back(request, task.request.get_absolute_url())


@login_required
@require_POST
@permission_required(OPERATE_PERMISSION, raise_exception=True)
def tasks_retry(request: ConsoleRequest) -> HttpResponse:
    """Retry the selected failed tasks: task ids from the board, request ids from the list."""
    task_ids = [i for i in map(parse_id, request.POST.getlist("task")) if i is not None]
    request_ids = [i for i in map(parse_id, request.POST.getlist("request")) if i is not None]
    done, refused = services.tasks_retry(
        tasks=ProvisioningTask.objects.filter(
            Q(pk__in=task_ids)
            | Q(request_id__in=request_ids, status=ProvisioningTask.Status.FAILED)
        ),
        by=request.user,
    )
    if done:
        messages.success(request, f"{len(done)} task{'s' if len(done) != 1 else ''} queued again.")
    for reason in refused:
        messages.error(request, reason)
    if not done and not refused:
        messages.info(request, "Nothing selected: tick the tasks to retry first.")
    return _back(request, reverse("tickets:board"))


# The jobs the "run now" buttons may queue, by the name used in the URL.
JOBS = {
    "provision": (jobs.provision_due_tasks, "Provisioning run queued"),
    "poll": (jobs.poll_open_tickets, "Poll of open tickets queued"),
}


@login_required
@require_POST
@permission_required(OPERATE_PERMISSION, raise_exception=True)
def job_run(request: HttpRequest, job: str) -> HttpResponse:
    """Queue a job on the worker cluster rather than running it inside the web request."""
    if job not in JOBS:
        raise PermissionDenied
    func, said = JOBS[job]
    jobs.enqueue(func, None, "button", task_name=f"{job}-button")
    messages.success(request, f"{said}. Its result appears under “Jobs” when it has run.")
    return _back(request, reverse("tickets:overview"))
