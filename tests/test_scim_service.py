"""The SCIM service's edges: who may call it, bodies that are wrong in every way (fuzzed),
retried and concurrent writes, the inventory seen as Users and Groups, paging, and the
token that never shows."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest
import requests
from django.core.management import call_command
from django.db import connection as db
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connections.models import ApiCall
from tests import factories
from tickets import api, limits, services
from tickets.models import (
    AccessRequest,
    Account,
    AccountEntitlement,
    ApiClient,
    Identity,
    ScimGroup,
    ScimMember,
    ScimUser,
)

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
BRIDGE_USER = "urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:User"
BRIDGE_GROUP = "urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:Group"
BASE = "/scim/v2/crm"


def send(client: Client, method: str, path: str, body=None, raw: str | None = None):
    data = raw if raw is not None else (json.dumps(body) if body is not None else "")
    return getattr(client, method.lower())(
        BASE + path, data=data, content_type="application/scim+json"
    )


def scim_error(answer, status: int) -> dict:
    """The answer is SCIM's error shape with this status."""
    assert answer.status_code == status, answer.content
    assert answer["Content-Type"] == "application/scim+json"
    body = answer.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status) and body["detail"]
    return body


def new_user(client, user_name="ada", **extra) -> dict:
    answer = send(client, "POST", "/Users", {"schemas": [USER], "userName": user_name, **extra})
    assert answer.status_code == 201, answer.content
    return answer.json()


# --- who may call it ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_call_without_a_token_of_this_endpoint_is_refused_in_scims_shape(scim, offline):
    anonymous = Client(raise_request_exception=False)
    answer = anonymous.get(f"{BASE}/Users")
    scim_error(answer, 401)
    assert answer["WWW-Authenticate"].startswith("Bearer")
    scim_error(Client(HTTP_AUTHORIZATION="Bearer nope").get(f"{BASE}/Users"), 401)
    # A client of the API that may not provision crm: the same 404 as an unknown endpoint.
    _, other = api.api_client_create(name="other", trusted=True)
    outsider = Client(HTTP_AUTHORIZATION=f"Bearer {other}")
    scim_error(outsider.get(f"{BASE}/Users"), 404)
    # An untrusted client's changes would wait for an approver: refused.
    doubtful, doubtful_token = api.api_client_create(name="doubtful")
    doubtful.scim_endpoints.set([offline])
    refused = Client(HTTP_AUTHORIZATION=f"Bearer {doubtful_token}").get(f"{BASE}/Users")
    assert "must be trusted" in scim_error(refused, 403)["detail"]
    client, _ = scim
    scim_error(client.get("/scim/v2/nowhere/Users"), 404)
    scim_error(client.get(f"{BASE}/Elsewhere"), 404)
    scim_error(send(client, "DELETE", "/Users"), 405)
    scim_error(send(client, "POST", "/.search", {}), 501)


@pytest.mark.django_db
def test_create_api_client_makes_a_trusted_scim_client_of_named_endpoints(offline):
    out = io.StringIO()
    call_command("create_api_client", "okta", "--scim-endpoint", "crm", stdout=out)
    client = ApiClient.objects.get(name="okta")
    assert client.trusted and list(client.scim_endpoints.all()) == [offline]
    token = out.getvalue().splitlines()[-1]
    assert "SCIM service of CRM: /scim/v2/crm" in out.getvalue()
    assert Client(HTTP_AUTHORIZATION=f"Bearer {token}").get(f"{BASE}/Users").status_code == 200
    with pytest.raises(Exception, match="There is no endpoint named 'erp'"):
        call_command("create_api_client", "x", "--scim-endpoint", "erp", stdout=io.StringIO())
    assert not ApiClient.objects.filter(name="x").exists()


# --- bodies that are wrong ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("raw", "scim_type", "says"),
    [
        ("{nope", "invalidSyntax", "not valid JSON"),
        ("[]", "invalidSyntax", "JSON object"),
        ('{"userName": "a", "userName": "b"}', "invalidSyntax", "userName"),
        ('{"schemas": ["' + USER + '"], "userName": "a\\u0000b"}', "invalidSyntax", "NUL"),
        ('{"schemas": ["' + USER + '"]}', "invalidValue", "userName"),
        ('{"schemas": ["' + USER + '"], "userName": "has space"}', "invalidValue", "userName"),
        ('{"schemas": ["' + USER + '"], "userName": "a", "emails": "x"}', "invalidValue", "emails"),
        (
            '{"schemas": ["' + USER + '"], "userName": "a", "emails": [{"value": "no-at"}]}',
            "invalidValue",
            "emails",
        ),
    ],
)
def test_a_wrong_user_body_is_refused_naming_what_is_wrong(scim, raw, scim_type, says):
    client, _ = scim
    body = scim_error(send(client, "POST", "/Users", raw=raw), 400)
    assert body["scimType"] == scim_type and says in body["detail"], body
    assert not ScimUser.objects.exists() and not AccessRequest.objects.exists()


