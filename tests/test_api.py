"""The JSON API for upstream systems: tokens, submit, get, list, cancel, idempotency, errors."""

from __future__ import annotations

import hashlib
import json
import threading
from io import StringIO
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError
from django.db import connection as db_connection

from connections.models import Connection, Endpoint, SecuritySystem
from tests import factories
from tickets import api, api_schemas, limits, openapi
from tickets.forms import SubmitRequestForm
from tickets.models import (
    AccessRequest,
    Account,
    ApiClient,
    Identity,
    ProvisioningTask,
    TaskEvent,
    Ticket,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/requests"
ADA = {"username": "ada", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}


@pytest.fixture
def crm(db):
    """An endpoint whose connection is never called: the API itself makes no OTRS call."""
    return factories.endpoint(Connection.objects.create(name="offline"), name="crm")


@pytest.fixture
def iga(db):
    return api.api_client_create(name="iga")


@pytest.fixture
def trusted(db):
    return api.api_client_create(name="sailpoint", trusted=True)


def call(client, method, path, token=None, body=None, content_type="application/json", **headers):
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    if method == "get":
        return client.get(path, **headers)
    # No body is an empty body (the test client would otherwise send an empty multipart form).
    data = json.dumps(body) if isinstance(body, dict | list) else (body or "")
    return getattr(client, method)(path, data=data, content_type=content_type, **headers)


def submit(client, token, body=None, **headers):
    body = body or {"beneficiary": ADA, "endpoint": "crm", "operation": "create_account"}
    return call(client, "post", URL, token, body, **headers)


# --- clients and tokens ---------------------------------------------------------------------


def test_create_api_client_prints_only_the_token_on_its_last_line():
    out = StringIO()
    call_command("create_api_client", "iga-prod", "--trusted", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    stored = ApiClient.objects.get(name="iga-prod")
    assert stored.trusted is True
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert stored.token_prefix == token[:8] and len(token) >= 43
    assert token not in stored.token_hash


def test_create_api_client_refuses_a_duplicate_name(iga):
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_api_client", "iga", stdout=StringIO())
    assert ApiClient.objects.filter(name="iga").count() == 1


def test_create_api_client_refuses_a_name_that_is_not_a_slug():
    with pytest.raises(CommandError, match="not a valid client name"):
        call_command("create_api_client", "iga prod", stdout=StringIO())


def test_token_from_the_command_authenticates(client, crm):
    out = StringIO()
    call_command("create_api_client", "scripted", stdout=out)
    token = out.getvalue().splitlines()[-1]
    answer = call(client, "get", URL, token)
    assert answer.status_code == 200
    assert answer.json() == {"results": [], "next": None}


def test_it_refuses_a_missing_token_with_401_json(client):
    answer = client.get(URL)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthenticated"
    assert answer.json()["fields"] == {}
    assert answer["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_a_wrong_token(client, iga):
    answer = call(client, "get", URL, "not-" + iga[1])
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_token")


def test_it_refuses_a_token_of_a_disabled_client(client, iga):
    ApiClient.objects.filter(pk=iga[0].pk).update(active=False)
    assert call(client, "get", URL, iga[1]).status_code == 401


def test_it_refuses_another_auth_scheme(client, iga):
    answer = client.get(URL, HTTP_AUTHORIZATION=f"Basic {iga[1]}")
    assert answer.status_code == 401


def test_use_of_a_token_is_recorded(client, iga):
    assert iga[0].last_used_at is None
    call(client, "get", URL, iga[1])
    iga[0].refresh_from_db()
    assert iga[0].last_used_at is not None


def test_openapi_document_needs_no_token(client):
    answer = client.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.json()["openapi"].startswith("3.0")


# --- submit ---------------------------------------------------------------------------------


def test_submit_answers_201_with_the_fixed_shape_and_waits_for_approval(client, crm, iga):
    answer = submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="k-1")
    assert answer.status_code == 201
    body = answer.json()
    stored = AccessRequest.objects.get()
    assert body == {
        "id": stored.pk,
        "number": f"REQ-{stored.pk:06d}",
        "status": "pending_approval",
        "tasks": [],
    }
    assert (stored.api_client, stored.idempotency_key) == (iga[0], "k-1")
    assert Identity.objects.get(username="ada").email == "ada@example.com"
    assert TaskEvent.objects.get(request=stored).actor_label == "api:iga"


def test_trusted_client_request_arrives_approved_with_its_tasks(client, crm, trusted):
    Account.objects.create(
        identity=Identity.objects.create(username="ada"), endpoint=crm, name="ada"
    )
    body = {
        "beneficiary": {"username": "ada"},
        "endpoint": "crm",
        "operation": "add_access",
        "entitlements": ["crm-read", "crm-write"],
        "justification": "project X",
        "upstream_approver": "manager: grace",
    }
    answer = submit(client, trusted[1], body)
    assert answer.status_code == 201
    stored = AccessRequest.objects.get()
    tasks = list(stored.tasks.order_by("id"))
    assert answer.json() == {
        "id": stored.pk,
        "number": stored.number,
        "status": "approved",
        "tasks": [
            {
                "id": t.pk,
                "operation": "add_access",
                "entitlement": t.entitlement,
                "status": "new",
                "attempts": 0,
                "last_error": None,
                "reason": None,
                "ticket": None,
            }
            for t in tasks
        ],
    }
    assert [t.entitlement for t in tasks] == ["crm-read", "crm-write"]
    assert stored.decided_by_label == "manager: grace"


def test_account_operation_has_one_task_without_entitlement(client, crm, trusted):
    answer = submit(client, trusted[1])
    [task] = answer.json()["tasks"]
    assert (task["operation"], task["entitlement"]) == ("create_account", None)


def test_untrusted_client_cannot_claim_an_upstream_approval(client, crm, iga):
    body = {"beneficiary": ADA, "endpoint": "crm", "operation": "create_account"}
    answer = submit(client, iga[1], {**body, "upstream_approver": "grace"})
    assert answer.status_code == 422
    assert "trusted" in answer.json()["fields"]["upstream_approver"][0]
    assert AccessRequest.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"entitlements": "crm-read"}, "entitlements", "must be a list of strings."),
        ({"entitlements": ["crm-read", 7]}, "entitlements[1]", "must be a string."),
        ({"beneficiary": {"first_name": "Ada"}}, "beneficiary.username", "is required."),
        ({"beneficiary": "ada"}, "beneficiary", "is required, as an object with a username."),
        ({"beneficiary": {"username": 12}}, "beneficiary.username", "must be a string."),
        ({"endpoint": None}, "endpoint", "is required."),
        ({"endpoint": ["crm"]}, "endpoint", "must be a string."),
        ({"justification": "a\x00b"}, "justification", "must not contain NUL characters."),
        ({"account_name": "x" * 201}, "account_name", "is longer than 200 characters."),
        ({"colour": "blue"}, "colour", "is not a known field"),
        ({"endpoint": "erp"}, "endpoint", "there is no endpoint named 'erp'."),
        ({"operation": "grant_all"}, "operation", "must be one of create_account"),
    ],
)
def test_wrong_field_is_a_422_naming_it(client, crm, iga, change, path, message):
    body = {"beneficiary": ADA, "endpoint": "crm", "operation": "create_account", **change}
    answer = submit(client, iga[1], body)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid"
    assert answer.json()["fields"][path][0].startswith(message)
    assert AccessRequest.objects.count() == 0


