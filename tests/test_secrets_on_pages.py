"""No secret on any page: every admin and console page, as every role, in every encoding.

One world holds each kind of secret the bridge keeps: a connection password (a secret
variable of the package), a webhook secret, an OTRS session id (ConnectionToken), a new API
client's token, and rows as an older, careless client might have written them (a secret in
a call's URL, excerpts and errors, in the connection's last error). Then every admin URL of
every registered model (changelist, add, change, history, delete, and each custom view:
preview, test, export, import) and every console URL is opened as the superuser, an
identity admin, an approver, an operator, a requester and a staff user who may only view,
and each page is searched for each secret as it is, HTML-escaped, URL-quoted, JSON-escaped
and in base64.
"""

from __future__ import annotations

import base64
import html
import io
from types import SimpleNamespace

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from connections.masking import secret_forms
from connections.models import Connection, ConnectionToken
from tests import factories
from tests.simfixtures import sim_factory  # noqa: F401  (fixture)
from tickets import services
from tickets.api import api_client_create
from tickets.models import (
    AccessRequest,
    Account,
    AccountEntitlement,
    CallbackDelivery,
    TicketNote,
)

pytestmark = pytest.mark.django_db

# Characters that each encoding changes, so every form differs from the raw secret.
PASSWORD = 'Zebra/Pass+7741 &<"x">'
HOOK_SECRET = "Hook/Secret+9913 &<y>"
ROLES = ["superuser", "identity admin", "approver", "operator", "requester", "staff viewer"]


def encodings(secret: str) -> set[str]:
    """The secret as a page could carry it: raw, escaped, quoted, JSON-escaped, base64."""
    raw = secret.encode()
    b64 = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    forms = set(secret_forms([secret])) | {v.rstrip("=") for v in b64} | b64
    return (
        forms | {html.escape(form) for form in forms} | {html.escape(form, False) for form in forms}
    )


def person(role: str):
    if role == "superuser":
        return factories.user("root", superuser=True)
    if role == "staff viewer":
        viewer = factories.user("viewer")
        viewer.is_staff = True
        viewer.save()
        viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
        return factories.user("viewer")  # fresh: no permission cache
    group = {
        "identity admin": "admins",
        "approver": "approvers",
        "operator": "operators",
        "requester": "requesters",
    }[role]
    return factories.user(f"someone-{group}", group)


@pytest.fixture
def world(sim_factory, people):  # noqa: F811
    sim = sim_factory(password=PASSWORD)
    leaky = factories.leaky_world(
        sim, secret=PASSWORD, requester=people.alice, approver=people.carol
    )
    connection, session_id = leaky.connection, leaky.session_id
    connection.set_webhook_secret(HOOK_SECRET)
    connection.save()
    assert leaky.task.ticket_id
    iga, api_token = api_client_create(name="iga")
    callback_secret = services.client_set_callback(client=iga, url="http://127.0.0.1:9/hook")
    note = TicketNote.objects.create(
        task=leaky.task, kind="cancelled", status="failed", last_error="refused"
    )
    delivery = CallbackDelivery.objects.create(
        client=iga, request=leaky.request, request_status="completed", body="{}", status="failed"
    )
    factories.careless_api_call(
        connection,
        ref=f"task:{leaky.task.pk}",
        base_url=sim.base_url,
        secret=HOOK_SECRET,
        session_id=session_id,
    )
    account = Account.objects.create(
        identity=leaky.request.beneficiary, endpoint=leaky.request.endpoint, name="grace"
    )
    AccountEntitlement.objects.create(account=account, entitlement="crm-sales")
    Connection.objects.filter(pk=connection.pk).update(last_test_message=f"ok as {session_id}")
    ConnectionToken.objects.filter(connection=connection).update(
        last_error=f"refresh failed with {session_id}"
    )
    secrets = {
        "password": PASSWORD,
        "webhook secret": HOOK_SECRET,
        "session id": session_id,
        "api token": api_token,
        "callback secret": callback_secret,
    }
    return SimpleNamespace(
        connection=connection,
        request=leaky.request,
        task=leaky.task,
        api_token=api_token,
        note=note,
        delivery=delivery,
        secrets={name: encodings(value) for name, value in secrets.items()},
    )