@pytest.mark.django_db
def test_a_group_the_endpoint_does_not_offer_or_an_unknown_member_is_refused(scim):
    client, _ = scim
    body = scim_error(
        send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "x"}), 400
    )
    assert "not an entitlement of CRM" in body["detail"] and "crm-read" in body["detail"]
    refused = send(
        client,
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "crm-read", "members": [{"value": "nobody"}]},
    )
    assert "no User 'nobody'" in scim_error(refused, 400)["detail"]


def _too_long(limit: int) -> str:
    return "x" * (limit + 1)


# Every attribute the bridge stores in a column, one character over that column's limit.
TOO_LONG = {
    "Users": [
        ("userName", {"userName": _too_long(limits.USERNAME)}),
        ("externalId", {"externalId": _too_long(limits.SCIM_EXTERNAL_ID)}),
        ("displayName", {"displayName": _too_long(limits.PERSON_NAME)}),
        ("name.givenName", {"name": {"givenName": _too_long(limits.PERSON_NAME)}}),
        ("name.familyName", {"name": {"familyName": _too_long(limits.PERSON_NAME)}}),
        ("emails", {"emails": [{"value": "a" * limits.EMAIL + "@example.com"}]}),
        ("justification", {BRIDGE_USER: {"justification": _too_long(limits.JUSTIFICATION)}}),
    ],
    "Groups": [
        ("displayName", {"displayName": _too_long(limits.ENTITLEMENT)}),
        ("externalId", {"externalId": _too_long(limits.SCIM_EXTERNAL_ID)}),
        ("justification", {BRIDGE_GROUP: {"justification": _too_long(limits.JUSTIFICATION)}}),
    ],
}
# A body each kind accepts, that one over-long value spoils.
VALID = {
    "Users": {"schemas": [USER, BRIDGE_USER], "userName": "ada"},
    "Groups": {"schemas": [GROUP, BRIDGE_GROUP], "displayName": "crm-read"},
}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "attribute", "value"),
    [(kind, attribute, value) for kind, cases in TOO_LONG.items() for attribute, value in cases],
)
def test_a_value_longer_than_its_column_is_refused_naming_the_attribute(
    scim, kind, attribute, value
):
    client, _ = scim
    base = VALID[kind]
    created = send(client, "POST", f"/{kind}", base)
    assert created.status_code == 201, created.content
    path = f"/{kind}/{created.json()['id']}"
    model = ScimUser if kind == "Users" else ScimGroup
    stored = list(model.objects.values())
    requests_before = AccessRequest.objects.count()
    other = {"userName": "grace"} if kind == "Users" else {"displayName": "crm-write"}
    patch = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": value}]}
    for method, where, body in (
        ("POST", f"/{kind}", base | other | value),
        ("PUT", path, base | value),
        ("PATCH", path, patch),
    ):
        refused = scim_error(send(client, method, where, body), 400)
        assert refused["scimType"] == "invalidValue", (method, refused)
        assert attribute in refused["detail"], (method, refused)
    assert list(model.objects.values()) == stored
    assert AccessRequest.objects.count() == requests_before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=15,
)
# Besides short texts: one over each length the bridge stores (see TOO_LONG).
long_texts = st.sampled_from(
    sorted(
        {
            _too_long(limit)
            for limit in (
                limits.USERNAME,
                limits.PERSON_NAME,
                limits.SCIM_EXTERNAL_ID,
                limits.ENTITLEMENT,
                limits.EMAIL,
                limits.JUSTIFICATION,
            )
        }
    )
    + ["a" * limits.EMAIL + "@example.com"]
)
texts = (
    st.text(max_size=40)
    | st.sampled_from(["ada", "a@b.example", "", "crm-read", "é\u200b"])
    | long_texts
)
# A stored attribute: over-long as often as not.
stored = long_texts | texts
justifications = st.fixed_dictionaries({}, optional={"justification": stored}) | json_values
members = (
    st.lists(st.fixed_dictionaries({"value": texts}, optional={"display": stored}), max_size=3)
    | json_values
)
users = st.fixed_dictionaries(
    {"schemas": st.sampled_from([[USER], [USER, BRIDGE_USER]]) | json_values},
    optional={
        "userName": texts | json_values,
        "active": st.booleans() | texts,
        "externalId": stored,
        "name": st.fixed_dictionaries({}, optional={"givenName": stored, "familyName": stored})
        | json_values,
        "emails": st.lists(
            st.fixed_dictionaries({"value": stored}, optional={"primary": st.booleans()}),
            max_size=3,
        )
        | json_values,
        "members": members,
        "displayName": stored,
        BRIDGE_USER: justifications,
    },
)
groups = st.fixed_dictionaries(
    {
        "schemas": st.just([GROUP, BRIDGE_GROUP]) | json_values,
        # Mostly an entitlement of crm, so the other attributes are reached.
        "displayName": st.sampled_from(["crm-read", "crm-write"]) | stored,
    },
    optional={"externalId": stored, "members": members, BRIDGE_GROUP: justifications},
)
operations = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "Replace", "remove", "bogus"]) | json_values},
    optional={
        "path": st.sampled_from(
            ["active", "members", 'emails[type eq "work"].value', "name.givenName", "x[", ""]
        )
        | texts,
        "value": json_values | users | groups,
    },
)
patches = st.fixed_dictionaries(
    {"schemas": st.just([PATCH]) | json_values, "Operations": st.lists(operations, max_size=3)}
)


