"""Mail backends for the notification tests: Django's in-memory outbox behind a mail server
that is briefly away, or that refuses for good."""

from __future__ import annotations

import smtplib

from django.core.mail.backends.locmem import EmailBackend

# How many sends the flaky server drops before it accepts (reset by each test).
DROPS = {"left": 0}


class FlakyBackend(EmailBackend):
    """Disconnects DROPS["left"] times (a transient error), then delivers to the outbox."""

    def send_messages(self, messages):
        if DROPS["left"] > 0:
            DROPS["left"] -= 1
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return super().send_messages(messages)


class RefusingBackend(EmailBackend):
    """Refuses every recipient (a permanent error)."""

    def send_messages(self, messages):
        raise smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"no such user")})
