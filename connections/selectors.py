"""Reads about connections for the console: token states, recent calls, masked texts.

Nothing here ever returns a secret. Token rows are described by their timestamps only, and
every stored text that could echo a secret (call excerpts, errors, test messages) passes
through `mask` with the connection's own secrets before a page sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Prefetch, QuerySet, prefetch_related_objects
from django.utils import timezone

from .masking import mask  # every encoded form of each secret
from .models import ApiCall, Connection, ConnectionToken, Endpoint

# A token that expires sooner than this is shown as "expiring soon".
EXPIRY_WARNING = timedelta(minutes=5)


@dataclass
class TokenState:
    """A token's state in words, without the token itself."""

    auth_name: str
    state: str  # a key of LABELS
    expires_at: datetime | None
    obtained_at: datetime | None
    last_error: str

    LABELS = {
        "valid": ("Valid", "ok"),
        "expiring": ("Expiring soon", "warn"),
        "expired": ("Expired", "muted"),
        "failed": ("Login failed", "bad"),  # one was obtained once; the last login failed
        "none": ("No token yet", "neutral"),
    }

    @property
    def has_token(self) -> bool:
        """Whether a token is stored: only then does its expiry mean anything."""
        return self.state in ("valid", "expiring", "expired")

    @property
    def label(self) -> str:
        return self.LABELS[self.state][0]

    @property
    def tone(self) -> str:
        return self.LABELS[self.state][1]


def token_state(token: ConnectionToken, now: datetime | None = None) -> TokenState:
    """Describe a stored token by its timestamps only; the token value is never decrypted."""
    now = now or timezone.now()
    if token.obtained_at is None:
        state = "none"
    elif not token.token_encrypted:
        state = "failed"
    elif token.expires_at is None or token.expires_at > now + EXPIRY_WARNING:
        state = "valid"
    elif token.expires_at > now:
        state = "expiring"
    else:
        state = "expired"
    return TokenState(token.auth_name, state, token.expires_at, token.obtained_at, token.last_error)


def mask_calls(calls: list[ApiCall], secrets: list[str]) -> None:
    for call in calls:
        for attr in ("url", "error", "request_excerpt", "response_excerpt"):
            setattr(call, attr, mask(getattr(call, attr), secrets))


def connections_with_tokens() -> QuerySet[Connection]:
    return Connection.objects.select_related("poll_watermark").prefetch_related(
        Prefetch("tokens", queryset=ConnectionToken.objects.order_by("auth_name"))
    )


@dataclass
class ConnectionSummary:
    connection: Connection
    tokens: list[TokenState]


def connection_list() -> list[ConnectionSummary]:
    """Every connection with its tokens' states and how many systems use it (3 queries)."""
    now = timezone.now()
    return [
        ConnectionSummary(c, [token_state(t, now) for t in c.tokens.all()])
        for c in connections_with_tokens().annotate(
            systems=Count("security_systems", distinct=True)
        )
    ]


@dataclass
class ConnectionPage:
    """One connection as the console shows it: states and masked texts, never a secret."""

    connection: Connection
    tokens: list[TokenState]
    calls: list[ApiCall]
    last_error: str
    last_test_message: str
    endpoints: list[Endpoint]


def connection_page(connection: Connection, calls: int = 30) -> ConnectionPage:
    # The tokens are read once: for masking and for their states.
    prefetch_related_objects(
        [connection], Prefetch("tokens", queryset=ConnectionToken.objects.order_by("auth_name"))
    )
    secrets = connection.secret_values()
    recent = list(connection.api_calls.order_by("-created_at", "-id")[:calls])
    mask_calls(recent, secrets)
    now = timezone.now()
    tokens = [token_state(t, now) for t in connection.tokens.all()]
    for token in tokens:
        token.last_error = mask(token.last_error, secrets)
    return ConnectionPage(
        connection=connection,
        tokens=tokens,
        calls=recent,
        last_error=mask(connection.last_error, secrets),
        last_test_message=mask(connection.last_test_message, secrets),
        endpoints=list(
            Endpoint.objects.filter(security_system__service_desk_connection=connection)
            .select_related("security_system")
            .order_by("name")
        ),
    )
