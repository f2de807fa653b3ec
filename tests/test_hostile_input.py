"""Hostile bodies and form input: JSON with repeated keys or nested too deeply, decision
comments that cannot be kept, NUL in any text, email addresses with line breaks, and
usernames that would make a link point elsewhere. Each is refused with a message that
names what is wrong and where, and nothing is written."""

from __future__ import annotations

import copy
import json
import posixpath
import re
from urllib.parse import quote, unquote

import pytest
from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.test import Client, RequestFactory
from django.urls import resolve, reverse

from connections.forms import JSONDocumentField
from connections.models import Connection
from connections.paths import MAX_JSON_DEPTH
from tests.test_console_actions import pending  # noqa: F401  (a fixture)
from tickets import api, api_schemas, limits, services, validators
from tickets.forms import DecisionForm, RequestFilterForm, SubmitRequestForm
from tickets.models import AccessRequest, Identity

pytestmark = pytest.mark.django_db

URL = "/api/v1/requests"


@pytest.fixture
def token(db) -> str:
    return api.api_client_create(name="iga")[1]


def _post(client: Client, path: str, token: str, raw: str):
    return client.post(
        path, data=raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


# --- JSON with repeated keys or nested too deeply --------------------------------------------

BENEFICIARY = '{"username": "ada", "email": "ada@example.com"}'


def _body(rest: str) -> str:
    """A submit body as text, so a key can be written twice."""
    return '{"beneficiary": ' + BENEFICIARY + ', "endpoint": "crm", ' + rest + "}"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (_body('"endpoint": "other", "operation": "create_account"'), "endpoint"),
        (
            '{"beneficiary": {"username": "ada", "username": "admin"}, "endpoint": "crm", '
            '"operation": "create_account"}',
            "username",
        ),
        (_body('"operation": "add_access", "entitlements": [{"a": 1, "a": 2}]'), "a"),
    ],
)
def test_the_api_refuses_a_repeated_key_naming_it(client, offline, token, raw, key):
    answer = _post(client, URL, token, raw)
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_json"
    assert answer.json()["detail"] == f"The body is not valid JSON: duplicate key {key!r}."
    assert not AccessRequest.objects.exists() and not Identity.objects.exists()


def test_the_api_refuses_a_repeated_key_in_a_cancel_body(client, offline, token):
    answer = _post(client, f"{URL}/1/cancel", token, '{"reason": "a", "reason": "b"}')
    # The request does not exist: the body is never read, so this is a 404 …
    assert answer.status_code == 404
    first = _post(client, URL, token, _body('"operation": "create_account"'))
    pk = first.json()["id"]
    answer = _post(client, f"{URL}/{pk}/cancel", token, '{"reason": "a", "reason": "b"}')
    # … and for one that exists, the repeated key is refused and nothing is cancelled.
    assert answer.status_code == 400
    assert answer.json()["detail"] == "The body is not valid JSON: duplicate key 'reason'."
    assert AccessRequest.objects.get(pk=pk).status == AccessRequest.Status.PENDING_APPROVAL


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, MAX_JSON_DEPTH * 10, 5000])
def test_the_api_refuses_a_body_nested_too_deeply_saying_where(client, offline, token, levels):
    raw = _body('"operation": "create_account", "x": ' + "[" * levels + "]" * levels)
    answer = _post(client, URL, token, raw)
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_json"
    detail = answer.json()["detail"]
    assert detail.startswith("The body is not valid JSON: nested too deeply at ")
    assert f"(more than {MAX_JSON_DEPTH} levels)" in detail
    if levels < 1000:  # parsed, then measured: the answer names the JSON path
        assert f"nested too deeply at x{'[0]' * (MAX_JSON_DEPTH - 1)} " in detail


# --- the admin's JSON fields -----------------------------------------------------------------


def _endpoint_form(endpoint, **changes) -> dict:
    return {
        "security_system": endpoint.security_system_id,
        "name": endpoint.name,
        "display_name": endpoint.display_name,
        "attributes": json.dumps(endpoint.attributes),
        "entitlements": json.dumps(endpoint.entitlements),
        **changes,
    }


