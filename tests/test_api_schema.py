"""The OpenAPI document tells the truth: real responses validate against its schemas, and
schemathesis fuzzing of every operation finds no 5xx and no answer outside the document."""

from __future__ import annotations

import copy
import json

import jsonschema_rs
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import override_settings
from django.urls import resolve
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig

from connections.models import Connection
from tests import factories
from tickets import api, openapi
from tickets.models import ProvisioningTask, Ticket

DOCUMENT = openapi.document()
SECRET = "schema-test-secret-0123456789"


def _nullable_as_json_schema(node):
    """OpenAPI 3.0 `nullable: true` is not JSON Schema; say it the JSON Schema way."""
    if isinstance(node, list):
        return [_nullable_as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_as_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _follow(node: dict) -> dict:
    while "$ref" in node:
        _, *parts = node["$ref"].split("/")
        node = DOCUMENT
        for part in parts:
            node = node[part]
    return node


def check_against_document(path: str, method: str, answer) -> None:
    """Validate a real Django response with the schema the document gives for its status."""
    responses = DOCUMENT["paths"][path][method]["responses"]
    assert str(answer.status_code) in responses, (
        f"{answer.status_code} is not documented for {method} {path}"
    )
    schema = _follow(responses[str(answer.status_code)])["content"]["application/json"]["schema"]
    root = {**copy.deepcopy(schema), "components": _nullable_as_json_schema(DOCUMENT["components"])}
    validator = jsonschema_rs.Draft4Validator(_nullable_as_json_schema(root))
    body = json.loads(answer.content)
    errors = [e.message for e in validator.iter_errors(body)]
    assert errors == [], f"{method} {path} {answer.status_code}: {errors} in {body}"


@pytest.fixture
def setup(db):
    offline = Connection.objects.create(name="offline")
    offline.set_webhook_secret(SECRET)
    offline.save()
    crm = factories.endpoint(offline, name="crm")
    return (
        crm,
        api.api_client_create(name="iga")[1],
        api.api_client_create(name="sp", trusted=True)[1],
    )


def post(client, path, body, token, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        f"/api/v1{path}",
        data=data,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        **headers,
    )


def get(client, path, token):
    return client.get(f"/api/v1{path}", HTTP_AUTHORIZATION=f"Bearer {token}")


BODY = {"beneficiary": {"username": "ada"}, "endpoint": "crm", "operation": "create_account"}


def test_every_documented_path_has_its_own_view():
    for path in DOCUMENT["paths"]:
        concrete = path.replace("{id}", "1").replace("{connection}", "offline")
        assert resolve(f"/api/v1{concrete}").url_name != "not_found", path


def test_real_success_responses_match_the_document(client, setup):
    crm, token, trusted = setup
    created = post(client, "/requests", BODY, token, HTTP_IDEMPOTENCY_KEY="one")
    check_against_document("/requests", "post", created)
    assert created.status_code == 201
    replayed = post(client, "/requests", BODY, token, HTTP_IDEMPOTENCY_KEY="one")
    assert replayed.status_code == 200
    check_against_document("/requests", "post", replayed)
    approved = post(client, "/requests", {**BODY, "beneficiary": {"username": "bob"}}, trusted)
    assert approved.json()["tasks"][0]["ticket"] is None
    check_against_document("/requests", "post", approved)
    task = ProvisioningTask.objects.get()
    ticket = Ticket.objects.create(
        connection=crm.security_system.service_desk_connection, ticket_id=77, state="open"
    )
    ProvisioningTask.objects.filter(pk=task.pk).update(
        ticket=ticket, status="ticket_open", last_error="x"
    )
    detail = get(client, f"/requests/{approved.json()['id']}", trusted)
    assert detail.json()["tasks"][0]["ticket"]["id"] == 77
    check_against_document("/requests/{id}", "get", detail)
    post(client, "/requests", {**BODY, "beneficiary": {"username": "cy"}}, token)
    page = client.get("/api/v1/requests", {"limit": 1}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert page.json()["next"] is not None
    check_against_document("/requests", "get", page)
    cancelled = post(
        client, f"/requests/{created.json()['id']}/cancel", {"reason": "no longer needed"}, token
    )
    assert cancelled.json()["status"] == "cancelled"
    check_against_document("/requests/{id}/cancel", "post", cancelled)
    check_against_document("/health", "get", client.get("/api/v1/health"))


def test_real_error_responses_match_the_document(client, setup):
    crm, token, _ = setup
    cases = [
        ("/requests", "post", post(client, "/requests", "{", token), 400),
        ("/requests", "post", post(client, "/requests", BODY, "wrong"), 401),
        ("/requests", "post", post(client, "/requests", {"x": "y" * 70_000}, token), 413),
        (
            "/requests",
            "post",
            client.post(
                "/api/v1/requests",
                "a=b",
                content_type="text/plain",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            ),
            415,
        ),
        ("/requests", "post", post(client, "/requests", {**BODY, "entitlements": "x"}, token), 422),
        (
            "/requests",
            "get",
            client.get("/api/v1/requests", {"limit": "x"}, HTTP_AUTHORIZATION=f"Bearer {token}"),
            422,
        ),
        ("/requests/{id}", "get", get(client, "/requests/12345", token), 404),
    ]
    first = post(client, "/requests", BODY, token).json()["id"]
    post(client, f"/requests/{first}/cancel", {}, token)
    post(
        client,
        "/requests",
        {**BODY, "beneficiary": {"username": "zed"}},
        token,
        HTTP_IDEMPOTENCY_KEY="k",
    )
    cases += [
        (
            "/requests",
            "post",
            post(client, "/requests", BODY, token, HTTP_IDEMPOTENCY_KEY="k"),
            422,
        ),
    ]
    for path, method, answer, status in cases:
        assert answer.status_code == status, (path, method, answer.content)
        check_against_document(path, method, answer)


def test_real_webhook_responses_match_the_document(client, setup):
    path = "/hooks/otrs/{connection}"
    accepted = client.post(
        "/api/v1/hooks/otrs/offline",
        "{}",
        content_type="application/json",
        HTTP_X_OTRS_BRIDGE_TOKEN=SECRET,
    )
    refused = client.post("/api/v1/hooks/otrs/offline", "{}", content_type="application/json")
    unknown = client.post("/api/v1/hooks/otrs/none", "{}", content_type="application/json")
    assert [a.status_code for a in (accepted, refused, unknown)] == [200, 403, 403]
    for answer in (accepted, refused, unknown):
        check_against_document(path, "post", answer)


def test_a_405_has_the_error_shape(client):
    answer = client.delete("/api/v1/requests")
    validator = jsonschema_rs.Draft4Validator(DOCUMENT["components"]["schemas"]["Error"])
    assert answer.status_code == 405
    assert validator.is_valid(answer.json())


def test_the_checker_catches_a_shape_that_drifts(client, setup):
    """The validation above can fail: an extra key in a task is outside the document."""
    _, _, trusted = setup
    answer = post(client, "/requests", BODY, trusted)
    body = answer.json()
    body["tasks"][0]["secret"] = 1
    answer.content = json.dumps(body).encode()
    with pytest.raises(AssertionError, match="secret"):
        check_against_document("/requests", "post", answer)


# --- fuzzing --------------------------------------------------------------------------------

# The test sends a valid token itself; without this, schemathesis would also mutate the
# Authorization header, and the test's own header would hide that mutation (a "negative"
# case that is not negative any more). Refusing bad tokens is tested in test_api.py.
# A 413 is a rejection too: a fuzzed body can outgrow the 64 kB limit before it is parsed.
FUZZ_CONFIG = SchemathesisConfig.from_str(
    """
[generation]
with-security-parameters = false

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "409", "413", "415", "422"]
"""
)
# The document is read through the WSGI app, as a client would read it. The Host header of
# schemathesis's WSGI client is "localhost", which the test settings do not allow.
with override_settings(ALLOWED_HOSTS=["localhost"]):
    schema = schemathesis.openapi.from_wsgi(
        "/api/v1/openapi.json", get_wsgi_application(), config=FUZZ_CONFIG
    )

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.negative_data_rejection,
]


@pytest.fixture
def fuzz_setup(client, setup, settings):
    """A client token and two of its requests, so fuzzed ids and filters sometimes hit."""
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    _, token, _ = setup
    for name in ("ada", "bob"):
        post(client, "/requests", {**BODY, "beneficiary": {"username": name}}, token)
    # Django's WSGI handler closes the connection after each request; inside the test's
    # transaction that would close it for good. Django's test client disconnects the same
    # handler (and reconnects it after each of its own calls, hence after the posts above).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield token
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_fuzzed_calls_never_fail_on_the_server_and_stay_inside_the_document(case, fuzz_setup):
    headers, checks = {"Authorization": f"Bearer {fuzz_setup}"}, CHECKS
    if case.operation.path == "/hooks/otrs/{connection}":
        # Fuzz the body behind a valid secret; refusals are covered in test_webhook.py. The
        # webhook accepts any body on purpose (OTRS would retry a refusal forever), so a
        # body outside the schema is not expected to be rejected here.
        case.path_parameters = {"connection": "offline"}
        case.query = {}
        headers = {"X-OTRS-Bridge-Token": SECRET}
        checks = [c for c in CHECKS if c is not schemathesis.checks.negative_data_rejection]
    case.call_and_validate(headers=headers, checks=checks)
