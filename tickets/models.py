"""The work: identities, access requests, provisioning tasks, the ticket mapping, the
timeline, and the access inventory that completed tasks leave behind.

State changes happen only in tickets.services; these models hold the data, and beside each
status enum every fact about its states: label, badge tone, place on the board and in the
overview, the terminal and due sets and the moves allowed. Everything else derives from them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple, TypeAlias

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models
from django.db.models import Exists, F, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from connections.models import Connection, Endpoint
from connections.spec_conversation import NOTE_KINDS

from . import limits

# A person signed in to the console. AUTH_USER_MODEL is left at Django's User, and the
# console's views are login_required, so what reaches the services is never AnonymousUser.
ConsoleUser: TypeAlias = User

# The largest id a BigAutoField / BigIntegerField can hold.
MAX_DB_INT = 2**63 - 1


def person_name(user: ConsoleUser | None) -> str:
    """A console user's name as messages say it: "Alice Archer", else the username; ""
    for nobody."""
    return (user.get_full_name() or user.get_username()) if user is not None else ""


def person_display(user: ConsoleUser) -> str:
    """A console user as pages show people: "Alice Archer (alice)", or the username alone."""
    full = user.get_full_name()
    return f"{full} ({user.get_username()})" if full else user.get_username()


def parse_id(value: object) -> int | None:
    """A positive database id from a URL, a form or a JSON body; None for anything else.

    Refuses what int() would choke on or the database would overflow with: "²" passes
    str.isdigit(), and 2**64 fits no bigint column.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value <= MAX_DB_INT else None
    text = value.strip() if isinstance(value, str) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        return None
    number = int(text)
    return number if 0 < number <= MAX_DB_INT else None


