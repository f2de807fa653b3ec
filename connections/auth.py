"""Tokens and sessions: obtain, store encrypted, expire, and refresh one at a time.

OTRS sessions die silently (a fixed lifetime from creation, IP binding, cleanup) and never
say when they will, so a session is renewed `REFRESH_MARGIN` before the lifetime the
ConnectionJSON declares (tokenLifetimeSeconds), and again when OTRS refuses it.

Renewing is single-flight across threads, processes and machines through the
ConnectionToken row: a worker takes `refresh_lease_until` with a conditional UPDATE and
checks the rowcount; the others poll the row until `version` moves, then use the new
token. A refresher that dies leaves a lease that expires, and the next worker takes it.
This works the same on SQLite and PostgreSQL (no SELECT … FOR UPDATE).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F, Q
from django.utils import timezone

from . import crypto
from .documents import AuthSpec
from .models import Connection, ConnectionToken

REFRESH_MARGIN = timedelta(seconds=60)
POLL_SECONDS = 0.05

Login = Callable[[], str]


class TokenUnavailable(Exception):
    """No token now, though this worker did not log in itself (the client makes it an OTRSError)."""

    def __init__(self, message: str, *, auth: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.auth = auth


@dataclass(frozen=True)
class Token:
    """What `${access_token}` becomes, and the ConnectionToken version it came from."""

    value: str
    version: int | None
    # When the stored token stops being fresh; None for tokens that never expire here.
    expires_at: datetime | None = None

    def fresh(self, now: datetime) -> bool:
        """Usable without asking the database again (a client keeps it for its next calls)."""
        return self.expires_at is None or self.expires_at - now > REFRESH_MARGIN


def current_token(
    connection: Connection,
    auth_spec: AuthSpec,
    *,
    login: Login,
    lease_seconds: float,
    force_refresh: bool = False,
    seen_version: int | None = None,
) -> Token:
    """The token to use now for `auth_spec`.

    - Basic: no token ("").
    - A static accessToken and no token call: that token.
    - A token call (e.g. OTRS SessionCreate): the stored one while it is fresh; otherwise,
      or with `force_refresh`, a new one from `login()`, single-flight. `seen_version` is
      the version of the token that was refused: if the row has moved past it, another
      worker already renewed it and that token is used without a new login.
    """
    if auth_spec.auth_type == "basic":
        return Token("", None)
    if not auth_spec.refreshable:
        return Token(_prefixed(auth_spec, auth_spec.access_token), None)
    row = _token_row(connection, auth_spec.name)
    now = timezone.now()
    moved = seen_version is not None and row.version != seen_version
    if _fresh(row, now) and (not force_refresh or moved):
        return Token(_prefixed(auth_spec, row.token), row.version, row.expires_at)
    return _refresh(connection, auth_spec, row, login=login, lease_seconds=lease_seconds)


def _prefixed(auth_spec: AuthSpec, raw: str) -> str:
    """tokenType in front ("Bearer x"); OTRS sessions have none."""
    return f"{auth_spec.token_type} {raw}" if auth_spec.token_type and raw else raw


def _fresh(row: ConnectionToken, now: datetime) -> bool:
    return bool(row.token) and row.expires_at is not None and row.expires_at - now > REFRESH_MARGIN


def _token_row(connection: Connection, auth_name: str) -> ConnectionToken:
    """The row of one auth block, created on first use.

    get_or_create catches the IntegrityError of a concurrent create and reads the winner's row.
    """
    row, _ = ConnectionToken.objects.get_or_create(connection=connection, auth_name=auth_name)
    return row


def _refresh(
    connection: Connection,
    auth_spec: AuthSpec,
    row: ConnectionToken,
    *,
    login: Login,
    lease_seconds: float,
) -> Token:
    """Renew the token, or wait for the worker that is renewing it."""
    base_version = row.version
    deadline = time.monotonic() + lease_seconds
    while True:
        now = timezone.now()
        taken = (
            ConnectionToken.objects.filter(pk=row.pk, version=base_version)
            .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now))
            .update(refresh_lease_until=now + timedelta(seconds=lease_seconds))
        )
        if taken:
            return _login_and_store(connection, auth_spec, row.pk, base_version, login)
        current = ConnectionToken.objects.get(pk=row.pk)
        if current.version != base_version:
            if _fresh(current, timezone.now()):
                return Token(
                    _prefixed(auth_spec, current.token), current.version, current.expires_at
                )
            if current.last_error:
                raise TokenUnavailable(
                    f"Another worker's login failed: {current.last_error}", auth=True
                )
            base_version = current.version
            continue
        if time.monotonic() > deadline:
            raise TokenUnavailable(
                f"No new session after waiting {lease_seconds:g} s for another worker's login"
            )
        time.sleep(POLL_SECONDS)


def _login_and_store(
    connection: Connection, auth_spec: AuthSpec, pk: int, base_version: int, login: Login
) -> Token:
    """Holding the lease: log in, store the token, bump the version, release the lease."""
    rows = ConnectionToken.objects.filter(pk=pk)
    try:
        raw = login()
    except Exception as exc:
        message = getattr(exc, "message", None) or "the login failed unexpectedly"
        rows.update(
            token_encrypted="",
            refresh_lease_until=None,
            version=F("version") + 1,
            last_error=message,
        )
        Connection.objects.filter(pk=connection.pk).update(
            last_error=message, last_error_at=timezone.now()
        )
        raise
    now = timezone.now()
    expires_at = now + timedelta(seconds=auth_spec.token_lifetime_seconds)
    rows.update(
        token_encrypted=crypto.encrypt(raw),
        obtained_at=now,
        expires_at=expires_at,
        refresh_lease_until=None,
        version=F("version") + 1,
        refresh_count=F("refresh_count") + 1,
        last_error="",
    )
    return Token(_prefixed(auth_spec, raw), base_version + 1, expires_at)
