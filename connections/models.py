"""How to reach a ticket system: connections, security systems, endpoints and the call log.

`connections` never imports `tickets`. An ApiCall names what caused it with an opaque
`ref` string (e.g. "task:42") that the caller passes in, not with a foreign key.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse

from . import crypto
from .masking import SECRET_KEY_NAMES

# Shown instead of a stored secret. Saving a document that still holds it keeps the secret.
SECRET_PLACEHOLDER = "********"


def _is_reference(value: Any) -> bool:
    """`${connection.password}` refers to a secret; it is not one."""
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


def _walk_secrets(
    node: Any, path: tuple[str, ...], extra: frozenset[str], out: dict[str, Any]
) -> Any:
    """Return `node` with secret values replaced by the placeholder; collect them in `out`."""
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            sub = (*path, str(key))
            if (
                (str(key).lower() in SECRET_KEY_NAMES or str(key).lower() in extra)
                and isinstance(value, str | int | float)
                and not _is_reference(value)
                and value != ""
            ):
                out["/".join(sub)] = value
                result[key] = SECRET_PLACEHOLDER
            else:
                result[key] = _walk_secrets(value, sub, extra, out)
        return result
    if isinstance(node, list):
        return [_walk_secrets(v, (*path, str(i)), extra, out) for i, v in enumerate(node)]
    return node


def split_secrets(connection_json: dict) -> tuple[dict, dict[str, Any]]:
    """Split a ConnectionJSON into a public document and a {json-path: secret} map."""
    public: dict = {k: v for k, v in connection_json.items() if k != "authentications"}
    secrets: dict[str, Any] = {}
    auths = connection_json.get("authentications") or {}
    public["authentications"] = {}
    for name, block in auths.items():
        if not isinstance(block, dict):
            public["authentications"][name] = block
            continue
        extra = frozenset(
            str(k).lower() for k in (block.get("maskInLogs") or []) if isinstance(k, str)
        )
        public["authentications"][name] = _walk_secrets(
            block, ("authentications", name), extra, secrets
        )
    return public, secrets


def merge_secrets(public: Any, secrets: dict[str, Any], path: tuple[str, ...] = ()) -> Any:
    """Put secrets back into a public document (the inverse of split_secrets)."""
    if isinstance(public, dict):
        return {k: merge_secrets(v, secrets, (*path, str(k))) for k, v in public.items()}
    if isinstance(public, list):
        return [merge_secrets(v, secrets, (*path, str(i))) for i, v in enumerate(public)]
    if public == SECRET_PLACEHOLDER:
        return secrets.get("/".join(path), "")
    return public


class Connection(models.Model):
    """One ticket system (an OTRS/Znuny web service) and the documents that drive it."""

    name = models.SlugField(
        max_length=100, unique=True, help_text="Short unique name, used in URLs."
    )
    description = models.CharField(max_length=300, blank=True)
    enabled = models.BooleanField(default=True)

    # ConnectionJSON with secret values replaced by SECRET_PLACEHOLDER; the secrets
    # themselves live encrypted in `secrets_encrypted`.
    connection_json = models.JSONField("ConnectionJSON", default=dict)
    create_ticket_json = models.JSONField("CreateTicketJSON", default=dict)
    ticket_status_json = models.JSONField("TicketStatusJSON", default=dict)
    config_json = models.JSONField("ConfigJSON", default=dict, blank=True)
    secrets_encrypted = models.TextField(blank=True, editable=False)

    poll_minutes = models.PositiveIntegerField(
        default=2,
        validators=[MinValueValidator(1), MaxValueValidator(1440)],
        help_text="How often open tickets are polled.",
    )
    full_sweep_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(10080)],
        help_text=(
            "How often every open ticket is polled, when the status document has a change "
            "search (the cycles between ask only for the tickets that changed)."
        ),
    )
    provision_minutes = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(1440)],
        help_text="How often due provisioning tasks are picked up.",
    )
    batch_size = models.PositiveIntegerField(
        default=50,
        validators=[MinValueValidator(1), MaxValueValidator(500)],
        help_text="Ticket ids per status call (batch mode).",
    )
    max_status_check_days = models.PositiveIntegerField(
        default=14,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="After this many days an open ticket is flagged stale (it is still polled).",
    )
    reopen_watch_days = models.PositiveIntegerField(
        default=14,
        validators=[MinValueValidator(0), MaxValueValidator(3650)],
        help_text=(
            "For this many days after a ticket closed, the change search and the webhook "
            'still follow it: an agent reopening it sends its task back to "Ticket open".'
        ),
    )
    webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    completion_email_subject = models.CharField(
        max_length=200,
        blank=True,
        default="Access request {{ request.number }} is {{ request.get_status_display|lower }}",
    )
    completion_email_template = models.TextField(
        blank=True,
        help_text="Django template for the completion email; empty uses the built-in one.",
    )

    last_test_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("connections:detail", args=[self.name])

    @property
    def polled_ok_at(self) -> datetime | None:
        """When its last poll cycle without an error ended; None before the first."""
        try:
            return self.poll_watermark.polled_ok_at
        except PollWatermark.DoesNotExist:
            return None

    # --- secrets -------------------------------------------------------------------------
    @property
    def secrets(self) -> dict[str, Any]:
        if not self.secrets_encrypted:
            return {}
        return json.loads(crypto.decrypt(self.secrets_encrypted))

    def set_connection_json(self, document: dict) -> None:
        """Store a ConnectionJSON: secrets go encrypted, the placeholder keeps the old value."""
        public, new_secrets = split_secrets(document)
        kept = self.secrets
        merged: dict[str, Any] = {}
        for path, value in new_secrets.items():
            merged[path] = kept.get(path, "") if value == SECRET_PLACEHOLDER else value
        self.connection_json = public
        self.secrets_encrypted = crypto.encrypt(json.dumps(merged)) if merged else ""

    def connection_document(self) -> dict:
        """The ConnectionJSON with its secrets, for the call engine only. Never render it."""
        return merge_secrets(self.connection_json, self.secrets)

    def secret_values(self) -> list[str]:
        """Every secret string of this connection, so logs and pages can mask them.

        A secret that cannot be decrypted is left out: it cannot be shown either, and a
        page that masks must not fail over it.
        """
        values: list[str] = []
        for read in (
            lambda: [str(v) for v in self.secrets.values()],
            lambda: [self.webhook_secret],
        ):
            try:
                values.extend(v for v in read() if v)
            except crypto.SecretUnreadable:
                pass
        values.extend(t.token for t in self.tokens.all() if t.token)
        return values

    @property
    def webhook_secret(self) -> str:
        return crypto.decrypt(self.webhook_secret_encrypted)

    def set_webhook_secret(self, value: str) -> None:
        self.webhook_secret_encrypted = crypto.encrypt(value)


class PollWatermark(models.Model):
    """How far a connection's polling has got, for polls that ask OTRS what changed.

    `changed_since`: every change OTRS made before it has been applied (a cycle asks for
    the changes after it, minus an overlap). `full_sweep_at`: when the last complete
    sweep of all open tickets started. `polled_ok_at`: when the last cycle without an
    error ended, whether or not it asked for changes. Only the poll cycle writes them (tickets' services),
    each after the changes it read were applied, so a cycle that fails asks again.
    """

    connection = models.OneToOneField(
        Connection, on_delete=models.CASCADE, primary_key=True, related_name="poll_watermark"
    )
    changed_since = models.DateTimeField(null=True, blank=True)
    full_sweep_at = models.DateTimeField(null=True, blank=True)
    # When the last poll cycle that met no error ended (one with nothing to fetch counts):
    # readiness and /metrics judge whether the connection is still followed by it.
    polled_ok_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.connection_id}: changes since {self.changed_since}"


class ConnectionToken(models.Model):
    """The current token or session of one auth block, encrypted, with its expiry.

    `refresh_lease_until` makes refreshing single-flight across threads, processes and
    machines: a worker takes the lease with a conditional UPDATE, refreshes, and bumps
    `version`; the others wait for the version to move and use the new token.
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="tokens")
    auth_name = models.CharField(max_length=100)
    token_encrypted = models.TextField(blank=True)
    obtained_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    refresh_lease_until = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)
    refresh_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "auth_name"], name="one_token_per_auth_block"
            )
        ]

    def __str__(self) -> str:
        return f"{self.connection.name}/{self.auth_name}"

    @property
    def token(self) -> str:
        """The token, or "" when it cannot be decrypted: a session is only a cache, so an
        unreadable one (keys changed) means logging in again, never a failure."""
        try:
            return crypto.decrypt(self.token_encrypted)
        except crypto.SecretUnreadable:
            return ""