def assert_no_secret(world, where: str, body: bytes) -> None:
    text = body.decode("utf-8", errors="replace")
    for name, forms in world.secrets.items():
        found = sorted(form for form in forms if form in text)
        assert not found, f"{where} shows the {name} as {found}"


# --- the admin -----------------------------------------------------------------------------


def _fill(route: str, obj) -> str | None:
    """The path of one admin route for `obj`; None when the route needs what we lack."""
    path = route
    for placeholder in ("<path:object_id>", "<int:pk>"):
        if placeholder in path:
            if obj is None:
                return None
            path = path.replace(placeholder, str(obj.pk))
    return None if "<" in path else path


def admin_urls(world) -> list[tuple[str, str]]:
    """(url, method) for every route of every ModelAdmin, filled with one of its objects."""
    urls: list[tuple[str, str]] = [("/admin/", "GET")]
    for model, model_admin in admin.site._registry.items():
        prefix = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        urls.append((f"/admin/{model._meta.app_label}/", "GET"))
        obj = model._default_manager.order_by("pk").first()
        for pattern in model_admin.get_urls():
            if not isinstance(pattern, URLPattern):
                continue
            route = str(pattern.pattern)
            if "<path:object_id>/" == route:  # the old redirect to .../change/
                continue
            path = _fill(route, obj)
            if path is not None:
                urls.append((prefix + path, "GET"))
    connection = world.connection.pk
    urls += [
        (f"/admin/connections/connection/{connection}/preview/?task={world.task.pk}", "GET"),
        (f"/admin/connections/connection/{connection}/test/", "POST"),
        ("/admin/connections/connection/import/configure/", "GET"),
    ]
    return urls


@pytest.mark.parametrize("role", ROLES)
def test_no_secret_on_any_admin_page(world, role):
    client = Client()
    client.force_login(person(role))
    opened = 0
    for url, method in admin_urls(world):
        response = client.get(url) if method == "GET" else client.post(url)
        if response.status_code == 405:  # a view that only answers POST: press its button
            response = client.post(url)
        assert response.status_code < 500, (url, response.status_code)
        assert_no_secret(world, f"{role}: {method} {url}", response.content)
        opened += response.status_code == 200
    if role in ("superuser", "staff viewer", "identity admin"):
        assert opened > 40  # the crawl really saw the pages, not only login redirects


def test_the_crawl_covers_every_admin_view_of_connections(world):
    """Each custom admin view of a connection is in the crawl (a new one must be too)."""
    crawled = {url.split("?")[0] for url, _ in admin_urls(world)}
    pk = world.connection.pk
    for view in ("change", "history", "delete", "preview", "test", "export"):
        assert f"/admin/connections/connection/{pk}/{view}/" in crawled, view
    assert "/admin/connections/connection/import/" in crawled


