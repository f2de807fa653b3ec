"""Response headers that Django's SecurityMiddleware does not send: Content-Security-Policy,
Permissions-Policy, and `Cache-Control: no-store` on every page that sets no caching itself.

Django 5.2 has no CSP support of its own (6.0 adds django.middleware.csp). SECURE_CSP is
written in the shape 6.0 reads, so moving to it later is a change of one MIDDLEWARE line.
Static files never reach this middleware: WhiteNoise, listed before it, answers them with
its own long-lived caching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers


def csp_header(policy: Mapping[str, Sequence[str] | bool]) -> str:
    """`{"default-src": ["'self'"], "upgrade-insecure-requests": True}` as a header value."""
    parts = []
    for directive, sources in policy.items():
        if sources is True:
            parts.append(directive)
        elif sources:
            parts.append(" ".join([directive, *sources]))
    return "; ".join(parts)


def permissions_header(policy: Mapping[str, Sequence[str]]) -> str:
    """`{"camera": []}` as `camera=()`: an empty list allows the feature to nobody."""
    return ", ".join(f"{feature}=({' '.join(allowed)})" for feature, allowed in policy.items())


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.csp = csp_header(settings.SECURE_CSP)
        self.permissions = permissions_header(settings.PERMISSIONS_POLICY)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # Django's own debug pages (DEBUG only) style themselves inline; a policy would
        # leave a developer an unreadable traceback.
        debug_page = settings.DEBUG and response.status_code >= 400
        if self.csp and not debug_page:
            response.headers.setdefault("Content-Security-Policy", self.csp)
        if self.permissions:
            response.headers.setdefault("Permissions-Policy", self.permissions)
        # Pages show requests, people and tickets: no browser or proxy may keep a copy
        # (the admin's pages already say so with never_cache; the console's now do too).
        if not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response
