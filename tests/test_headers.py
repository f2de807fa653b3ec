"""Security headers on every console, admin and API answer: a Content-Security-Policy with no
inline script or style, a Permissions-Policy, and `Cache-Control: no-store`. The pages
themselves hold nothing the policy would block (the browser tests add what Chromium says)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, reverse

from otrsbridge.headers import csp_header, permissions_header
from tests import factories
from tests.test_console_pages import pages
from tickets import services
from tickets.api import api_client_create
from tickets.models import AccessRequest

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

# What a policy without 'unsafe-inline' blocks: a script element without src (JSON data
# blocks are not run, so they may stay), an on…= handler, a style element or attribute.
INLINE = {
    "inline script": re.compile(
        r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I
    ),
    "event handler": re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I),
    "style element": re.compile(r"<style\b", re.I),
    "style attribute": re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I),
}


def inline_code(html: str) -> list[str]:
    return [f"{what}: {m.group(0)[:80]}" for what, rx in INLINE.items() for m in rx.finditer(html)]


def assert_secure_headers(response, what: str) -> None:
    assert response["Content-Security-Policy"] == CSP, what
    assert "camera=()" in response["Permissions-Policy"], what
    assert "geolocation=()" in response["Permissions-Policy"], what
    assert "no-store" in response["Cache-Control"], (what, response["Cache-Control"])


@pytest.fixture
def submitted(offline, people):
    access_request = services.request_submit(
        beneficiary={"username": "ada", "first_name": "Ada"},
        endpoint=offline,
        operation="create_account",
        requester=people.alice,
        entitlements=["crm-read"],
        justification="new hire",
    )
    services.request_approve(access_request=access_request, by=people.bob)
    return access_request


@pytest.fixture
def root(db):
    return factories.user("root", "admins", "approvers", "requesters", superuser=True)


def test_the_header_values_come_from_the_settings(settings):
    assert csp_header(settings.SECURE_CSP) == CSP
    assert csp_header({"a": ["x", "y"], "b": [], "upgrade-insecure-requests": True}) == (
        "a x y; upgrade-insecure-requests"
    )
    assert permissions_header({"camera": [], "fullscreen": ["self"]}) == (
        "camera=(), fullscreen=(self)"
    )


def test_every_console_page_has_the_headers_and_no_inline_code(client, submitted, root):
    client.force_login(root)
    urls = dict(pages(submitted))
    urls["live partial"] = submitted.get_absolute_url()
    for name, url in urls.items():
        headers = {"HX-Request": "true"} if name == "live partial" else {}
        response = client.get(url, headers=headers)
        assert response.status_code == 200, name
        assert_secure_headers(response, name)
        assert inline_code(response.content.decode()) == [], name


def test_login_error_and_redirect_pages_have_the_headers(client, submitted, people):
    assert_secure_headers(client.get(reverse("login")), "login")
    assert inline_code(client.get(reverse("login")).content.decode()) == []
    assert_secure_headers(client.get(reverse("tickets:board")), "redirect to login")
    client.force_login(people.alice)
    refused = client.get(reverse("tickets:board"))
    assert refused.status_code == 403
    assert_secure_headers(refused, "403")
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    assert_secure_headers(missing, "404")
    assert inline_code(refused.content.decode() + missing.content.decode()) == []


def admin_pages(sample: dict) -> dict[str, str]:
    """The admin's index, and every registered model's list, add and change pages."""
    urls = {"index": reverse("admin:index")}
    for model in admin.site._registry:
        opts = model._meta
        urls[f"{opts.model_name} list"] = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_changelist"
        )
        try:
            urls[f"{opts.model_name} add"] = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_add"
            )
        except NoReverseMatch:
            pass
        obj = sample.get(model) or model._default_manager.first()
        if obj is not None:
            urls[f"{opts.model_name} change"] = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
            )
    return urls


def test_every_admin_page_has_the_headers_and_no_inline_code(client, submitted, root):
    from connections.models import ApiCall, Connection

    connection = Connection.objects.get(name="offline")
    ApiCall.objects.create(connection=connection, call_name="TicketCreate", outcome="ok")
    Connection.objects.filter(pk=connection.pk).update(last_test_ok=False)
    client.force_login(root)
    urls = admin_pages({AccessRequest: submitted})
    urls["import"] = reverse("admin:connections_connection_import")
    urls["preview"] = reverse("admin:connections_connection_preview", args=[connection.pk])
    checked = 0
    for name, url in urls.items():
        response = client.get(url)
        if response.status_code == 403:  # an add page of a read-only model
            continue
        assert response.status_code == 200, (name, response.status_code)
        assert_secure_headers(response, name)
        assert inline_code(response.content.decode()) == [], name
        checked += 1
    assert checked >= 20, urls
    html = client.get(reverse("admin:connections_connection_changelist")).content.decode()
    assert 'class="admin-badge admin-badge-bad"' in html and "css/admin.css" in html


def test_api_answers_have_the_headers(client, submitted):
    _, token = api_client_create(name="upstream")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    answers = {
        "health": client.get("/api/v1/health"),
        "openapi": client.get("/api/v1/openapi.json"),
        "list": client.get("/api/v1/requests", **bearer),
        "unauthenticated": client.get("/api/v1/requests"),
        "not found": client.get("/api/v1/nothing-here"),
        "webhook": client.post("/api/v1/hooks/otrs/offline", "{}", content_type="application/json"),
    }
    for name, response in answers.items():
        assert response["Content-Type"].startswith("application/json"), name
        assert_secure_headers(response, name)


def test_no_template_holds_inline_script_handlers_or_styles():
    """The same rule on the sources, for templates the crawls above do not reach."""
    found = {}
    for template in sorted((ROOT / "templates").rglob("*.html")):
        problems = inline_code(template.read_text())
        if problems:
            found[str(template.relative_to(ROOT))] = problems
    assert found == {}


def test_a_page_that_sets_its_own_caching_keeps_it(rf, settings):
    from django.http import HttpResponse

    from otrsbridge.headers import SecurityHeadersMiddleware

    def view(request):
        response = HttpResponse("x")
        response["Cache-Control"] = "max-age=60"
        return response

    response = SecurityHeadersMiddleware(view)(rf.get("/"))
    assert response["Cache-Control"] == "max-age=60"
    assert response["Content-Security-Policy"] == CSP


def test_debug_error_pages_keep_their_inline_styles(rf, settings):
    """Django's technical 404 and 500 pages (DEBUG only) style themselves inline."""
    from django.http import HttpResponse

    from otrsbridge.headers import SecurityHeadersMiddleware

    settings.DEBUG = True
    middleware = SecurityHeadersMiddleware(lambda request: HttpResponse("x", status=500))
    response = middleware(rf.get("/"))
    assert not response.has_header("Content-Security-Policy")
    assert response.has_header("Permissions-Policy")
    ok = SecurityHeadersMiddleware(lambda request: HttpResponse("x"))(rf.get("/"))
    assert ok["Content-Security-Policy"] == CSP