class SecuritySystem(models.Model):
    """An application whose access is granted by hand through tickets (a security system in
    Saviynt's terms; the documents keep that name)."""

    name = models.SlugField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    instant_provisioning = models.BooleanField(
        default=False,
        help_text="Queue the ticket at approval instead of waiting for the provisioning job.",
    )
    provisioning_tries = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    service_desk_connection = models.ForeignKey(
        Connection, on_delete=models.PROTECT, null=True, blank=True, related_name="security_systems"
    )
    owners = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="owned_applications",
        help_text=(
            "People who decide this application's requests. When it has owners (people or "
            "groups), only they and admins may approve; they also need the approver role."
        ),
    )
    owner_groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="owned_applications",
        help_text="Groups whose members are owners of this application.",
    )
    two_approvals = models.BooleanField(
        default=False,
        help_text=(
            "Each request needs two approvals: an owner first (any approver when there are no "
            "owners), then a second, different approver."
        ),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "application"

    def __str__(self) -> str:
        return self.display_name or self.name


class Endpoint(models.Model):
    """An endpoint: where the accounts live inside an application."""

    security_system = models.ForeignKey(
        SecuritySystem,
        on_delete=models.PROTECT,
        related_name="endpoints",
        verbose_name="application",
        help_text="The application this endpoint belongs to (a security system in Saviynt's terms).",
    )
    name = models.SlugField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    attributes = models.JSONField(
        default=dict, blank=True, help_text='Free attributes for templates, e.g. {"queue": "Raw"}.'
    )
    entitlements = models.JSONField(
        default=list, blank=True, help_text="Entitlements that can be requested on this endpoint."
    )
    allow_unknown_accounts = models.BooleanField(
        default=False,
        help_text=(
            "Accept requests to remove or change an account the bridge does not know (neither "
            "created through it nor imported); their ticket says the account is not in the "
            "bridge's inventory."
        ),
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name or self.name


class ApiCall(models.Model):
    """One HTTP call to a ticket system, with secrets masked before the row is written."""

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        AUTH_ERROR = "auth_error", "Auth error"
        TRANSPORT_ERROR = "transport_error", "Transport error"
        TIMEOUT = "timeout", "Timeout"

    # The badge tone of each outcome (static/css/app.css colours each tone).
    TONES: dict[str, str] = {
        Outcome.OK: "ok",
        Outcome.ERROR: "bad",
        Outcome.AUTH_ERROR: "bad",
        Outcome.TRANSPORT_ERROR: "bad",
        Outcome.TIMEOUT: "warn",
    }

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="api_calls", null=True
    )
    ref = models.CharField(
        max_length=100, blank=True, db_index=True, help_text='What caused it, e.g. "task:42".'
    )
    call_name = models.CharField(max_length=100, blank=True)
    method = models.CharField(max_length=10)
    url = models.TextField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    error = models.TextField(blank=True)
    request_excerpt = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Added into ApiCallTally (the running totals /metrics reports) yet? Rows are folded in
    # at a scrape, or by the retention job just before it deletes them.
    counted = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["connection", "-created_at"], name="apicall_conn_recent"),
            # Only the rows not yet counted: small whenever /metrics is scraped.
            models.Index(fields=["id"], condition=Q(counted=False), name="apicall_uncounted"),
            # The failed calls, newest first: what an operator filters the call log for. Only
            # the few failures are in it, so writing the many good calls costs nothing more.
            models.Index(
                fields=["outcome", "-created_at"],
                condition=~Q(outcome="ok"),
                name="apicall_failures",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.call_name or self.url} → {self.status_code or self.outcome}"


class ApiCallTally(models.Model):
    """Running totals of the OTRS calls, per connection, call and outcome: the counters and
    the latency histogram of /metrics. ApiCall rows are added in once each (`counted`), so
    the totals only grow, whichever process made the call and after its row is deleted."""

    # Upper bounds of the latency histogram's buckets, in milliseconds (+Inf follows).
    BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)

    connection_name = models.CharField(max_length=100, blank=True)
    call_name = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=20, choices=ApiCall.Outcome.choices)
    calls = models.BigIntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0)
    # Calls per bucket of BUCKETS_MS, not cumulative; one more at the end for slower ones.
    buckets = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection_name", "call_name", "outcome"], name="one_tally_per_series"
            )
        ]

    def __str__(self) -> str:
        return f"{self.connection_name} {self.call_name} {self.outcome}: {self.calls}"