class Identity(models.Model):
    """The person whose access changes."""

    username = models.CharField(max_length=limits.USERNAME, unique=True)
    first_name = models.CharField(max_length=limits.PERSON_NAME, blank=True)
    last_name = models.CharField(max_length=limits.PERSON_NAME, blank=True)
    email = models.EmailField(max_length=limits.EMAIL, blank=True)
    manager = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reports"
    )
    properties = models.JSONField(
        default=dict, blank=True, help_text="Custom attributes, usable in templates."
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="identity",
        verbose_name="console user",
        help_text=(
            "The console user this person signs in as. Set by itself when a user has the same "
            "username or email address; nobody approves a request for their own access."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["username"]
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        full = f"{self.first_name} {self.last_name}".strip()
        return f"{full} ({self.username})" if full else self.username

    @property
    def display_name(self) -> str:
        """How a message names the person: "Ada Lovelace", or the username without a name."""
        return f"{self.first_name} {self.last_name}".strip() or self.username

    def get_absolute_url(self) -> str:
        return reverse("tickets:identity", args=[self.username])


class Operation(models.TextChoices):
    CREATE_ACCOUNT = "create_account", "Create account"
    REMOVE_ACCOUNT = "remove_account", "Remove account"
    ADD_ACCESS = "add_access", "Add access"
    REMOVE_ACCESS = "remove_access", "Remove access"


ACCESS_OPERATIONS = (Operation.ADD_ACCESS, Operation.REMOVE_ACCESS)


class ApiClient(models.Model):
    """An upstream system allowed to use the JSON API. The token is stored hashed."""

    name = models.SlugField(max_length=100, unique=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=12, editable=False)
    trusted = models.BooleanField(
        default=False, help_text="Approval already happened upstream: its requests arrive approved."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Where the bridge POSTs this client's request documents when their status changes,
    # signed with the secret (encrypted at rest, shown once when it is made).
    callback_url = models.CharField(max_length=limits.CALLBACK_URL, blank=True)
    callback_secret_encrypted = models.TextField(blank=True, editable=False)
    scim_endpoints = models.ManyToManyField(
        Endpoint,
        blank=True,
        related_name="scim_clients",
        verbose_name="SCIM endpoints",
        help_text="The endpoints this client may provision over SCIM, each at /scim/v2/ and "
        "the endpoint's name. A SCIM client must be trusted.",
    )

    def __str__(self) -> str:
        return self.name


# The permissions the console and the services check (declared in AccessRequest.Meta, except
# Django's own "add" permission).
SUBMIT_PERMISSION = "tickets.add_accessrequest"
APPROVE_PERMISSION = "tickets.approve_accessrequest"
OPERATE_PERMISSION = "tickets.operate_tasks"
VIEW_ALL_PERMISSION = "tickets.view_all_requests"


class AccessRequest(models.Model):
    class Status(models.TextChoices):
        PENDING_APPROVAL = "pending_approval", "Pending approval"
        APPROVED = "approved", "Approved"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    # The badge tone of each state (static/css/app.css colours each tone).
    TONES: dict[str, str] = {
        Status.PENDING_APPROVAL: "warn",
        Status.APPROVED: "info",
        Status.IN_PROGRESS: "info",
        Status.COMPLETED: "ok",
        Status.FAILED: "bad",
        Status.REJECTED: "bad",
        Status.CANCELLED: "muted",
    }
    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.REJECTED, Status.CANCELLED)
    # The moves tickets.services allows; any other one is a TransitionError. A failed
    # request goes back in progress when one of its tasks is retried.
    TRANSITIONS: dict[str, set[str]] = {
        Status.PENDING_APPROVAL: {Status.APPROVED, Status.REJECTED, Status.CANCELLED},
        Status.APPROVED: {Status.IN_PROGRESS, Status.COMPLETED, Status.FAILED, Status.CANCELLED},
        Status.IN_PROGRESS: {Status.COMPLETED, Status.FAILED, Status.CANCELLED},
        Status.FAILED: {Status.IN_PROGRESS},
        # A ticket of it was reopened in OTRS after completion.
        Status.COMPLETED: {Status.IN_PROGRESS},
        Status.REJECTED: set(),
        Status.CANCELLED: set(),
    }

    number = models.CharField(max_length=20, unique=True, null=True, blank=True, editable=False)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="access_requests",
    )
    api_client = models.ForeignKey(
        ApiClient, on_delete=models.PROTECT, null=True, blank=True, related_name="requests"
    )
    beneficiary = models.ForeignKey(Identity, on_delete=models.PROTECT, related_name="requests")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="requests")
    operation = models.CharField(max_length=limits.OPERATION, choices=Operation.choices)
    account_name = models.CharField(max_length=limits.ACCOUNT_NAME, blank=True)
    entitlements = models.JSONField(default=list, blank=True)
    justification = models.TextField(max_length=limits.JUSTIFICATION, blank=True)

    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING_APPROVAL, db_index=True
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decisions",
    )
    decided_by_label = models.CharField(
        max_length=limits.UPSTREAM_APPROVER,
        blank=True,
        help_text="Upstream approver, for trusted API clients.",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # The first of two approvals, on an application that requires two.
    first_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="first_approvals",
    )
    first_approved_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(max_length=limits.DECISION_COMMENT, blank=True)
    result_summary = models.CharField(max_length=200, blank=True)

    idempotency_key = models.CharField(max_length=limits.IDEMPOTENCY_KEY, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["api_client", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="one_request_per_idempotency_key",
            )
        ]
        indexes = [models.Index(fields=["status", "-created_at"], name="request_status_recent")]
        permissions = [
            ("approve_accessrequest", "Can approve or reject access requests"),
            ("operate_tasks", "Can retry and cancel tasks and run jobs"),
            ("view_all_requests", "Can see every request, not only their own"),
        ]

    def __str__(self) -> str:
        return self.number or f"request {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("tickets:request_detail", args=[self.pk])

    @property
    def requester_label(self) -> str:
        """Who filed it, as an id: a username, or "api:<client>" (the tickets' `requestor`)."""
        if self.requester is not None:  # no query when requester_id is None
            return self.requester.get_username()
        return f"api:{self.api_client.name}" if self.api_client is not None else "-"

    @property
    def requester_display(self) -> str:
        """Who filed it, as the console shows it: "Alice Archer (alice)", "API client iga"."""
        if self.requester is not None:
            return person_display(self.requester)
        return f"API client {self.api_client.name}" if self.api_client is not None else "—"

    @property
    def decider_display(self) -> str:
        """Who decided it: a person as requester_display, or the upstream approver."""
        if self.decided_by is not None:
            return person_display(self.decided_by)
        return self.decided_by_label or "—"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def awaits_decision(self) -> bool:
        """Waiting for an approver (and, until then, cancellable by its own requester)."""
        return self.status == self.Status.PENDING_APPROVAL


class Ticket(models.Model):
    """The mapping between a task and the OTRS ticket that carries it."""

    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="tickets")
    ticket_id = models.BigIntegerField()
    ticket_number = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=100, blank=True)
    state_type = models.CharField(max_length=100, blank=True)
    is_open = models.BooleanField(default=True)
    otrs_changed_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    merged_into = models.BigIntegerField(null=True, blank=True)
    # A closed ticket is still followed (change search, webhook) until then: an agent may
    # reopen it (Connection.reopen_watch_days).
    watch_until = models.DateTimeField(null=True, blank=True)
    # The article TicketCreate wrote: the bridge's own text, never the agent's reason.
    create_article_id = models.BigIntegerField(null=True, blank=True)
    agent_url = models.URLField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "ticket_id"], name="one_mapping_per_ticket"
            )
        ]
        indexes = [
            models.Index(
                fields=["connection", "is_open", "last_polled_at"], name="ticket_open_by_poll"
            )
        ]

    def __str__(self) -> str:
        return self.ticket_number or f"#{self.ticket_id}"