def too_long_examples(test):
    """Run the fuzz on an over-long value of every stored attribute, whatever it draws."""
    for kind, cases in TOO_LONG.items():
        for _, value in cases:
            patch = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": value}]}
            test = example(case=(kind[0].lower(), VALID[kind] | value), patch=patch)(test)
    return test


@pytest.mark.django_db
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@too_long_examples
@given(
    case=st.tuples(st.just("u"), users | json_values)
    | st.tuples(st.just("g"), groups | json_values),
    patch=patches | json_values,
)
def test_any_body_gets_an_answer_never_a_500_and_errors_in_scims_shape(scim, case, patch):
    """On SQLite and on PostgreSQL (which, unlike SQLite, refuses a value longer than its
    column): the over-long texts reach every stored attribute."""
    client, _ = scim
    where, body = case
    user = ScimUser.objects.filter(user_name="fuzz").first()
    if user is None:
        user_id = new_user(client, "fuzz")["id"]
        group = send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "crm-read"})
        assert group.status_code in (201, 409)
    else:
        user_id = str(user.scim_id)
    group_id = send(client, "GET", "/Groups", None).json()["Resources"][0]["id"]
    target = f"/Users/{user_id}" if where == "u" else f"/Groups/{group_id}"
    kind = "/Users" if where == "u" else "/Groups"
    for method, path, sent in (
        ("POST", kind, body),
        ("PUT", target, body),
        ("PATCH", target, patch),
    ):
        answer = send(client, method, path, sent)
        assert answer.status_code < 500, (method, path, sent, answer.content)
        if answer.status_code >= 400:
            scim_error(answer, answer.status_code)


@pytest.mark.django_db
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=st.dictionaries(
        st.sampled_from(["filter", "startIndex", "count", "attributes"]),
        texts | st.integers().map(str),
    )
)
def test_any_query_gets_a_list_or_a_scim_error(scim, query):
    client, _ = scim
    answer = client.get(f"{BASE}/Users", query)
    assert answer.status_code in (200, 400), (query, answer.content)
    if answer.status_code == 400:
        scim_error(answer, 400)


# --- retries, paging, the inventory -------------------------------------------------------------


@pytest.mark.django_db
def test_a_repeated_post_is_a_uniqueness_conflict_and_never_a_second_request(scim):
    client, _ = scim
    new_user(client, "Ada")
    again = send(client, "POST", "/Users", {"schemas": [USER], "userName": "ada"})
    assert scim_error(again, 409)["scimType"] == "uniqueness"
    assert AccessRequest.objects.count() == 1
    send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "crm-read"})
    twice = send(client, "POST", "/Groups", {"schemas": [GROUP], "displayName": "crm-read"})
    assert scim_error(twice, 409)["scimType"] == "uniqueness"


