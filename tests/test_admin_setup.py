"""Setup in the Django admin: connection editor with write-only secrets and validated documents,
package import (upload → variables → preview → apply), test and preview buttons, read-only
history."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.contrib import admin
from django.urls import reverse

from connections import crypto
from connections.models import ApiCall, Connection, ConnectionToken
from connections.packages import apply_import, load_package, plan_import
from tests import factories
from tests.test_packages import (
    BASEURL,
    CONNECTION_JSON,
    SHIPPED,
    _corrected_saviynt_documents,
    _saviynt_zip,
)
from tickets.models import Account
from tickets.services import accounts

PASSWORD = "Adm1n-page-secret-pw"
VALUES = {"BASEURL": BASEURL, "USERNAME": "bridge", "PASSWORD": PASSWORD}

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection() -> Connection:
    apply_import(plan_import(load_package(SHIPPED.read_bytes(), SHIPPED.name), VALUES))
    return Connection.objects.get(name="otrs")


def _change_url(connection: Connection) -> str:
    return reverse("admin:connections_connection_change", args=[connection.pk])


def _form_data(connection: Connection, **changes) -> dict:
    """What the change form posts back when the admin saves without touching anything."""
    data = {
        "name": connection.name,
        "description": connection.description,
        "enabled": "on",
        "connection_json": json.dumps(connection.connection_json, indent=2),
        "create_ticket_json": json.dumps(connection.create_ticket_json, indent=2),
        "ticket_status_json": json.dumps(connection.ticket_status_json, indent=2),
        "config_json": json.dumps(connection.config_json, indent=2),
        "webhook_secret": "",
        "poll_minutes": connection.poll_minutes,
        "full_sweep_minutes": connection.full_sweep_minutes,
        "provision_minutes": connection.provision_minutes,
        "batch_size": connection.batch_size,
        "max_status_check_days": connection.max_status_check_days,
        "reopen_watch_days": connection.reopen_watch_days,
        "completion_email_subject": connection.completion_email_subject,
        "completion_email_template": connection.completion_email_template,
    }
    data.update(changes)
    return data


def _password(connection: Connection) -> str:
    connection.refresh_from_db()
    return connection.connection_document()["authentications"]["otrsSession"]["properties"][
        "password"
    ]


# --- the connection editor ---------------------------------------------------------------


def test_change_form_shows_the_placeholder_and_never_the_secret(admin_client, connection):
    connection.set_webhook_secret("hook-secret-value")
    connection.save()
    html = admin_client.get(_change_url(connection)).content.decode()
    assert "********" in html
    assert PASSWORD not in html
    assert "hook-secret-value" not in html
    for button in ("Test connection", "Preview ticket", "Export package", "View in console"):
        assert button in html
    assert connection.get_absolute_url() in html


def test_saving_with_the_placeholder_keeps_the_secret(admin_client, connection):
    connection.set_webhook_secret("hook-secret-value")
    connection.save()
    response = admin_client.post(_change_url(connection), _form_data(connection, poll_minutes=7))
    assert response.status_code == 302, response.content.decode()
    assert _password(connection) == PASSWORD
    assert connection.poll_minutes == 7
    assert connection.webhook_secret == "hook-secret-value"  # blank field keeps it


def test_a_new_secret_replaces_the_old_one(admin_client, connection):
    document = json.loads(json.dumps(connection.connection_json))
    document["authentications"]["otrsSession"]["properties"]["password"] = "brand-new-pw"
    data = _form_data(connection, connection_json=json.dumps(document), webhook_secret="new-hook")
    assert admin_client.post(_change_url(connection), data).status_code == 302
    assert _password(connection) == "brand-new-pw"
    assert connection.webhook_secret == "new-hook"


def test_an_invalid_document_shows_the_spec_message_and_stores_nothing(admin_client, connection):
    before = Connection.objects.filter(pk=connection.pk).values()[0]
    status = json.loads(json.dumps(connection.ticket_status_json))
    del status["call"][0]["ticketStatusPath"]
    data = _form_data(
        connection, ticket_status_json=json.dumps(status), create_ticket_json='{"call": [}'
    )
    response = admin_client.post(_change_url(connection), data)
    html = response.content.decode()
    assert response.status_code == 200
    assert "CreateTicketJSON: not valid JSON at line 1 column 11 (expecting value)" in html
    assert Connection.objects.filter(pk=connection.pk).values()[0] == before

    data = _form_data(connection, ticket_status_json=json.dumps(status))
    html = admin_client.post(_change_url(connection), data).content.decode()
    assert "TicketStatusJSON: call[0]: ticketStatusPath is required" in html
    assert PASSWORD not in html
    assert Connection.objects.filter(pk=connection.pk).values()[0] == before


def test_a_connection_can_be_added_with_valid_documents(admin_client, connection):
    add_url = reverse("admin:connections_connection_add")
    assert admin_client.get(add_url).status_code == 200
    document = json.loads(json.dumps(connection.connection_json))
    document["authentications"]["otrsSession"]["properties"]["password"] = "second-connection-pw"
    data = _form_data(connection, name="otrs-two", connection_json=json.dumps(document))
    assert admin_client.post(add_url, data).status_code == 302
    assert _password(Connection.objects.get(name="otrs-two")) == "second-connection-pw"


def test_a_secret_typed_into_a_form_that_fails_is_not_sent_back(admin_client, connection):
    document = json.loads(json.dumps(connection.connection_json))
    document["authentications"]["otrsSession"]["properties"]["password"] = "typed-but-not-saved"
    data = _form_data(connection, connection_json=json.dumps(document), poll_minutes=0)
    html = admin_client.post(_change_url(connection), data).content.decode()
    assert "typed-but-not-saved" not in html
    assert "the new secrets typed here were not kept; type them again" in html
    assert _password(connection) == PASSWORD


def test_changelist_shows_verdict_token_expiry_and_import_button(admin_client, connection):
    html = admin_client.get(reverse("admin:connections_connection_changelist")).content.decode()
    assert "Never" in html  # not tested yet, said in words
    assert "no token yet" in html
    assert reverse("admin:connections_connection_import") in html


def test_export_button_downloads_a_package_without_secrets(admin_client, connection):
    response = admin_client.get(
        reverse("admin:connections_connection_export", args=[connection.pk])
    )
    assert response["Content-Disposition"] == 'attachment; filename="otrs.json"'
    assert PASSWORD not in response.content.decode()
    assert json.loads(response.content)["variables"]["PASSWORD"]["secret"] is True


def test_export_action_downloads_the_selected_connections(admin_client, connection):
    response = admin_client.post(
        reverse("admin:connections_connection_changelist"),
        {"action": "export_selected", "_selected_action": [connection.pk]},
    )
    assert json.loads(response.content)["connections"][0]["name"] == "otrs"
    assert PASSWORD not in response.content.decode()


# --- test and preview -----------------------------------------------------------------------


def test_test_connection_button_shows_the_verdict_against_the_simulator(admin_client, sim):
    package = load_package(SHIPPED.read_bytes(), SHIPPED.name)
    values = {"BASEURL": sim.base_url, "USERNAME": "bridge", "PASSWORD": "bridge-demo-password"}
    apply_import(plan_import(package, values))
    connection = Connection.objects.get(name="otrs")
    url = reverse("admin:connections_connection_test", args=[connection.pk])
    assert admin_client.get(url).status_code == 405  # it changes state: POST only
    html = admin_client.post(url).content.decode()
    assert "Test passed:" in html
    assert "bridge-demo-password" not in html
    connection.refresh_from_db()
    assert connection.last_test_ok is True


def test_preview_renders_the_create_request_for_the_sample_context(admin_client, connection):
    html = admin_client.get(
        reverse("admin:connections_connection_preview", args=[connection.pk])
    ).content.decode()
    assert "Rendered from <strong>the sample context</strong>" in html
    assert f"{BASEURL}/Ticket" in html
    assert "BR-SAMPLE0001" in html
    assert PASSWORD not in html


def test_preview_for_a_task_uses_the_settings_hook(admin_client, connection, settings):
    settings.OTRSBRIDGE_TASK_CONTEXT = "tests.test_admin_setup.fake_task_context"
    url = reverse("admin:connections_connection_preview", args=[connection.pk])
    html = admin_client.get(url, {"task": "77"}).content.decode()
    assert "Rendered from <strong>task 77</strong>" in html
    assert "BR-TASK77" in html
    html = admin_client.get(url, {"task": "404"}).content.decode()
    assert "task 404 cannot be loaded" in html

    settings.OTRSBRIDGE_TASK_CONTEXT = ""
    html = admin_client.get(url, {"task": "77"}).content.decode()
    assert "OTRSBRIDGE_TASK_CONTEXT is not set" in html


def test_preview_says_which_variable_a_context_lacks(admin_client, connection):
    document = json.loads(json.dumps(connection.create_ticket_json))
    document["call"][0]["httpParams"]["Ticket"]["Title"] = "${endpoint.noSuchField}"
    Connection.objects.filter(pk=connection.pk).update(create_ticket_json=document)
    html = admin_client.get(
        reverse("admin:connections_connection_preview", args=[connection.pk])
    ).content.decode()
    assert "The template cannot be rendered:" in html
    assert "${endpoint.noSuchField} has no value" in html


def fake_task_context(task_id: str) -> dict:
    """Stands in for tickets.services.task_context, which connections must not import."""
    if task_id == "404":
        raise LookupError("no task 404")
    from connections.services import sample_context

    return {
        **sample_context(Connection.objects.get(name="otrs")),
        "correlationKey": f"BR-TASK{task_id}",
    }


# --- package import -------------------------------------------------------------------------


def _upload(client, filename: str, data: bytes):
    upload = io.BytesIO(data)
    upload.name = filename
    return client.post(reverse("admin:connections_connection_import"), {"package": upload})


def test_import_flow_upload_variables_preview_apply(admin_client):
    response = _upload(admin_client, SHIPPED.name, SHIPPED.read_bytes())
    assert response["Location"] == reverse("admin:connections_connection_import_configure")
    configure = reverse("admin:connections_connection_import_configure")
    html = admin_client.get(configure).content.decode()
    assert "@BASEURL@" in html
    assert 'type="password" name="var_PASSWORD"' in html

    # The password is missing: the form says which variable, and nothing is written.
    html = admin_client.post(
        configure, {"var_BASEURL": BASEURL, "var_USERNAME": "bridge"}
    ).content.decode()
    assert "This field is required." in html
    assert Connection.objects.count() == 0

    values = {
        "var_BASEURL": BASEURL,
        "var_USERNAME": "bridge",
        "var_PASSWORD": PASSWORD,
        "var_QUEUE": "Raw",
    }
    html = admin_client.post(configure, values).content.decode()
    assert "create connection otrs" in html
    assert PASSWORD not in html
    assert Connection.objects.count() == 0

    # Going back shows the values again, except the password.
    html = admin_client.get(configure).content.decode()
    assert BASEURL in html and PASSWORD not in html

    response = admin_client.post(reverse("admin:connections_connection_import_apply"))
    assert response["Location"] == reverse("admin:connections_connection_changelist")
    assert _password(Connection.objects.get(name="otrs")) == PASSWORD
    assert (
        admin_client.post(reverse("admin:connections_connection_import_apply")).status_code == 302
    )


def test_a_bad_upload_is_refused_on_the_upload_page(admin_client):
    html = _upload(admin_client, "package.json", b"not json").content.decode()
    assert "package.json: not valid JSON at line 1 column 1 (expecting value)" in html


def test_saviynt_zip_is_fixed_in_the_import_form(admin_client):
    _upload(admin_client, "OTRS.zip", _saviynt_zip())
    configure = reverse("admin:connections_connection_import_configure")
    html = admin_client.get(configure).content.decode()
    assert "OTRS_Tickets: CreateTicketJSON" in html
    assert "}}}}" in html  # the document from the zip, editable

    form = {
        "var_HOSTNAME": "otrs.tenant.example.invalid",
        "var_USERNAME": "iga-agent",
        "doc_0_connectionJSON": json.dumps(CONNECTION_JSON),
        "doc_0_createTicketJSON": admin_client.get(configure)
        .context["form"]["doc_0_createTicketJSON"]
        .value(),
        "doc_0_ticketStatusJSON": _corrected_saviynt_documents()["ticketStatusJSON"],
    }
    # A missing variable: the form comes back, with the pasted password masked.
    response = admin_client.post(configure, {**form, "var_HOSTNAME": ""})
    assert "This field is required." in response.content.decode()
    assert "Sh1ny-agent-pa55word" not in response.content.decode()
    form["doc_0_connectionJSON"] = response.context["form"]["doc_0_connectionJSON"].value()

    response = admin_client.post(configure, form)
    html = response.content.decode()
    assert (
        "OTRS_Tickets: CreateTicketJSON: call[0].httpParams: not valid JSON at line 1 column 386 (extra data)"
        in html
    )
    assert response.context["form"].errors["doc_0_createTicketJSON"]
    assert "Sh1ny-agent-pa55word" not in html  # the pasted ConnectionJSON comes back masked
    assert Connection.objects.count() == 0

    form["doc_0_connectionJSON"] = response.context["form"]["doc_0_connectionJSON"].value()
    assert "********" in form["doc_0_connectionJSON"]
    form["doc_0_createTicketJSON"] = _corrected_saviynt_documents()["createTicketJSON"]
    html = admin_client.post(configure, form).content.decode()
    assert "create connection OTRS_Tickets" in html

    admin_client.post(reverse("admin:connections_connection_import_apply"))
    connection = Connection.objects.get(name="OTRS_Tickets")
    assert connection.connection_document()["authentications"]["userAuth"]["properties"][
        "password"
    ] == ("Sh1ny-agent-pa55word")


def test_import_needs_the_add_and_change_permissions(client, django_user_model):
    staff = django_user_model.objects.create_user(
        "viewer", password="pw-for-tests-only", is_staff=True
    )
    client.force_login(staff)
    assert client.get(reverse("admin:connections_connection_import")).status_code == 403


# --- read-only history --------------------------------------------------------------------


def test_api_call_admin_is_read_only(admin_client, connection):
    call = ApiCall.objects.create(
        connection=connection,
        call_name="TicketCreate",
        method="POST",
        url=f"{BASEURL}/Ticket",
        status_code=200,
        outcome=ApiCall.Outcome.OK,
    )
    changelist = admin_client.get(reverse("admin:connections_apicall_changelist")).content.decode()
    assert "TicketCreate" in changelist
    assert admin_client.get(reverse("admin:connections_apicall_add")).status_code == 403
    change_url = reverse("admin:connections_apicall_change", args=[call.pk])
    page = admin_client.get(change_url).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.post(change_url, {"method": "GET"}).status_code == 403
    assert (
        admin_client.get(reverse("admin:connections_apicall_delete", args=[call.pk])).status_code
        == 403
    )


def test_token_admin_never_shows_the_token(admin_client, connection):
    token = ConnectionToken.objects.create(
        connection=connection,
        auth_name="otrsSession",
        token_encrypted=crypto.encrypt("SessIdValue0123456789abcdefABCDE"),
    )
    for url in (
        reverse("admin:connections_connectiontoken_changelist"),
        reverse("admin:connections_connectiontoken_change", args=[token.pk]),
    ):
        html = admin_client.get(url).content.decode()
        assert "SessIdValue0123456789abcdefABCDE" not in html
        assert token.token_encrypted not in html


def test_security_system_page_shows_endpoints_inline(admin_client, connection):
    from connections.models import Endpoint, SecuritySystem

    system = SecuritySystem.objects.create(name="apps", service_desk_connection=connection)
    Endpoint.objects.create(name="crm", security_system=system, attributes={"queue": "Raw"})
    html = admin_client.get(
        reverse("admin:connections_securitysystem_change", args=[system.pk])
    ).content.decode()
    assert 'value="crm"' in html
    assert admin_client.get(reverse("admin:connections_endpoint_changelist")).status_code == 200


def _token_on_page(html: str) -> str:
    """The token as the one-time page shows it, in a read-only input."""
    return re.search(r'value="([^"]+)" id="api-token"', html)[1]


def test_api_client_token_is_shown_once_and_stored_hashed(client, django_user_model):
    from tickets.models import ApiClient

    admin_user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin_user)
    response = client.post(
        "/admin/tickets/apiclient/add/",
        {"name": "iga", "trusted": "on", "active": "on"},
        follow=True,
    )
    assert response.status_code == 200
    api_client = ApiClient.objects.get(name="iga")
    token = _token_on_page(response.content.decode())
    assert token.startswith(api_client.token_prefix) and token not in api_client.token_hash
    page = client.get(f"/admin/tickets/apiclient/{api_client.pk}/change/")
    assert token not in page.content.decode()
    assert client.get("/api/v1/requests", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_a_new_api_token_travels_in_no_cookie_and_no_session(client, django_user_model):
    """The token is on the page that answers the POST, once; no message, cookie or session
    row carries it, and neither a reload nor any later page shows it."""
    from django.contrib.sessions.models import Session

    from tickets.models import ApiClient

    admin_user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin_user)
    add = "/admin/tickets/apiclient/add/"
    response = client.post(add, {"name": "iga", "active": "on"})
    assert response.status_code == 200  # a page, not a redirect that a message would follow
    html = response.content.decode()
    token = _token_on_page(html)
    assert html.count(token) == 1 and "Copy this token now" in html
    assert "no-store" in response["Cache-Control"]
    assert "messages" not in response.cookies
    for cookie in [*response.cookies.values(), *client.cookies.values()]:
        assert token not in cookie.value and token[:20] not in cookie.value
    for session in Session.objects.all():
        assert token not in json.dumps(session.get_decoded())
    assert token not in json.dumps(dict(client.session))
    assert not list(response.wsgi_request._messages)
    # A reload posts the form again: the name is taken, and no token is shown.
    again = client.post(add, {"name": "iga", "active": "on"})
    assert again.status_code == 200 and token not in again.content.decode()
    assert 'id="api-token"' not in again.content.decode()
    assert ApiClient.objects.count() == 1
    client_pk = ApiClient.objects.get().pk
    for url in (
        "/admin/tickets/apiclient/",
        f"/admin/tickets/apiclient/{client_pk}/change/",
        f"/admin/tickets/apiclient/{client_pk}/history/",
        "/admin/",
    ):
        assert token not in client.get(url).content.decode(), url


def test_the_admins_role_opens_every_list_of_setup_and_sees_an_accounts_entitlements(
    client, offline
):
    """A member of the admins role who is no superuser: every registered list answers, and
    an account's page shows its entitlements (an inline with a permission of its own)."""
    accounts.import_rows(
        endpoint=offline,
        rows=[{"username": "ada", "account_name": "ada", "entitlements": "crm-read"}],
        actor="test",
    )
    client.force_login(factories.user("root", "admins"))
    ours = [m for m in admin.site._registry if m._meta.app_label in ("tickets", "connections")]
    assert len(ours) >= 16
    for model in ours:
        meta = model._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        assert client.get(url).status_code == 200, url
    account = Account.objects.get(name="ada")
    page = client.get(reverse("admin:tickets_account_change", args=[account.pk])).content.decode()
    assert "crm-read" in page
