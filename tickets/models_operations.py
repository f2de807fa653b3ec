"""What the bridge does in the background and tells people: one JobRun per run of a job,
and the notifications' own wording and throttle. Registered with the app by models.py.
"""

from __future__ import annotations

from django.db import models


class NotificationTemplate(models.Model):
    """An admin's own wording of one notification; without a row the built-in one is sent.

    The kinds, who receives each and the variables its template sees are declared in
    tickets.services.notifications.
    """

    kind = models.CharField(max_length=40, unique=True)
    # Either may be left empty in the admin: the built-in one is sent in its place.
    subject = models.CharField(max_length=200, help_text="A Django template, one line.")
    body = models.TextField(help_text="A Django template; README lists its variables.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return notification_kind_label(self.kind)


def notification_kind_label(kind: str) -> str:
    """A notification kind in words: "approval_needed" → "Approval needed"."""
    return kind.replace("_", " ").capitalize()


class NotificationThrottle(models.Model):
    """When operators last got a mail about one subject (at most one per subject an hour)."""

    key = models.CharField(max_length=200, unique=True)
    sent_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.key


class JobRun(models.Model):
    """One run of a background job, recorded before it starts (a dead worker leaves `running`)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        FAILED = "failed", "Failed"
        ERRORED = "errored", "Errored"

    TONES: dict[str, str] = {
        Status.RUNNING: "info",
        Status.OK: "ok",
        Status.FAILED: "bad",
        Status.ERRORED: "bad",
    }

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