def test_limits_are_the_declared_ones_and_the_same_as_the_consoles(client, crm, iga):
    """The API, the document and the console form all read tickets/limits.py."""
    body = {"beneficiary": ADA, "endpoint": "crm", "operation": "create_account"}
    too_long = {**body, "justification": "x" * (limits.JUSTIFICATION + 1)}
    answer = submit(client, iga[1], too_long)
    assert answer.json()["fields"] == {
        "justification": [f"is longer than {limits.JUSTIFICATION} characters."]
    }
    schemas = openapi.document()["components"]["schemas"]
    assert schemas["SubmitRequest"]["properties"]["justification"]["maxLength"] == (
        limits.JUSTIFICATION
    )
    assert schemas["Beneficiary"]["properties"]["username"]["maxLength"] == limits.USERNAME
    assert SubmitRequestForm().fields["justification"].max_length == limits.JUSTIFICATION
    at_limit = {**body, "justification": "x" * limits.JUSTIFICATION}
    assert submit(client, iga[1], at_limit).status_code == 201


def test_every_wrong_field_is_named_at_once(client, crm, iga):
    answer = submit(client, iga[1], {"beneficiary": {}, "operation": 3, "entitlements": {}})
    assert set(answer.json()["fields"]) == {
        "beneficiary.username",
        "endpoint",
        "operation",
        "entitlements",
    }