@pytest.mark.django_db
def test_users_filter_by_username_external_id_and_page_with_start_index_and_count(scim):
    client, _ = scim
    for n in range(5):
        new_user(client, f"user{n}", externalId=f"ext-{n}")
    one = client.get(f"{BASE}/Users", {"filter": 'userName eq "USER3"'}).json()
    assert [r["userName"] for r in one["Resources"]] == ["user3"]
    by_ext = client.get(f"{BASE}/Users", {"filter": 'externalId eq "ext-1"'}).json()
    assert [r["userName"] for r in by_ext["Resources"]] == ["user1"]
    page = client.get(f"{BASE}/Users", {"startIndex": 2, "count": 2}).json()
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 2, 2)
    assert [r["userName"] for r in page["Resources"]] == ["user1", "user2"]
    far = client.get(f"{BASE}/Users", {"startIndex": 10**30, "count": 10**30}).json()
    assert (far["totalResults"], far.get("Resources", [])) == (5, [])
    starts = client.get(f"{BASE}/Users", {"filter": 'userName sw "user" and externalId ew "4"'})
    assert [r["userName"] for r in starts.json()["Resources"]] == ["user4"]
    bad = scim_error(client.get(f"{BASE}/Users", {"filter": "userName eq"}), 400)
    assert bad["scimType"] == "invalidFilter"


@pytest.mark.django_db
def test_existing_accounts_are_users_and_their_entitlements_group_members(scim, offline):
    client, _ = scim
    grace = Identity.objects.create(username="grace", first_name="Grace", email="g@example.com")
    account = Account.objects.create(identity=grace, endpoint=offline, name="ghopper")
    AccountEntitlement.objects.create(account=account, entitlement="crm-admin")
    [user] = client.get(f"{BASE}/Users", {"filter": 'userName eq "ghopper"'}).json()["Resources"]
    assert (user["active"], user["emails"][0]["value"]) == (True, "g@example.com")
    status = f"{USER.replace('core', 'extension:otrsbridge').replace(':User', '')}:User:status"
    shown = client.get(f"{BASE}/Users/{user['id']}", {"attributes": status}).json()
    assert shown["urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:User"] == {
        "status": "completed"
    }
    groups = client.get(f"{BASE}/Groups").json()["Resources"]
    assert sorted(g["displayName"] for g in groups) == ["crm-admin", "crm-read", "crm-write"]
    [admin] = [g for g in groups if g["displayName"] == "crm-admin"]
    assert [m["value"] for m in admin["members"]] == [user["id"]]
    # A second read adopts nothing twice.
    client.get(f"{BASE}/Users")
    assert ScimUser.objects.count() == 1 and ScimMember.objects.count() == 1
    # A POST of the same name conflicts; disabling it asks for its removal.
    scim_error(send(client, "POST", "/Users", {"schemas": [USER], "userName": "ghopper"}), 409)
    off = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
    assert send(client, "PATCH", f"/Users/{user['id']}", off).status_code == 200
    [removal] = AccessRequest.objects.all()
    assert (removal.operation, removal.beneficiary, removal.status) == (
        "remove_account",
        grace,
        "approved",
    )


@pytest.mark.django_db
def test_an_account_whose_name_a_scim_user_holds_is_not_tried_again_at_every_read(scim, offline):
    client, _ = scim
    assert send(client, "POST", "/Users", {"schemas": [USER], "userName": "ada"}).status_code == 201
    bob = Identity.objects.create(username="bob")
    Account.objects.create(identity=bob, endpoint=offline, name="ADA")  # imported, same name
    client.get(f"{BASE}/Users")
    with CaptureQueriesContext(db) as read:
        users = client.get(f"{BASE}/Users").json()["Resources"]
    assert [u["userName"] for u in users] == ["ada"]
    assert not [q for q in read.captured_queries if "INSERT" in q["sql"].upper()]


@pytest.mark.django_db
def test_deleting_a_user_with_an_account_removes_it_and_the_user_is_gone(scim, offline):
    client, _ = scim
    linus = Identity.objects.create(username="linus")
    Account.objects.create(identity=linus, endpoint=offline, name="linus")
    [user] = client.get(f"{BASE}/Users").json()["Resources"]
    assert send(client, "DELETE", f"/Users/{user['id']}").status_code == 204
    [removal] = AccessRequest.objects.all()
    assert (removal.operation, removal.account_name) == ("remove_account", "linus")
    scim_error(send(client, "GET", f"/Users/{user['id']}"), 404)
    scim_error(send(client, "DELETE", f"/Users/{user['id']}"), 404)
    # Its account is still there until the removal's ticket is closed: not a User again.
    assert client.get(f"{BASE}/Users").json()["totalResults"] == 0
    assert AccessRequest.objects.count() == 1