ADMIN_JSON_CASES = {
    "repeated key": ('{"queue": "Raw", "queue": "Misc"}', "duplicate key &#x27;queue&#x27;"),
    "nested too deeply": ("[" * 5000 + "]" * 5000, "nested too deeply at line 1 column 33"),
    "just too deep": (
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
        f"nested too deeply at {'[0]' * MAX_JSON_DEPTH}",
    ),
    "NUL": ('{"queue": "R\\u0000aw"}', "queue: contains a NUL character"),
}


@pytest.mark.parametrize("case", ADMIN_JSON_CASES)
def test_the_endpoint_admin_refuses_hostile_json_with_a_message(admin_user, offline, case):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    raw, message = ADMIN_JSON_CASES[case]
    url = reverse("admin:connections_endpoint_change", args=[offline.pk])
    response = client.post(url, _endpoint_form(offline, attributes=raw))
    assert response.status_code == 200
    assert message in response.content.decode()
    offline.refresh_from_db()
    assert offline.attributes == {"queue": "Raw"}


@pytest.mark.parametrize("case", ADMIN_JSON_CASES)
def test_the_identity_admin_refuses_hostile_json_with_a_message(admin_user, case):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    person = Identity.objects.create(username="ada")
    raw, message = ADMIN_JSON_CASES[case]
    url = reverse("admin:tickets_identity_change", args=[person.pk])
    response = client.post(url, {"username": "ada", "properties": raw})
    assert response.status_code == 200
    assert message in response.content.decode()
    person.refresh_from_db()
    assert person.properties == {}


def test_the_endpoint_admin_still_saves_good_json(admin_user, offline):
    client = Client()
    client.force_login(admin_user)
    url = reverse("admin:connections_endpoint_change", args=[offline.pk])
    response = client.post(url, _endpoint_form(offline, attributes='{"queue": "Misc"}'))
    assert response.status_code == 302
    offline.refresh_from_db()
    assert offline.attributes == {"queue": "Misc"}


def test_a_connection_document_nested_too_deeply_is_refused_on_the_form(admin_user):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    deep = '{"call": ' + "[" * 5000 + "]" * 5000 + "}"
    response = client.post(
        reverse("admin:connections_connection_add"),
        {
            "name": "deep",
            "connection_json": "{}",
            "create_ticket_json": deep,
            "ticket_status_json": "{}",
            "poll_minutes": 5,
            "provision_minutes": 1,
            "batch_size": 50,
            "max_status_check_days": 30,
        },
    )
    assert response.status_code == 200
    assert "CreateTicketJSON: nested too deeply at line 1 column 41" in response.content.decode()
    assert not Connection.objects.filter(name="deep").exists()


# --- a decision comment that cannot be kept refuses the decision -----------------------------


BAD_COMMENTS = {
    "over the limit": (
        "x" * (limits.DECISION_COMMENT + 1),
        f"Comment: Ensure this value has at most {limits.DECISION_COMMENT} characters",
    ),
    "NUL": ("fine\x00", "Comment: Null characters are not allowed."),
}


@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("case", BAD_COMMENTS)
def test_a_refused_comment_refuses_the_decision_with_the_message(
    client,
    pending,  # noqa: F811
    people,
    decision,
    case,
):
    client.force_login(people.carol)
    comment, message = BAD_COMMENTS[case]
    url = reverse(f"tickets:request_{decision}", args=[pending.pk])
    response = client.post(url, {"comment": comment}, follow=True)
    verb = "approved" if decision == "approve" else "rejected"
    shown = [str(m) for m in response.context["messages"]]
    assert any(m.startswith(f"{pending} was not {verb}: {message}") for m in shown), shown
    pending.refresh_from_db()
    assert pending.status == AccessRequest.Status.PENDING_APPROVAL
    assert pending.decision_comment == "" and pending.decided_by is None
    assert not pending.tasks.exists()


def test_a_comment_at_the_limit_is_kept(client, pending, people):  # noqa: F811
    client.force_login(people.carol)
    comment = "x" * limits.DECISION_COMMENT
    client.post(reverse("tickets:request_approve", args=[pending.pk]), {"comment": comment})
    pending.refresh_from_db()
    assert pending.status == AccessRequest.Status.APPROVED
    assert pending.decision_comment == comment


# --- NUL in any text field of any form -------------------------------------------------------