class TaskDisplay(NamedTuple):
    """How the console shows one task state."""

    tone: str  # of its badge; static/css/app.css colours each tone
    column: str  # a ProvisioningTask.Column of the board
    group: str  # a ProvisioningTask.Group of the overview


class ProvisioningTask(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        CLAIMED = "claimed", "Claimed"
        RETRY_WAIT = "retry_wait", "Waiting to retry"
        TICKET_OPEN = "ticket_open", "Ticket open"
        TICKET_PENDING = "ticket_pending", "Ticket pending"
        COMPLETED = "completed", "Completed"
        DISCONTINUED = "discontinued", "Discontinued"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Column(models.TextChoices):
        """The board's columns, left to right."""

        QUEUED = "queued", "Queued"
        OPEN = "open", "Ticket open"
        PENDING = "pending", "Ticket pending"
        FAILED = "failed", "Failed"
        CLOSED = "closed", "Closed"

    class Group(models.TextChoices):
        """The overview's counts, left to right: the states as an operator reads them."""

        QUEUED = "queued", "Queued"
        OPEN = "open", "Open"
        PENDING = "pending", "Pending"
        FAILED = "failed", "Failed"
        COMPLETED = "completed", "Completed"
        STOPPED = "stopped", "Stopped"

    # Adding a state: a row here, its moves in TRANSITIONS, and the sets below it belongs to.
    DISPLAY: dict[str, TaskDisplay] = {
        Status.NEW: TaskDisplay("neutral", Column.QUEUED, Group.QUEUED),
        Status.CLAIMED: TaskDisplay("info", Column.QUEUED, Group.QUEUED),
        Status.RETRY_WAIT: TaskDisplay("warn", Column.QUEUED, Group.QUEUED),
        Status.TICKET_OPEN: TaskDisplay("info", Column.OPEN, Group.OPEN),
        Status.TICKET_PENDING: TaskDisplay("pending", Column.PENDING, Group.PENDING),
        Status.COMPLETED: TaskDisplay("ok", Column.CLOSED, Group.COMPLETED),
        Status.DISCONTINUED: TaskDisplay("muted", Column.CLOSED, Group.STOPPED),
        Status.FAILED: TaskDisplay("bad", Column.FAILED, Group.FAILED),
        Status.CANCELLED: TaskDisplay("muted", Column.CLOSED, Group.STOPPED),
    }
    TONES: dict[str, str] = {status: shown.tone for status, shown in DISPLAY.items()}

    TERMINAL = (Status.COMPLETED, Status.DISCONTINUED, Status.FAILED, Status.CANCELLED)
    # What the provisioning job picks up (once next_attempt_at has passed).
    DUE = (Status.NEW, Status.RETRY_WAIT)
    # The states an error put the task in: the console shows that error, and an operator
    # may send the task back to the queue with fresh tries.
    RETRYABLE = (Status.FAILED, Status.RETRY_WAIT)
    # The moves tickets.services allows; any other one is a TransitionError. A claimed task
    # is claimed again when its lease expired and another worker takes it over.
    TRANSITIONS: dict[str, set[str]] = {
        Status.NEW: {Status.CLAIMED, Status.CANCELLED},
        Status.RETRY_WAIT: {Status.CLAIMED, Status.NEW, Status.CANCELLED},
        Status.CLAIMED: {
            Status.CLAIMED,
            Status.TICKET_OPEN,
            Status.RETRY_WAIT,
            Status.FAILED,
            Status.CANCELLED,
        },
        Status.TICKET_OPEN: {
            Status.TICKET_PENDING,
            Status.COMPLETED,
            Status.DISCONTINUED,
            Status.FAILED,
            Status.CANCELLED,
        },
        Status.TICKET_PENDING: {
            Status.TICKET_OPEN,
            Status.COMPLETED,
            Status.DISCONTINUED,
            Status.FAILED,
            Status.CANCELLED,
        },
        Status.FAILED: {Status.NEW},
        # The ticket was reopened in OTRS after it closed.
        Status.COMPLETED: {Status.TICKET_OPEN},
        Status.DISCONTINUED: {Status.TICKET_OPEN},
        Status.CANCELLED: set(),
    }
    # The task states a reopened ticket sends back to "Ticket open".
    REOPENABLE = (Status.COMPLETED, Status.DISCONTINUED)
    # The flag of a task whose ticket was reopened after completion (cleared when it closes).
    REOPENED_FLAG = "reopened in OTRS: the access it recorded is unconfirmed"
    # What introduces the agent's closing article (outcome_subject/outcome_reason) on the
    # request page, the timeline and the emails.
    OUTCOME_LABEL = "The agent wrote"
    # A ticket's outcome, as a connection's status mapping names it (connections.spec
    # OUTCOMES), and the state it moves the task to.
    OUTCOME_STATUS: dict[str, str] = {
        "completed": Status.COMPLETED,
        "discontinued": Status.DISCONTINUED,
        "failed": Status.FAILED,
        "pending": Status.TICKET_PENDING,
        "open": Status.TICKET_OPEN,
    }

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="tasks")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="tasks")
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="tasks")
    operation = models.CharField(max_length=limits.OPERATION, choices=Operation.choices)
    entitlement = models.CharField(max_length=limits.ENTITLEMENT, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=5)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=limits.LEASE_OWNER, blank=True)
    # The last create attempt may have reached OTRS: search for the key before creating.
    outcome_unknown = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)
    flag = models.CharField(
        max_length=200, blank=True, help_text='e.g. "unmapped state: merged" or "stale".'
    )
    correlation_key = models.CharField(max_length=40, unique=True)
    ticket = models.OneToOneField(
        Ticket, on_delete=models.SET_NULL, null=True, blank=True, related_name="task"
    )

    # The agent's closing article: its subject and the start of its body.
    outcome_subject = models.CharField(max_length=limits.OUTCOME_SUBJECT, blank=True)
    outcome_reason = models.TextField(max_length=limits.OUTCOME_REASON, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="task_due"),
            models.Index(fields=["status", "lease_until"], name="task_lease"),
        ]

    def __str__(self) -> str:
        label = f"{self.get_operation_display()}"
        if self.entitlement:
            label += f" {self.entitlement}"
        return f"{self.request} · {label}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @classmethod
    def count_in_words(cls, counts: dict[str, int]) -> str:
        """Task states counted in their labels: "1 completed, 2 waiting to retry"."""
        labels = dict(cls.Status.choices)
        return ", ".join(
            f"{n} {labels.get(status, status).lower()}" for status, n in sorted(counts.items()) if n
        )

    @property
    def retryable(self) -> bool:
        """Its state allows a manual retry (the services still refuse one of a cancelled or
        rejected request)."""
        return self.status in self.RETRYABLE


