"""How long each field of an access request may be, stated once.

The model fields (tickets/models.py), the console forms (tickets/forms.py), the API's body
models (tickets/api_schemas.py) and from them the OpenAPI document all read these, so the
console and the API refuse the same input and the document cannot promise another limit.
"""

from __future__ import annotations

from django.db import models

from connections.models import Endpoint


def _column(model: type[models.Model], name: str) -> int:
    """The max_length of a column another app declares (connections cannot import this)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.max_length, f"{name} has no max_length"
    return field.max_length


# The person (Identity). Django's own User allows 150-character usernames and names;
# 254 is the longest address SMTP can deliver (RFC 5321 path minus the angle brackets).
USERNAME = 150
PERSON_NAME = 150
EMAIL = 254

# What is asked for.
ENDPOINT_NAME = _column(Endpoint, "name")
OPERATION = 20  # the column; the values themselves are Operation's
ACCOUNT_NAME = 200
ENTITLEMENT = 200
ENTITLEMENTS_PER_REQUEST = 100  # one task each; far above any real request
JUSTIFICATION = 5000

# A SCIM client's own id for a User or a Group (its externalId).
SCIM_EXTERNAL_ID = 200

# Who decided and why.
UPSTREAM_APPROVER = 200
DECISION_COMMENT = 2000
CANCEL_REASON = 2000

# Who holds a claimed task (services.transitions.worker_name).
LEASE_OWNER = 100

# The timeline: an event's reason is cut to this length, and who made the change.
EVENT_REASON = 2000
ACTOR_LABEL = 200

# The agent's closing article, as the task keeps it: its subject and the start of its body.
OUTCOME_SUBJECT = 255
OUTCOME_REASON = 1000

# A note the bridge adds to a ticket: the actor's "why", and the rendered article.
NOTE_WHY = 2000
NOTE_SUBJECT = 255
NOTE_BODY = 10000

# An API client's callback URL.
CALLBACK_URL = 500

# An API client's Idempotency-Key header.
IDEMPOTENCY_KEY = 200

# An account import (CSV): the largest file and the most rows one import takes.
IMPORT_MAX_BYTES = 5 * 1024 * 1024
IMPORT_MAX_ROWS = 20_000