def _admin_forms(admin_user) -> list[tuple[str, type[forms.BaseForm]]]:
    """The form of every model of ours (and of Django's users) the admin lets someone add
    or change. django-q2's admins are its own and edit nothing of ours."""
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    found = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ("tickets", "connections", "auth"):
            continue
        if model_admin.has_add_permission(request) or model_admin.has_change_permission(request):
            found.append((f"admin {model.__name__}", model_admin.get_form(request)))
    return found


CONSOLE_FORMS = [
    ("submit", SubmitRequestForm),
    ("decision", DecisionForm),
    ("request filters", RequestFilterForm),
]


def test_every_text_field_of_every_form_refuses_nul(admin_user, offline):
    checked = []
    for label, form_class in [*CONSOLE_FORMS, *_admin_forms(admin_user)]:
        fields = form_class().fields
        for name, field in fields.items():
            if not isinstance(field, forms.CharField):
                continue
            # JSON fields get the NUL inside a JSON string, where json.loads lets it in.
            value = '{"a": "\\u0000"}' if isinstance(field, forms.JSONField) else "a\x00b"
            if isinstance(field, JSONDocumentField):
                value = '{"a": "\\u0000"}'
            form = form_class(data={name: value})
            assert name in form.errors, f"{label}: {name} took a NUL"
            checked.append(f"{label}.{name}")
    # The class, not a sample: every form with text is in the list.
    for expected in (
        "submit.beneficiary",
        "submit.justification",
        "decision.comment",
        "admin Identity.username",
        "admin Identity.email",
        "admin Identity.properties",
        "admin Endpoint.attributes",
        "admin Connection.create_ticket_json",
        "admin Connection.completion_email_template",
        "admin ApiClient.name",
    ):
        assert expected in checked


def test_list_filters_with_nul_are_ignored_not_queried(client, people):
    client.force_login(people.olga)
    Identity.objects.create(username="ada")
    assert "ada" in client.get("/identities/", {"q": "a\x00"}).content.decode()
    assert client.get("/board/", {"connection": "x\x00"}).status_code == 200
    assert client.get("/requests/", {"q": "x\x00", "requester": "\x00"}).status_code == 200


def _string_fields(schema: dict, defs: dict, prefix: str = "") -> list[str]:
    """The path of every string (or list of strings) in a body model's JSON schema."""
    paths = []
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        for option in options:
            if "$ref" in option:
                target = defs[option["$ref"].rsplit("/", 1)[-1]]
                paths += _string_fields(target, defs, f"{prefix}{name}.")
            elif option.get("type") == "string":
                paths.append(f"{prefix}{name}")
            elif option.get("type") == "array" and option["items"].get("type") == "string":
                paths.append(f"{prefix}{name}[0]")
    return paths


def _put(body: dict, path: str, value: str) -> dict:
    body = copy.deepcopy(body)
    node = body
    *parents, last = path.replace("[0]", "").split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = [value] if path.endswith("[0]") else value
    return body


@pytest.mark.parametrize(
    ("model", "url", "base"),
    [
        (
            api_schemas.SubmitRequest,
            URL,
            {"beneficiary": {"username": "ada"}, "endpoint": "crm", "operation": "add_access"},
        ),
        (api_schemas.CancelRequest, f"{URL}/{{pk}}/cancel", {}),
    ],
)
def test_every_string_of_every_api_body_refuses_nul(client, offline, model, url, base):
    _, token = api.api_client_create(name="trusted", trusted=True)
    schema = model.model_json_schema()
    paths = _string_fields(schema, schema.get("$defs", {}))
    assert paths, model
    for path in paths:
        first = _post(client, URL, token, _body('"operation": "create_account"'))
        pk = first.json()["id"] if first.status_code == 201 else 0
        answer = _post(client, url.format(pk=pk), token, json.dumps(_put(base, path, "a\x00b")))
        assert answer.status_code == 422, (path, answer.json())
        fields = answer.json()["fields"]
        assert "must not contain NUL characters." in fields[path], (path, fields)
        AccessRequest.objects.all().delete()
        Identity.objects.all().delete()