def test_the_staff_viewer_sees_the_connection_and_that_a_webhook_secret_is_set(world):
    client = Client()
    client.force_login(person("staff viewer"))
    page = client.get(f"/admin/connections/connection/{world.connection.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    text = page.content.decode()
    assert "Webhook secret" in text and "Set (never shown)" in text
    assert_no_secret(world, "the viewer's change page", page.content)


def test_the_import_flow_never_shows_the_secret_typed(world):
    """Upload → variables (a secret typed, a bad document) → preview → apply."""
    client = Client()
    client.force_login(person("superuser"))
    package = factories.PACKAGE.read_bytes()
    upload = io.BytesIO(package)
    upload.name = factories.PACKAGE.name
    response = client.post("/admin/connections/connection/import/", {"package": upload})
    assert response.status_code == 302
    configure = "/admin/connections/connection/import/configure/"
    values = {
        "var_CONNECTION": "second",
        "var_BASEURL": "http://127.0.0.1:9/otrs",
        "var_USERNAME": "bridge",
        "var_PASSWORD": PASSWORD,
    }
    for step in (client.get(configure), client.post(configure, values)):
        assert step.status_code == 200
        assert_no_secret(world, "the import pages", step.content)
    applied = client.post("/admin/connections/connection/import/apply/", follow=True)
    assert Connection.objects.filter(name="second").exists()
    assert_no_secret(world, "the page after the import", applied.content)
    for cookie in client.cookies.values():
        assert_no_secret(world, f"cookie {cookie.key}", cookie.value.encode())


# --- the console -----------------------------------------------------------------------


def console_urls(world) -> dict[str, str]:
    """Every named console route, filled in; the test fails when a route is missing here."""
    access_request: AccessRequest = world.request
    connection = world.connection.name
    return {
        "tickets:overview": reverse("tickets:overview"),
        "tickets:board": reverse("tickets:board"),
        "tickets:request_list": reverse("tickets:request_list"),
        "tickets:submit": reverse("tickets:submit"),
        "tickets:submit_entitlements": reverse("tickets:submit_entitlements")
        + f"?endpoint={access_request.endpoint_id}",
        "tickets:request_detail": access_request.get_absolute_url(),
        "tickets:request_approve": reverse("tickets:request_approve", args=[access_request.pk]),
        "tickets:request_reject": reverse("tickets:request_reject", args=[access_request.pk]),
        "tickets:request_cancel": reverse("tickets:request_cancel", args=[access_request.pk]),
        "tickets:inbox": reverse("tickets:inbox"),
        "tickets:tasks_retry": reverse("tickets:tasks_retry"),
        "tickets:task_retry": reverse("tickets:task_retry", args=[world.task.pk]),
        "tickets:task_cancel": reverse("tickets:task_cancel", args=[world.task.pk]),
        "tickets:note_retry": reverse("tickets:note_retry", args=[world.note.pk]),
        "tickets:delivery_redeliver": reverse(
            "tickets:delivery_redeliver", args=[world.delivery.pk]
        ),
        "tickets:job_run": reverse("tickets:job_run", args=["poll"]),
        "tickets:identity_list": reverse("tickets:identity_list"),
        "tickets:identity": access_request.beneficiary.get_absolute_url(),
        "connections:list": reverse("connections:list"),
        "connections:detail": reverse("connections:detail", args=[connection]),
        "connections:test": reverse("connections:test", args=[connection]),
        "login": reverse("login"),
        "healthz": reverse("healthz"),
        "readyz": reverse("readyz"),
        "metrics": reverse("metrics"),
    }


def _named_routes(patterns, namespace: str = "") -> set[str]:
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            # Not console pages; the SCIM service's secrets are tests/test_scim_service.py's.
            if pattern.namespace in ("admin", "api", "scim"):
                continue
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= _named_routes(pattern.url_patterns, inner)
        elif pattern.name:
            names.add(namespace + pattern.name)
    return names


def test_the_console_crawl_names_every_console_route(world):
    routes = _named_routes(get_resolver().url_patterns) - {"logout"}
    assert routes == set(console_urls(world))


@pytest.mark.parametrize("role", ROLES)
def test_no_secret_on_any_console_page(world, role):
    client = Client()
    client.force_login(person(role))
    # The pages first, as they are; then the buttons that only report (test, run a job),
    # following their redirect to the page that shows the message.
    for name, url in console_urls(world).items():
        for headers in ({}, {"HX-Request": "true"}):
            response = client.get(url, headers=headers)
            assert response.status_code < 500, (name, response.status_code)
            assert_no_secret(world, f"{role}: {name}", response.content)
    for name in ("connections:test", "tickets:job_run"):
        response = client.post(console_urls(world)[name], follow=True)
        assert response.status_code < 500, (name, response.status_code)
        assert_no_secret(world, f"{role}: after {name}", response.content)
    for cookie in client.cookies.values():
        assert_no_secret(world, f"{role}: cookie {cookie.key}", cookie.value.encode())


def test_no_secret_in_the_api_answers(world):
    client = Client(headers={"Authorization": f"Bearer {world.api_token}"})
    world.secrets.pop("api token")  # the caller sends it; the answers must not echo it
    for url in ("/api/v1/requests", "/api/v1/health", "/api/v1/openapi.json"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_secret(world, url, response.content)


def test_every_password_field_of_the_connection_form_has_a_view_only_stand_in():
    """A new write-only field must say what a view-only page shows instead of its value."""
    from django import forms

    from connections.admin import WRITE_ONLY_FIELDS
    from connections.forms import ConnectionForm

    secret_fields = {
        name
        for name, field in ConnectionForm.base_fields.items()
        if isinstance(field.widget, forms.PasswordInput)
    }
    assert secret_fields and secret_fields <= set(WRITE_ONLY_FIELDS)