def test_service_rules_come_back_as_field_errors(client, crm, iga):
    answer = submit(
        client, iga[1], {"beneficiary": ADA, "endpoint": "crm", "operation": "remove_account"}
    )
    assert answer.status_code == 422
    assert answer.json()["fields"] == {
        "operation": ["Ada Lovelace has no account on CRM, so there is nothing to remove."]
    }


def test_endpoint_without_service_desk_connection_is_refused_not_crashed(client, trusted):
    system = SecuritySystem.objects.create(name="legacy-system")
    Endpoint.objects.create(name="legacy", security_system=system)
    body = {"beneficiary": ADA, "endpoint": "legacy", "operation": "create_account"}
    answer = submit(client, trusted[1], body)
    assert answer.status_code == 422
    assert answer.json()["fields"]["endpoint"] == [
        "legacy has no service-desk connection; an admin must set one on its application."
    ]


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("{not json", "The body is not valid JSON"),
        ('["a list"]', "The body must be a JSON object."),
        ("", "The body is empty"),
        ('{"a": NaN}', "The body is not valid JSON"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_malformed_body_is_a_400(client, crm, iga, raw, detail):
    answer = call(client, "post", URL, iga[1], raw)
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_json"
    assert detail in answer.json()["detail"]


def test_body_that_is_not_utf8_is_a_400(client, crm, iga):
    answer = call(client, "post", URL, iga[1], b'{"a": "\xff"}')
    assert (answer.status_code, answer.json()["detail"]) == (400, "The body is not UTF-8 text.")


def test_other_content_type_is_a_415(client, crm, iga):
    body = json.dumps({"beneficiary": ADA, "endpoint": "crm", "operation": "create_account"})
    answer = call(client, "post", URL, iga[1], body, content_type="text/plain")
    assert answer.status_code == 415
    assert answer.json()["error"] == "unsupported_media_type"


def test_content_type_with_charset_is_json(client, crm, iga):
    body = json.dumps({"beneficiary": ADA, "endpoint": "crm", "operation": "create_account"})
    answer = call(client, "post", URL, iga[1], body, content_type="application/json; charset=utf-8")
    assert answer.status_code == 201


def test_body_too_large_is_refused_from_content_length_before_reading(client, crm, iga):
    body = json.dumps({"beneficiary": ADA, "endpoint": "crm", "operation": "create_account",
                       "justification": "x" * (70 * 1024)})  # fmt: skip
    with mock.patch.object(api_schemas, "parse_json_object") as parse:
        answer = call(client, "post", URL, iga[1], body)
    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"
    assert "65536" in answer.json()["detail"]
    parse.assert_not_called()


def test_wrong_method_is_a_json_405_with_allow(client, iga):
    answer = call(client, "put", URL, iga[1], {})
    assert answer.status_code == 405
    assert answer["Allow"] == "GET, POST"
    assert answer.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["get", "post", "options", "delete"])
def test_unknown_api_path_is_a_json_404(client, method):
    answer = getattr(client, method)("/api/v1/nothing/here")
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"


def test_api_needs_no_csrf_token(crm, iga):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert submit(strict, iga[1]).status_code == 201


# --- idempotency ----------------------------------------------------------------------------


def test_retry_with_the_same_key_answers_the_first_result(client, crm, iga):
    first = submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="abc")
    again = submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="abc")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert AccessRequest.objects.count() == 1


def test_same_key_with_another_body_is_refused(client, crm, iga):
    submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="abc")
    other = {"beneficiary": {"username": "bob"}, "endpoint": "crm", "operation": "create_account"}
    answer = submit(client, iga[1], other, HTTP_IDEMPOTENCY_KEY="abc")
    assert answer.status_code == 422
    assert answer.json()["error"] == "idempotency_key_reused"
    assert AccessRequest.objects.count() == 1


def test_keys_belong_to_one_client(client, crm, iga):
    other = api.api_client_create(name="other")
    first = submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="abc")
    second = submit(client, other[1], HTTP_IDEMPOTENCY_KEY="abc")
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]


def test_without_a_key_each_submit_is_a_new_request(client, crm, iga):
    submit(client, iga[1])
    submit(client, iga[1])
    assert AccessRequest.objects.count() == 2