def test_an_idempotency_key_or_list_filter_with_nul_is_refused(client, offline, token):
    answer = client.post(
        URL,
        data=_body('"operation": "create_account"'),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_IDEMPOTENCY_KEY="k\x00",
    )
    assert answer.status_code == 422
    assert answer.json()["fields"] == {"Idempotency-Key": ["must not contain NUL characters."]}
    answer = client.get(URL, {"endpoint": "crm\x00"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 422
    assert answer.json()["fields"]["endpoint"] == ["must not contain NUL characters."]


def test_a_webhook_path_with_nul_names_no_connection(client):
    answer = client.post(
        "/api/v1/hooks/otrs/of%00fline", data="{}", content_type="application/json"
    )
    # No connection has such a name: answered as a wrong token, like any unknown name.
    assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")
    assert answer["Content-Type"] == "application/json"


def _refused_by_the_console(client, people, offline, field: str, **data: str) -> None:
    """The submit form answers 400 with an error on `field`, and nobody is created."""
    client.force_login(people.alice)
    form = {"beneficiary": "ada", "endpoint": offline.pk, "operation": "create_account", **data}
    response = client.post(reverse("tickets:submit"), form)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert not Identity.objects.exists()


# --- email addresses -------------------------------------------------------------------------

# Line breaks inside an address (a header injection), a line separator, a NUL, a space.
BAD_EMAILS = [
    "ada@example.com\r\nBcc: eve@example.com",
    "ada\r\n@example.com",
    "ada@exa\nmple.com",
    "ada@exa\u2028mple.com",
    "ada@example.com\x00",
    "ada @example.com",
    "ada",
]


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_the_email_check_refuses_line_breaks_and_controls(email):
    assert validators.email_problem(email)
    with pytest.raises(ValidationError):
        validators.validate_email_address(email)


@pytest.mark.parametrize("email", ["ada@example.com", "ada.lovelace+iga@mail.example.co.uk"])
def test_the_email_check_takes_plain_addresses(email):
    assert validators.email_problem(email) == ""


@pytest.mark.parametrize("email", [*BAD_EMAILS, "ada@example.com\n"])
def test_the_api_refuses_a_bad_email(client, offline, token, email):
    body = {
        "beneficiary": {"username": "ada", "email": email},
        "endpoint": "crm",
        "operation": "create_account",
    }
    answer = _post(client, URL, token, json.dumps(body))
    assert answer.status_code == 422
    (message,) = answer.json()["fields"]["beneficiary.email"]
    assert "is not an email address" in message or "NUL" in message
    assert not Identity.objects.exists()


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_the_services_refuse_a_bad_email(offline, email):
    with pytest.raises(services.RequestInvalid) as raised:
        services.request_submit(
            beneficiary={"username": "ada", "email": email},
            endpoint=offline,
            operation="create_account",
        )
    assert list(raised.value.fields) == ["beneficiary.email"]
    assert not Identity.objects.exists()


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_the_console_form_refuses_a_bad_email(client, offline, people, email):
    _refused_by_the_console(client, people, offline, "beneficiary_email", beneficiary_email=email)


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_the_identity_admin_refuses_a_bad_email(admin_client, email):
    person = Identity.objects.create(username="ada", email="ada@example.com")
    url = reverse("admin:tickets_identity_change", args=[person.pk])
    response = admin_client.post(url, {"username": "ada", "email": email, "properties": "{}"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["email"]
    person.refresh_from_db()
    assert person.email == "ada@example.com"


def test_the_completion_email_skips_a_stored_address_with_a_line_break(
    offline, people, mailoutbox, caplog, django_capture_on_commit_callbacks, q_sync
):
    request = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=offline,
        operation="create_account",
        requester=people.alice,
    )
    # Stored before the rules, or typed into Django's own user admin.
    Identity.objects.filter(username="ada").update(email="ada@example.com\r\nBcc: eve@x.test")
    services.request_approve(access_request=request, by=people.carol)
    with django_capture_on_commit_callbacks(execute=True):
        services.task_cancel(task=request.tasks.get(), by=people.olga)
    assert [m.to for m in mailoutbox] == [["alice@example.com"]]
    assert "not sent to one recipient" in caplog.text
    assert "\r\nBcc" not in caplog.text


# --- usernames and the links built from them -------------------------------------------------

BAD_USERNAMES = [
    "../../admin/auth/user",
    "ada/../../admin",
    "..",
    ".",
    "/admin",
    "\\admin",
    "ada/",
    "CORP//ada",
    "ada lovelace",
    "ada\tlovelace",
    "ada\nlovelace",
    "ada\x00",
    "ada?next=/admin",
    "ada#top",
    "ada%2e%2e",
    "ädä",
]
GOOD_USERNAMES = [
    "ada",
    "ada.lovelace",
    "ada@corp.example",
    "a+b-c_d",
    "CORP/ada",
    "CORP\\ada",
    ".ada",
    "...",
]


@pytest.mark.parametrize("username", BAD_USERNAMES)
def test_the_username_check_refuses_what_could_leave_the_link(username):
    problem = validators.username_problem(username)
    assert problem and "is not a username" in problem
    assert not re.fullmatch(validators.USERNAME_PATTERN, username)


@pytest.mark.parametrize("username", GOOD_USERNAMES)
def test_the_username_check_takes_plain_and_domain_names(username):
    assert validators.username_problem(username) == ""
    assert re.fullmatch(validators.USERNAME_PATTERN, username)


@pytest.mark.parametrize(
    ("username", "reason"),
    [
        ("../../admin", "no part of it may be . or .."),
        ("/admin", "it must start with a letter"),
        ("ada/", "it may not end with / or \\"),
        ("a b", "it holds a space"),
        ("ada?x", "'?' is not allowed"),
    ],
)
def test_a_refused_username_is_told_why(username, reason):
    assert reason in validators.username_problem(username)


@pytest.mark.parametrize("username", BAD_USERNAMES)
def test_the_api_refuses_a_bad_username(client, offline, token, username):
    body = {"beneficiary": {"username": username}, "endpoint": "crm", "operation": "create_account"}
    answer = _post(client, URL, token, json.dumps(body))
    assert answer.status_code == 422
    assert answer.json()["fields"]["beneficiary.username"]
    assert not Identity.objects.exists()


@pytest.mark.parametrize("username", [u for u in BAD_USERNAMES if u.strip() == u])
def test_the_console_form_refuses_a_bad_username(client, offline, people, username):
    _refused_by_the_console(client, people, offline, "beneficiary", beneficiary=username)


@pytest.mark.parametrize("username", BAD_USERNAMES)
def test_the_services_refuse_a_bad_username(offline, username):
    with pytest.raises(services.RequestInvalid) as raised:
        services.request_submit(
            beneficiary={"username": username}, endpoint=offline, operation="create_account"
        )
    assert list(raised.value.fields) == ["beneficiary.username"]
    assert not Identity.objects.exists()


@pytest.mark.parametrize("username", BAD_USERNAMES)
def test_the_identity_admin_refuses_a_bad_username(admin_client, username):
    url = reverse("admin:tickets_identity_add")
    response = admin_client.post(url, {"username": username, "properties": "{}"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["username"]
    assert not Identity.objects.exists()


@pytest.mark.parametrize("username", GOOD_USERNAMES)
def test_a_good_username_links_to_its_own_page(client, offline, people, username):
    services.request_submit(
        beneficiary={"username": username},
        endpoint=offline,
        operation="create_account",
        requester=people.alice,
    )
    identity = Identity.objects.get(username=username)
    url = identity.get_absolute_url()
    assert url.startswith("/identities/")
    # Resolved the way a browser would first normalise it: still this person's page.
    normalised = posixpath.normpath(unquote(url)) + "/"
    assert resolve(normalised).kwargs == {"username": username}
    client.force_login(people.olga)
    assert client.get(url).status_code == 200
    assert f'href="{url}"' in client.get(reverse("tickets:identity_list")).content.decode()


@pytest.mark.parametrize("username", ["..", "a\x00", "a b"])
def test_the_identity_page_of_a_name_no_one_may_have_is_a_404(client, people, username):
    client.force_login(people.olga)
    assert client.get(f"/identities/{quote(username)}/").status_code == 404


def test_the_published_username_pattern_is_the_check():
    schema = api_schemas.Beneficiary.model_json_schema()
    assert schema["properties"]["username"]["pattern"] == validators.USERNAME_PATTERN
