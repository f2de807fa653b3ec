"""The work: identities, access requests, provisioning tasks, the ticket mapping, the
timeline, and the access inventory that completed tasks leave behind.

State changes happen only in tickets/services/; these models only hold data.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from connections.models import Connection, Endpoint

# The largest id a BigAutoField / BigIntegerField can hold.
MAX_DB_INT = 2**63 - 1


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

    username = models.CharField(max_length=150, unique=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    email = models.EmailField(blank=True)
    manager = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reports"
    )
    properties = models.JSONField(
        default=dict, blank=True, help_text="Custom attributes, usable in templates."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["username"]
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        full = f"{self.first_name} {self.last_name}".strip()
        return f"{full} ({self.username})" if full else self.username

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

    def __str__(self) -> str:
        return self.name


# The permissions the console and the services check (declared in AccessRequest.Meta).
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

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.REJECTED, Status.CANCELLED)

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
    operation = models.CharField(max_length=20, choices=Operation.choices)
    account_name = models.CharField(max_length=200, blank=True)
    entitlements = models.JSONField(default=list, blank=True)
    justification = models.TextField(blank=True)

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
        max_length=200, blank=True, help_text="Upstream approver, for trusted API clients."
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    result_summary = models.CharField(max_length=200, blank=True)

    idempotency_key = models.CharField(max_length=200, blank=True)
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
        if self.requester_id:
            return self.requester.get_username()
        return f"api:{self.api_client.name}" if self.api_client_id else "-"


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

    TERMINAL = (Status.COMPLETED, Status.DISCONTINUED, Status.FAILED, Status.CANCELLED)
    DUE = (Status.NEW, Status.RETRY_WAIT)

    request = models.ForeignKey(AccessRequest, on_delete=models.CASCADE, related_name="tasks")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="tasks")
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="tasks")
    operation = models.CharField(max_length=20, choices=Operation.choices)
    entitlement = models.CharField(max_length=200, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=5)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=100, blank=True)
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
    actor_label = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '·'} → {self.to_status} ({self.reason})"


class Account(models.Model):
    """An account that exists in an application, as the completed tasks recorded it."""

    identity = models.ForeignKey(Identity, on_delete=models.PROTECT, related_name="accounts")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="accounts")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)

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
    entitlement = models.CharField(max_length=200)
    granted_at = models.DateTimeField(auto_now_add=True)
    granted_by = models.ForeignKey(
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


class JobRun(models.Model):
    """One run of a background job, recorded before it starts (a dead worker leaves `running`)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        FAILED = "failed", "Failed"
        ERRORED = "errored", "Errored"

    name = models.CharField(max_length=50, db_index=True)
    trigger = models.CharField(
        max_length=50, blank=True, help_text="schedule, command, button or webhook"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    summary = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["name", "-started_at"], name="jobrun_recent")]

    def __str__(self) -> str:
        return f"{self.name} {self.status}"
