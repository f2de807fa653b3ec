"""Logins under django-axes: the client's address, one log line per failure, the lockout page.

Both logins (the console's /login/ and the admin's) authenticate through the same backends,
so axes counts their failures together and both answer a lockout with the same page.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import Any

from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

log = logging.getLogger(__name__)

# A username is what someone typed: cut and quoted in the log, so it can neither flood nor
# forge a line.
USERNAME_LOG_LENGTH = 100


def client_address(request: HttpRequest) -> str:
    """The address a login comes from (AXES_CLIENT_IP_CALLABLE).

    Behind TRUSTED_PROXY_COUNT proxies, the address the outermost of them saw: each proxy
    appends the address it was called from to X-Forwarded-For, so the entry that many from
    the right was written by a proxy we trust; entries left of it may be forged by the client.
    """
    remote = request.META.get("REMOTE_ADDR", "") or ""
    count = settings.TRUSTED_PROXY_COUNT
    if not count:
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [h for h in hops if h]
    if len(hops) < count:
        return remote
    try:
        return str(ipaddress.ip_address(hops[-count]))
    except ValueError:
        return remote


def login_username(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """The username axes counts failures under (AXES_USERNAME_CALLABLE): as typed, cut to
    the length axes can store. Where axes would read it: the credentials, else the form."""
    # Anything may be typed into a login form; a name longer than axes' column would fail
    # the insert on PostgreSQL (an answer 500, no lockout), so the column says how long.
    from axes.models import AccessAttempt

    length = AccessAttempt._meta.get_field("username").max_length
    field = settings.AXES_USERNAME_FORM_FIELD
    value = (
        credentials.get(field) if credentials else getattr(request, "data", request.POST).get(field)
    )
    return None if value is None else str(value)[:length]


def _quoted(username: Any) -> str:
    text = str(username or "")
    if len(text) > USERNAME_LOG_LENGTH:
        text = text[:USERNAME_LOG_LENGTH] + "…"
    return repr(text)


@receiver(user_login_failed, dispatch_uid="otrsbridge.logins.log_failed_login")
def log_failed_login(
    sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """One line per failed login: the username typed and the address, never the password.

    axes' receiver runs first (its app comes first in INSTALLED_APPS) and leaves on the
    request how many failures it counts and whether they now lock the login.
    """
    username = _quoted(credentials.get("username"))
    if request is None:
        log.warning("login failed: username %s, address unknown", username)
        return
    address = getattr(request, "axes_ip_address", None) or client_address(request)
    failures = getattr(request, "axes_failures_since_start", None)
    counted = f", failure {failures} of {get_failure_limit(request, credentials)}"
    state = ", locked out" if getattr(request, "axes_locked_out", False) else ""
    log.warning(
        "login failed: username %s from %s on %s%s%s",
        username,
        address,
        request.path,
        counted if failures is not None else "",
        state,
    )


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """The page for a locked-out login (AXES_LOCKOUT_CALLABLE): when to try again, or whom to ask.

    The try that shows this page was counted and started the wait again, so it ends one
    cool-off from now.
    """
    cool_off = get_cool_off(request)
    context: dict[str, Any] = {"limit": get_failure_limit(request, credentials)}
    if cool_off:
        context["retry_at"] = timezone.localtime(timezone.now() + cool_off)
        context["minutes"] = math.ceil(cool_off.total_seconds() / 60)
    response = render(request, "registration/locked_out.html", context, status=429)
    if cool_off:
        response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response