def test_empty_key_is_refused(client, crm, iga):
    answer = submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="  ")
    assert answer.status_code == 422
    assert answer.json()["fields"] == {"Idempotency-Key": ["must not be empty."]}


def test_key_race_lost_at_the_unique_constraint_answers_the_winner(client, crm, iga):
    """The second of two concurrent calls sees no request yet, then hits the constraint."""
    winner = submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="race").json()
    real_replay = api._replay
    calls = []

    def blind_first_time(*args):
        calls.append(args)
        return None if len(calls) == 1 else real_replay(*args)

    with mock.patch.object(api, "_replay", side_effect=blind_first_time):
        answer = submit(client, iga[1], HTTP_IDEMPOTENCY_KEY="race")
    assert (answer.status_code, answer.json()) == (200, winner)
    assert len(calls) == 2
    assert AccessRequest.objects.count() == 1


def test_a_submit_that_loses_a_race_for_a_new_beneficiary_is_tried_again(client, crm, iga):
    """Two first requests for one new person: the loser hits Identity's unique username."""
    real_submit = api._submit
    attempts = []

    def lose_first_time(*args):
        attempts.append(args)
        if len(attempts) == 1:
            raise IntegrityError("UNIQUE constraint failed: tickets_identity.username")
        return real_submit(*args)

    with mock.patch.object(api, "_submit", side_effect=lose_first_time):
        answer = submit(client, iga[1])
    assert answer.status_code == 201
    assert len(attempts) == 2
    assert AccessRequest.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_with_one_key_create_one_request(crm, iga):
    from django.test import Client

    barrier = threading.Barrier(4)
    answers = []

    def worker():
        try:
            barrier.wait()
            answers.append(submit(Client(), iga[1], HTTP_IDEMPOTENCY_KEY="burst"))
        finally:
            db_connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers).count(201) == 1
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert AccessRequest.objects.count() == 1


# --- get and list ---------------------------------------------------------------------------


def test_get_answers_the_request_with_tasks_and_tickets(client, crm, trusted):
    created = submit(client, trusted[1]).json()
    task = ProvisioningTask.objects.get()
    ticket = Ticket.objects.create(
        connection=crm.security_system.service_desk_connection,
        ticket_id=4711,
        ticket_number="2026112610000015",
        state="open",
        state_type="open",
        agent_url="https://otrs.example.com/otrs/index.pl?Action=AgentTicketZoom;TicketID=4711",
    )
    ProvisioningTask.objects.filter(pk=task.pk).update(
        ticket=ticket, status="ticket_open", attempts=1, last_error="earlier timeout"
    )
    answer = call(client, "get", f"{URL}/{created['id']}", trusted[1])
    assert answer.status_code == 200
    assert answer.json()["tasks"] == [
        {
            "id": task.pk,
            "operation": "create_account",
            "entitlement": None,
            "status": "ticket_open",
            "attempts": 1,
            "last_error": "earlier timeout",
            "reason": None,
            "ticket": {
                "id": 4711,
                "number": "2026112610000015",
                "state": "open",
                "state_type": "open",
                "url": ticket.agent_url,
            },
        }
    ]


def test_a_client_sees_only_its_own_requests(client, crm, iga):
    other = api.api_client_create(name="other")
    mine = submit(client, iga[1]).json()
    assert call(client, "get", f"{URL}/{mine['id']}", other[1]).status_code == 404
    assert call(client, "get", URL, other[1]).json()["results"] == []


@pytest.mark.parametrize("pk", ["999", "99999999999999999999999"])
def test_unknown_request_is_a_404(client, iga, pk):
    answer = call(client, "get", f"{URL}/{pk}", iga[1])
    assert (answer.status_code, answer.json()["error"]) == (404, "not_found")


def _make_requests(client, token, count):
    ids = []
    for i in range(count):
        body = {
            "beneficiary": {"username": f"user{i}"},
            "endpoint": "crm",
            "operation": "create_account",
        }
        ids.append(submit(client, token, body).json()["id"])
    return ids