class TaskEvent(models.Model):
    """One transition of a task or request: when, from, to, why and who."""

    class Actor(models.TextChoices):
        PERSON = "person", "Person"
        JOB = "job", "Job"
        WEBHOOK = "webhook", "Webhook"
        API = "api", "API"
        SYSTEM = "system", "System"

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="events")
    task = models.ForeignKey(
        ProvisioningTask, on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    reason = models.TextField(blank=True)
    actor_kind = models.CharField(max_length=10, choices=Actor.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    actor_label = models.CharField(max_length=limits.ACTOR_LABEL, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '·'} → {self.to_status} ({self.reason})"


# What the inventory shows beside an account or entitlement whose completing ticket was
# reopened in OTRS: the change stays recorded, but no longer as certain.
UNCONFIRMED_LABEL = "unconfirmed: ticket reopened"


class Account(models.Model):
    """An account that exists in an application, as a completed task or an import recorded it."""

    class Origin(models.TextChoices):
        REQUEST = "request", "Request"
        IMPORT = "import", "Imported"

    identity = models.ForeignKey(Identity, on_delete=models.PROTECT, related_name="accounts")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="accounts")
    name = models.CharField(max_length=limits.ACCOUNT_NAME)
    active = models.BooleanField(default=True)
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.REQUEST)
    origin_request = models.ForeignKey(
        AccessRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    # The task whose reopened ticket leaves this account's last change unconfirmed.
    unconfirmed_by = models.ForeignKey(
        ProvisioningTask, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["endpoint__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "name"],
                condition=Q(active=True),
                name="one_active_account_per_name",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.endpoint.name}"


class AccountEntitlement(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="entitlements")
    entitlement = models.CharField(max_length=limits.ENTITLEMENT)
    granted_at = models.DateTimeField(auto_now_add=True)
    granted_by = models.ForeignKey(
        ProvisioningTask, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    unconfirmed_by = models.ForeignKey(
        ProvisioningTask, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["entitlement"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "entitlement"], name="one_grant_per_entitlement"
            )
        ]

    def __str__(self) -> str:
        return f"{self.account} · {self.entitlement}"


class Outbox(models.TextChoices):
    """The states of something the bridge sends and retries: a ticket note, a callback."""

    PENDING = "pending", "Waiting to send"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


OUTBOX_TONES: dict[str, str] = {Outbox.PENDING: "warn", Outbox.SENT: "ok", Outbox.FAILED: "bad"}


class OutboxItem(models.Model):
    """Something the bridge sends and tries again until it is sent or given up."""

    Status = Outbox
    TONES = OUTBOX_TONES

    status = models.CharField(max_length=10, choices=Outbox.choices, default=Outbox.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_error = models.TextField(blank=True)

    class Meta:
        abstract = True

    @classmethod
    def due_ids(cls, limit: int) -> list[int]:
        """The ids of the items due now, the longest waiting first."""
        due = cls._default_manager.filter(
            status=Outbox.PENDING, next_attempt_at__lte=timezone.now()
        )
        return list(due.order_by("next_attempt_at", "id").values_list("pk", flat=True)[:limit])

    @classmethod
    def claim(cls, pk: int, lease: timedelta) -> bool:
        """Take one due item for an attempt (a conditional UPDATE: one worker wins); it is
        due again after `lease` if the worker dies."""
        now = timezone.now()
        return bool(
            cls._default_manager.filter(
                pk=pk, status=Outbox.PENDING, next_attempt_at__lte=now
            ).update(attempts=F("attempts") + 1, next_attempt_at=now + lease)
        )


class TicketNote(OutboxItem):
    """An article the bridge adds to a task's ticket (a TicketUpdate), queued and retried.

    A cancel note also moves the ticket to the connection's cancel state.
    """

    task = models.ForeignKey(ProvisioningTask, on_delete=models.CASCADE, related_name="notes")
    kind = models.CharField(
        max_length=20, choices=[(kind, shown.label) for kind, shown in NOTE_KINDS.items()]
    )
    why = models.TextField(max_length=limits.NOTE_WHY, blank=True)
    actor_label = models.CharField(max_length=limits.ACTOR_LABEL, blank=True)
    # What was sent: the article's subject, the state set ("" for a note only) and the id
    # OTRS gave the article (its closing-article read skips the bridge's own notes).
    subject = models.CharField(max_length=limits.NOTE_SUBJECT, blank=True)
    state = models.CharField(max_length=100, blank=True)
    article_id = models.BigIntegerField(null=True, blank=True)
    # A try failed in a way that may have reached OTRS (a timeout, a reset, a 5xx): before
    # the next one the ticket is searched for the article.
    maybe_added = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="note_due")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} note on task {self.task_id}"


class DeliveryQuerySet(models.QuerySet):
    def overtaken(self) -> DeliveryQuerySet:
        """Those a later delivered one of the same request to the same client made moot:
        the client has heard of a later status. Sending one again would move it back."""
        return self.filter(Exists(_later_delivered()))

    def not_overtaken(self) -> DeliveryQuerySet:
        return self.exclude(Exists(_later_delivered()))

    def with_overtaken(self) -> DeliveryQuerySet:
        """Each with `overtaken` (as above) for the page to say so."""
        return self.annotate(overtaken=Exists(_later_delivered()))


def _later_delivered() -> models.QuerySet:
    return CallbackDelivery.objects.filter(
        request=OuterRef("request"),
        client=OuterRef("client"),
        pk__gt=OuterRef("pk"),
        status=Outbox.SENT,
    )


class CallbackDelivery(OutboxItem):
    """One signed POST of a request document to its API client's callback URL, with every
    attempt recorded; retried with backoff for up to a day."""

    objects = DeliveryQuerySet.as_manager()

    client = models.ForeignKey(ApiClient, on_delete=models.CASCADE, related_name="deliveries")
    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="deliveries")
    request_status = models.CharField(max_length=20, choices=AccessRequest.Status.choices)
    body = models.TextField()
    # Each attempt: {"at", "status_code", "error", "ms"}.
    attempt_log = models.JSONField(default=list, blank=True)
    # Tried until then (a day after it was queued, or after an operator's redeliver).
    give_up_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "callback deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.request} {self.get_request_status_display()} to {self.client}"


# Registered with this app from their own modules: the background jobs' record and the
# notifications' wording (tickets/models_operations.py), the desired state SCIM clients push
# (tickets/models_scim.py).
from .models_operations import (  # noqa: E402, F401
    JobRun,
    NotificationTemplate,
    NotificationThrottle,
    notification_kind_label,
)
from .models_scim import ScimChange, ScimGroup, ScimMember, ScimUser  # noqa: E402, F401