# --- the token never shows ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_scim_token_is_in_no_log_line_page_or_call_row(scim, caplog, admin_client):
    client, token = scim
    with caplog.at_level(logging.DEBUG):
        user = new_user(client, "ada", emails=[{"value": "ada@example.com"}])
        send(client, "PATCH", f"/Users/{user['id']}", {"schemas": [PATCH], "Operations": []})
        send(client, "POST", "/Users", raw="{broken")
        Client(HTTP_AUTHORIZATION=f"Bearer {token}x").get(f"{BASE}/Users")
    assert caplog.records and token not in caplog.text and token[:20] not in caplog.text
    request = AccessRequest.objects.get()
    for page in (
        request.get_absolute_url(),
        "/admin/tickets/apiclient/",
        f"/admin/tickets/apiclient/{request.api_client_id}/change/",
    ):
        html = admin_client.get(page).content.decode()
        assert token not in html and token[:20] not in html, page
    assert not any(token in str(row) for row in ApiCall.objects.values())
    assert token not in json.dumps(list(ScimUser.objects.values("document")))


# --- concurrent writes (PostgreSQL's row locks) ------------------------------------------------


@pytest.fixture
def live_scim(live_server, offline) -> tuple[str, dict]:
    """The crm SCIM service on a live server (each thread its own connection), and the
    headers of its client; PostgreSQL only, where writers really run at once."""
    if db.vendor != "postgresql":
        pytest.skip("concurrent writers are PostgreSQL's; SQLite runs one writer at a time")
    client, token = api.api_client_create(name="entra", trusted=True)
    client.scim_endpoints.set([offline])
    return f"{live_server.url}{BASE}", {"Authorization": f"Bearer {token}"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_patches_of_one_group_are_serialised_and_none_is_lost(live_scim):
    url, headers = live_scim
    ids = [
        requests.post(
            f"{url}/Users",
            json={"schemas": [USER], "userName": f"u{n}"},
            headers=headers,
            timeout=30,
        ).json()["id"]
        for n in range(8)
    ]
    group = requests.post(
        f"{url}/Groups",
        json={"schemas": [GROUP], "displayName": "crm-read"},
        headers=headers,
        timeout=30,
    ).json()
    start = threading.Barrier(len(ids))
    answers: list[int] = []

    def add(user_id: str) -> None:
        # The server applies each PATCH to the member list it reads: without the row lock,
        # two that read the same list would each write it back without the other's member.
        start.wait()
        body = {
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
        }
        answer = requests.patch(
            f"{url}/Groups/{group['id']}", json=body, headers=headers, timeout=60
        )
        answers.append(answer.status_code)

    threads = [threading.Thread(target=add, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * len(ids)
    members = requests.get(f"{url}/Groups/{group['id']}", headers=headers, timeout=30).json()[
        "members"
    ]
    assert sorted(m["value"] for m in members) == sorted(ids)


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_of_one_user_make_one_request(live_scim):
    url, headers = live_scim
    start = threading.Barrier(6)
    answers: list[int] = []

    def post() -> None:
        start.wait()
        answers.append(
            requests.post(
                f"{url}/Users",
                json={"schemas": [USER], "userName": "twin"},
                headers=headers,
                timeout=60,
            ).status_code
        )

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201] + [409] * 5
    assert AccessRequest.objects.count() == 1 and ScimUser.objects.count() == 1


# --- a request that fails -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failed_request_reads_failed_and_is_asked_again_only_by_the_clients_next_write(sim):
    wrong = factories.otrs_connection(sim, name="wrong", password="not-the-password-1")
    endpoint = factories.endpoint(wrong, name="crm")
    client, token = api.api_client_create(name="entra", trusted=True)
    client.scim_endpoints.set([endpoint])
    scim = Client(HTTP_AUTHORIZATION=f"Bearer {token}", raise_request_exception=False)
    user = new_user(scim, "ada")
    services.provision_due(owner="scim-test")
    assert AccessRequest.objects.get().status == "failed"
    status = "urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:User:status"
    shown = scim.get(f"{BASE}/Users/{user['id']}", {"attributes": status}).json()
    assert shown["urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:User"] == {
        "status": "failed"
    }
    assert AccessRequest.objects.count() == 1  # not submitted again by itself
    touch = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Ada"}],
    }
    assert send(scim, "PATCH", f"/Users/{user['id']}", touch).status_code == 200
    assert list(AccessRequest.objects.values_list("operation", "status").order_by("id")) == [
        ("create_account", "failed"),
        ("create_account", "approved"),
    ]