def test_list_walks_every_request_once_newest_first_with_the_cursor(client, crm, iga):
    ids = _make_requests(client, iga[1], 5)
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(URL, query, HTTP_AUTHORIZATION=f"Bearer {iga[1]}").json()
        seen += [r["id"] for r in page["results"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    assert pages == 3


def test_requests_created_while_paging_do_not_shift_pages(client, crm, iga):
    ids = _make_requests(client, iga[1], 3)
    first = client.get(URL, {"limit": 2}, HTTP_AUTHORIZATION=f"Bearer {iga[1]}").json()
    _make_requests(client, iga[1], 1)
    second = client.get(
        URL, {"limit": 2, "cursor": first["next"]}, HTTP_AUTHORIZATION=f"Bearer {iga[1]}"
    ).json()
    assert [r["id"] for r in second["results"]] == [ids[0]]
    assert second["next"] is None


def test_list_filters_by_status_operation_and_endpoint(client, crm, iga):
    factories.endpoint(crm.security_system.service_desk_connection, name="erp")
    ids = _make_requests(client, iga[1], 2)
    erp = submit(
        client, iga[1], {"beneficiary": ADA, "endpoint": "erp", "operation": "create_account"}
    )
    AccessRequest.objects.filter(pk=ids[0]).update(status="rejected")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {iga[1]}"}

    def listed(**query):
        return [r["id"] for r in client.get(URL, query, **auth).json()["results"]]

    assert listed(status="rejected") == [ids[0]]
    assert listed(status="pending_approval") == [erp.json()["id"], ids[1]]
    assert listed(endpoint="erp") == [erp.json()["id"]]
    assert listed(operation="remove_access") == []
    assert listed(endpoint="nowhere") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "done"}, "status"),
        ({"operation": "grant"}, "operation"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": "YWZ0ZXI6MTI"}, "cursor"),
        ({"cursor": "YmVmb3JlOtmh2aI"}, "cursor"),  # "before:" and two Arabic-Indic digits
        ({"status": ""}, "status"),
        ({"stauts": "completed"}, "stauts"),
    ],
)
def test_wrong_list_filter_is_a_422(client, iga, query, field):
    answer = client.get(URL, query, HTTP_AUTHORIZATION=f"Bearer {iga[1]}")
    assert answer.status_code == 422
    assert list(answer.json()["fields"]) == [field]


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_cancels_a_pending_request_and_records_the_reason(client, crm, iga):
    created = submit(client, iga[1]).json()
    answer = call(client, "post", f"{URL}/{created['id']}/cancel", iga[1], {"reason": "left"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "cancelled"
    event = TaskEvent.objects.filter(request_id=created["id"]).last()
    assert (event.to_status, event.reason, event.actor_label) == ("cancelled", "left", "api:iga")


def test_cancel_cancels_the_unfinished_tasks(client, crm, trusted):
    created = submit(client, trusted[1]).json()
    answer = call(client, "post", f"{URL}/{created['id']}/cancel", trusted[1])
    assert answer.status_code == 200
    assert [t["status"] for t in answer.json()["tasks"]] == ["cancelled"]


def test_cancelling_twice_answers_the_cancelled_request(client, crm, iga):
    created = submit(client, iga[1]).json()
    call(client, "post", f"{URL}/{created['id']}/cancel", iga[1])
    again = call(client, "post", f"{URL}/{created['id']}/cancel", iga[1])
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")
    assert TaskEvent.objects.filter(request_id=created["id"], to_status="cancelled").count() == 1


def test_cancelling_a_finished_request_is_a_409(client, crm, iga):
    created = submit(client, iga[1]).json()
    AccessRequest.objects.filter(pk=created["id"]).update(status="completed")
    answer = call(client, "post", f"{URL}/{created['id']}/cancel", iga[1])
    assert answer.status_code == 409
    assert answer.json()["detail"].endswith("is completed; it can no longer be cancelled.")


def test_cancelling_another_clients_request_is_a_404(client, crm, iga):
    created = submit(client, iga[1]).json()
    other = api.api_client_create(name="other")
    assert call(client, "post", f"{URL}/{created['id']}/cancel", other[1]).status_code == 404
    assert AccessRequest.objects.get().status == "pending_approval"


def test_cancel_with_a_wrong_body_changes_nothing(client, crm, iga):
    created = submit(client, iga[1]).json()
    answer = call(client, "post", f"{URL}/{created['id']}/cancel", iga[1], {"reason": 5})
    assert (answer.status_code, answer.json()["fields"]) == (422, {"reason": ["must be a string."]})
    assert AccessRequest.objects.get().status == "pending_approval"
