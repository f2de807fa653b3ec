"""Console pages: who sees what, login everywhere, live partials, and no secret on any page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from connections.models import ApiCall
from tests import factories
from tests.console_data import make_requests
from tests.simfixtures import sim_factory  # noqa: F401  (fixture)
from tests.test_reliability import approve_many
from tickets import services
from tickets.api import api_client_create
from tickets.models import AccessRequest, Identity, ProvisioningTask

pytestmark = pytest.mark.django_db


@pytest.fixture
def submitted(offline, people):
    return services.request_submit(
        beneficiary={"username": "ada", "first_name": "Ada", "last_name": "Lovelace"},
        endpoint=offline,
        operation="create_account",
        requester=people.alice,
        entitlements=["crm-read"],
        justification="new hire",
    )


def pages(access_request: AccessRequest) -> dict[str, str]:
    return {
        "overview": reverse("tickets:overview"),
        "board": reverse("tickets:board"),
        "requests": reverse("tickets:request_list"),
        "detail": access_request.get_absolute_url(),
        "inbox": reverse("tickets:inbox"),
        "submit": reverse("tickets:submit"),
        "entitlements": reverse("tickets:submit_entitlements"),
        "people": reverse("tickets:identity_list"),
        "identity": access_request.beneficiary.get_absolute_url(),
        "connections": reverse("connections:list"),
        "connection": access_request.endpoint.security_system.service_desk_connection.get_absolute_url(),
    }


# Which role may open which page (everything else answers 403).
EVERYONE = {"overview", "requests", "detail", "people", "identity"}
STAFF = EVERYONE | {"board", "connections", "connection"}
ALLOWED = {
    "requesters": EVERYONE | {"submit", "entitlements"},
    "approvers": EVERYONE | {"board", "inbox"},
    "operators": STAFF,
    "admins": STAFF,
}


def test_anonymous_is_sent_to_login_from_every_page(client, submitted):
    for name, url in pages(submitted).items():
        response = client.get(url)
        assert response.status_code == 302, name
        assert response["Location"].startswith(reverse("login") + "?next="), name


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_every_page_answers_for_its_roles_and_refuses_the_others(client, submitted, role):
    person = factories.user(f"someone-{role}", role)
    if role == "requesters":  # a requester sees their own request and its beneficiary
        AccessRequest.objects.filter(pk=submitted.pk).update(requester=person)
    client.force_login(person)
    for name, url in pages(submitted).items():
        response = client.get(url)
        expected = 200 if name in ALLOWED[role] else 403
        assert response.status_code == expected, (role, name, response.status_code)
        if expected == 200 and name != "entitlements":
            assert b"OTRS Bridge" in response.content
            assert b'action="/logout/"' in response.content


def test_requester_sees_only_their_own_requests(client, submitted, people, offline):
    other = services.request_submit(
        beneficiary={"username": "grace"},
        endpoint=offline,
        operation="create_account",
        requester=people.bob,
    )
    client.force_login(people.alice)
    listing = client.get(reverse("tickets:request_list")).content.decode()
    assert submitted.number in listing and other.number not in listing
    assert client.get(other.get_absolute_url()).status_code == 404
    assert client.get(other.beneficiary.get_absolute_url()).status_code == 404
    client.force_login(people.carol)  # approvers see everything
    listing = client.get(reverse("tickets:request_list")).content.decode()
    assert submitted.number in listing and other.number in listing


def test_login_page_renders_and_logs_in(client, people):
    page = client.get(reverse("login"))
    assert page.status_code == 200 and b"Log in to OTRS Bridge" in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-only"})
    assert response.status_code == 302 and response["Location"] == reverse("tickets:overview")


def test_nav_shows_links_by_role(client, people):
    factories.user("root", "admins")
    client.force_login(factories.user("root", "admins"))
    html = client.get(reverse("tickets:overview")).content.decode()
    assert 'href="/admin/"' in html and "Connections" in html
    client.force_login(people.alice)
    html = client.get(reverse("tickets:overview")).content.decode()
    assert 'href="/admin/"' not in html and reverse("tickets:board") not in html
    assert "New request" in html


def test_request_list_filters_search_and_pages(client, offline, people):
    make_requests(120, endpoint=offline, requester=people.alice)
    client.force_login(people.olga)
    url = reverse("tickets:request_list")
    first = client.get(url)
    assert first.context["page"].paginator.count == 120
    assert len(first.context["page"].object_list) == 50
    assert "page 1 of 3" in first.content.decode()
    failed = client.get(url, {"status": "failed"}).context["page"]
    assert failed.paginator.count and all(r.status == "failed" for r in failed.object_list)
    assert client.get(url, {"q": "REQ-000007"}).context["page"].paginator.count == 1
    assert client.get(url, {"q": "7"}).context["page"].paginator.count == 1
    assert client.get(url, {"q": "person00001"}).context["page"].paginator.count == 10
    assert client.get(url, {"requester": "alice"}).context["page"].paginator.count == 120
    assert client.get(url, {"requester": "nobody"}).context["page"].paginator.count == 0
    assert client.get(url, {"operation": "remove_account"}).context["page"].paginator.count == 0
    today = timezone.localdate().isoformat()
    assert client.get(url, {"until": "2000-01-01"}).context["page"].paginator.count == 0
    assert client.get(url, {"since": "2000-01-01", "until": today}).context["page"].paginator.count
    # A wrong value is ignored, not an error page.
    assert client.get(url, {"since": "yesterday", "page": "zzz"}).status_code == 200


def test_board_columns_and_agent_links(client, offline, people):
    make_requests(18, endpoint=offline, requester=people.alice)
    client.force_login(people.olga)
    response = client.get(reverse("tickets:board"))
    columns = {c.column.key: c for c in response.context["columns"]}
    assert columns["open"].total == 2 and columns["failed"].total == 2
    assert columns["closed"].total == 6  # completed, cancelled, discontinued
    html = response.content.decode()
    assert "index.pl?Action=AgentTicketZoom;TicketID=" in html
    assert "unmapped state: merged" in html  # flag badge
    assert re.search(r'<time datetime="[^"]+" title="[^"]+">', html)


def test_live_partial_slows_down_while_nothing_changes_and_resets_on_change(
    client, submitted, people
):
    client.force_login(people.alice)
    url = submitted.get_absolute_url()
    page = client.get(url)
    assert page.context["live"]["interval"] == 2
    fp = page.context["live"]["fp"]
    partial = client.get(url, {"fp": fp, "every": 2}, headers={"HX-Request": "true"})
    html = partial.content.decode()
    assert html.lstrip().startswith('<div id="live"') and "<html" not in html
    assert 'hx-trigger="every 4s"' in html
    slower = client.get(url, {"fp": fp, "every": 16}, headers={"HX-Request": "true"})
    assert 'hx-trigger="every 30s"' in slower.content.decode()
    services.request_cancel(access_request=submitted, by=people.alice)
    changed = client.get(url, {"fp": fp, "every": 16}, headers={"HX-Request": "true"})
    html = changed.content.decode()
    assert "hx-get" not in html  # finished: the partial no longer polls
    assert "Cancelled" in html


def test_live_partial_resets_to_fast_polling_on_change(client, submitted, people):
    client.force_login(people.carol)
    url = reverse("tickets:overview")
    fp = client.get(url).context["live"]["fp"]
    services.request_approve(access_request=submitted, by=people.carol)
    changed = client.get(url, {"fp": fp, "every": 8}, headers={"HX-Request": "true"})
    assert 'hx-trigger="every 2s"' in changed.content.decode()


def test_request_detail_timeline_merges_events_and_calls(client, submitted, people, offline):
    services.request_approve(access_request=submitted, by=people.carol, comment="ok")
    task = ProvisioningTask.objects.get(request=submitted)
    ApiCall.objects.create(
        connection=task.connection,
        ref=f"task:{task.pk}",
        call_name="TicketCreate",
        method="POST",
        url="http://otrs.example/Ticket",
        status_code=200,
        outcome="ok",
        request_excerpt='{"Ticket": {"Title": "Create account"}}',
    )
    ApiCall.objects.create(
        connection=task.connection,
        ref="task:999999",
        method="POST",
        url="x",
        outcome="ok",
        call_name="Elsewhere",
    )
    client.force_login(people.carol)
    response = client.get(submitted.get_absolute_url())
    kinds = [entry.kind for entry in response.context["timeline"]]
    assert kinds == ["event", "event", "event", "call"]
    html = response.content.decode()
    assert "TicketCreate" in html and "Elsewhere" not in html
    assert "approved: ok" in html


def test_identity_page_lists_accounts_and_entitlements(client, submitted, people):
    from tickets.models import Account, AccountEntitlement

    identity = Identity.objects.get(username="ada")
    account = Account.objects.create(identity=identity, endpoint=submitted.endpoint, name="ada.l")
    AccountEntitlement.objects.create(account=account, entitlement="crm-write")
    client.force_login(people.olga)
    html = client.get(identity.get_absolute_url()).content.decode()
    assert "ada.l" in html and "crm-write" in html and submitted.number in html


def test_a_username_with_a_slash_has_its_page_and_pending_request(client, people, offline):
    pending = services.request_submit(
        beneficiary={"username": "CORP/ada"},
        endpoint=offline,
        operation="create_account",
        requester=people.alice,
    )
    client.force_login(people.bob)
    identity = Identity.objects.get(username="CORP/ada")
    assert identity.get_absolute_url().endswith("/CORP/ada/")
    assert "CORP/ada" in client.get(identity.get_absolute_url()).content.decode()
    assert client.get(reverse("tickets:inbox")).status_code == 200
    assert client.get(pending.get_absolute_url()).status_code == 200


def test_no_connection_secret_on_any_page(client, sim_factory, people):  # noqa: F811
    secret = "Zebra-Secret-7741"
    sim = sim_factory(password=secret)
    world = factories.leaky_world(sim, secret=secret, requester=people.alice, approver=people.carol)
    r, session_id = world.request, world.session_id
    root = factories.user("root", "admins", "approvers", "requesters", superuser=True)
    client.force_login(root)
    checked = 0
    for name, url in pages(r).items():
        html = client.get(url).content.decode()
        assert secret not in html, name
        assert session_id not in html, name
        checked += 1
    partial = client.get(r.get_absolute_url(), headers={"HX-Request": "true"}).content.decode()
    assert secret not in partial and session_id not in partial and "Leaky" in partial
    assert checked == 11


def test_the_connection_pages_say_when_polling_last_went_well(client, connection, people):
    client.force_login(factories.user("root", "admins"))
    detail, overview = connection.get_absolute_url(), reverse("tickets:overview")
    # Not yet polled, not tested: said so, and the test is "not run" rather than failed.
    page = client.get(detail).content.decode()
    assert re.search(r"Last good poll</dt>\s*<dd><span class=\"muted\">None yet", page)
    assert "Test not run" in page
    assert "No good poll yet" in client.get(overview).content.decode()

    services.tickets_poll(connection=connection)
    connection.refresh_from_db()
    stamp = connection.polled_ok_at.isoformat()
    assert re.search(
        rf'Last good poll</dt>\s*<dd><time datetime="{re.escape(stamp)}"',
        client.get(detail).content.decode(),
    )
    assert re.search(
        rf'Last good poll <time datetime="{re.escape(stamp)}"',
        client.get(overview).content.decode(),
    )


def test_the_connection_page_says_what_caused_each_call(client, connection, people):
    crm = factories.endpoint(connection, name="crm")
    [request_id] = approve_many(crm, people, 1)
    services.provision_due(owner="pages")
    task = ProvisioningTask.objects.select_related("ticket", "request").get(request_id=request_id)
    services.tickets_poll(connection=connection)
    services.ticket_refresh(ticket=task.ticket, actor=services.Actor.job("refresh"))
    client.force_login(factories.user("root", "admins"))
    page = client.get(connection.get_absolute_url()).content.decode()
    causes = re.findall(r'<td data-label="For" class="small">(.*?)</td>', page)
    url = task.request.get_absolute_url()
    assert f'<a href="{url}">{task.request.number} · task {task.pk}</a>' in causes
    assert f'<a href="{url}">status of {task.ticket.ticket_number}</a>' in causes
    assert "polling" in causes
    assert not [c for c in causes if re.search(r"\b(task|refresh|poll):", c)]  # no raw refs
    # The request's own timeline lists its calls with their cause in words too.
    detail = client.get(url).content.decode()
    assert f" ms · task {task.pk}</span>" in detail and " ms · status refresh</span>" in detail
    assert not re.search(r" ms · (task|refresh|poll):", detail)


def test_people_and_api_clients_show_by_name_where_a_request_says_who(client, offline, people):
    people.alice.first_name, people.alice.last_name = "Alice", "Archer"
    people.alice.save()
    by_person = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=offline,
        operation="create_account",
        requester=people.alice,
        entitlements=["crm-read"],
    )
    iga, _ = api_client_create(name="iga", trusted=True)
    by_client = services.request_submit(
        beneficiary={"username": "bea"},
        endpoint=offline,
        operation="create_account",
        api_client=iga,
        entitlements=["crm-read"],
        upstream_approver="Mia Manager (IGA)",
    )
    client.force_login(people.olga)
    detail = client.get(by_person.get_absolute_url()).content.decode()
    assert re.search(r"<dt>Requested by</dt><dd>Alice Archer \(alice\) ·", detail)
    assert "Person: Alice Archer (alice)</div>" in detail  # on the timeline too
    detail = client.get(by_client.get_absolute_url()).content.decode()
    assert re.search(r"<dt>Requested by</dt><dd>API client iga ·", detail)
    assert "Approved by Mia Manager (IGA) ·" in detail
    listing = client.get(reverse("tickets:request_list")).content.decode()
    requesters = re.findall(r'<td data-label="Requester">(.*?)</td>', listing)
    assert sorted(requesters) == ["API client iga", "Alice Archer (alice)"]
