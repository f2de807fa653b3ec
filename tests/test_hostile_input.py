"""Hostile bodies and form input: JSON with repeated keys or nested too deeply in the API and
the admin's JSON fields. Each is refused with a message that names what is wrong and
where, and nothing is written."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from connections.models import Connection
from connections.paths import MAX_JSON_DEPTH
from tests import factories
from tickets import api
from tickets.models import AccessRequest, Identity

pytestmark = pytest.mark.django_db

URL = "/api/v1/requests"


@pytest.fixture
def offline(db):
    return factories.endpoint(Connection.objects.create(name="offline"), name="crm")


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
