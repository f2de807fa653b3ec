"""Who may decide a request: not its requester, not its beneficiary, the application's owners
when it names some, and two different approvers when it requires two approvals."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from tests import factories
from tickets import services
from tickets.models import AccessRequest, Identity

pytestmark = pytest.mark.django_db


def submit(endpoint, requester=None, username="ada", **kw):
    return services.request_submit(
        beneficiary={"username": username, "email": f"{username}@example.com"},
        endpoint=endpoint,
        operation="create_account",
        requester=requester,
        **kw,
    )


def nav_badge(html: str) -> str:
    """The count beside "Approvals" in the navigation ("" when there is none)."""
    link = html.split('href="/inbox/"', 1)[1].split("</a>", 1)[0]
    return (
        link.split('class="count"', 1)[1].split(">", 1)[1].split("<", 1)[0]
        if "count" in link
        else ""
    )


# --- the link between a person and a console user ------------------------------------------------


def test_a_person_is_linked_to_the_user_with_the_same_username_or_address(people):
    by_name = Identity.objects.create(username="bob")
    by_email = Identity.objects.create(username="c.lovelace", email="carol@example.com")
    nobody = Identity.objects.create(username="ada", email="ada@example.com")
    assert by_name.user == people.bob
    assert by_email.user == people.carol
    assert nobody.user is None
    # A user created later links the person waiting for them.
    ada = factories.user("ada", "approvers")
    nobody.refresh_from_db()
    assert nobody.user == ada


def test_an_explicit_link_is_kept(people):
    person = Identity.objects.create(username="bob", user=people.carol)
    person.save()
    assert Identity.objects.get(pk=person.pk).user == people.carol


# --- nobody decides their own access --------------------------------------------------------------


def test_the_beneficiary_cannot_approve_nor_reject_in_the_service(offline, people):
    r = submit(offline, people.alice, username="bob")
    for decide in (services.request_approve, services.request_reject):
        with pytest.raises(PermissionDenied) as refused:
            decide(access_request=r, by=people.bob)
        assert str(refused.value) == (
            f"You are the beneficiary of {r.number}; another approver must decide."
        )
    assert AccessRequest.objects.get(pk=r.pk).status == "pending_approval"
    services.request_approve(access_request=r, by=people.carol)
    assert AccessRequest.objects.get(pk=r.pk).status == "approved"


def test_the_beneficiary_of_an_api_request_cannot_approve_it_in_the_console(
    client, offline, people
):
    """An API request has no requester; its beneficiary still may not decide it."""
    api_client, token = services_api_client()
    response = client.post(
        "/api/v1/requests",
        {
            "beneficiary": {"username": "bob", "email": "bob@example.com"},
            "endpoint": offline.name,
            "operation": "create_account",
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 201, response.content
    r = AccessRequest.objects.get(pk=response.json()["id"])
    assert r.requester is None and r.beneficiary.user == people.bob
    client.force_login(people.bob)
    inbox = client.get(reverse("tickets:inbox")).content.decode()
    assert f"You are the beneficiary of {r.number}; another approver must decide." in inbox
    assert reverse("tickets:request_approve", args=[r.pk]) not in inbox
    forced = client.post(reverse("tickets:request_approve", args=[r.pk]))
    assert forced.status_code == 403
    page = forced.content.decode()
    assert f"You are the beneficiary of {r.number}; another approver must decide." in page
    assert "Your role does not include this" not in page
    assert AccessRequest.objects.get(pk=r.pk).status == "pending_approval"


def services_api_client(trusted: bool = False):
    from tickets.api import api_client_create

    return api_client_create(name="upstream-iga", trusted=trusted)


@pytest.mark.parametrize("approver", ["bob", "BOB@example.com", "ada"])
def test_an_upstream_approval_by_the_beneficiary_is_refused_in_the_api(
    client, offline, people, approver
):
    """A trusted client's request arrives approved by its upstream approver: not when that
    approver is the beneficiary (by username or address, of the person or their user)."""
    Identity.objects.create(username="ada", email="ada@example.com", user=people.bob)
    _, token = services_api_client(trusted=True)
    response = client.post(
        "/api/v1/requests",
        {
            "beneficiary": {"username": "ada"},
            "endpoint": offline.name,
            "operation": "create_account",
            "upstream_approver": approver,
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 422, response.content
    assert response.json()["fields"]["upstream_approver"] == [
        f"{approver} is the beneficiary of this request; another approver must decide."
    ]
    assert not AccessRequest.objects.exists()


@pytest.mark.parametrize(
    "second",
    [{"username": "bob.admin", "email": "BOB@example.com"}, {"username": "BOB", "email": ""}],
)
def test_a_second_identity_with_the_approvers_name_is_still_their_own_access(
    client, offline, people, second
):
    """The link is one-to-one: bob's first identity takes it, a second one carrying his
    address or username stays unlinked, and is still bob in every place that asks."""
    submit(offline, people.alice, username="bob")  # bob's first identity, linked to him
    r = submit(offline, people.alice, username="x")
    r.beneficiary = Identity.objects.create(**second)
    r.save()
    assert r.beneficiary.user is None
    refusal = f"You are the beneficiary of {r.number}; another approver must decide."
    with pytest.raises(PermissionDenied, match=refusal):
        services.request_approve(access_request=r, by=people.bob)
    client.force_login(people.bob)
    inbox = client.get(reverse("tickets:inbox")).content.decode()
    assert refusal in inbox and reverse("tickets:request_approve", args=[r.pk]) not in inbox
    assert nav_badge(inbox) == ""  # neither of bob's own two
    forced = client.post(reverse("tickets:request_approve", args=[r.pk]))
    assert forced.status_code == 403 and refusal in forced.content.decode()
    assert people.bob not in services.governance.deciders(r)
    assert people.carol in services.governance.deciders(r)
    assert AccessRequest.objects.get(pk=r.pk).status == "pending_approval"


def test_the_api_refuses_an_upstream_approver_whose_address_the_beneficiary_carries(
    client, offline, people
):
    submit(offline, people.alice, username="bob")  # bob's first identity, linked to him
    _, token = services_api_client(trusted=True)
    response = client.post(
        "/api/v1/requests",
        {
            "beneficiary": {"username": "bob.admin", "email": "Bob@Example.com"},
            "endpoint": offline.name,
            "operation": "create_account",
            "upstream_approver": "bob",
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 422, response.content
    assert response.json()["fields"]["upstream_approver"] == [
        "bob is the beneficiary of this request; another approver must decide."
    ]
    assert not Identity.objects.filter(username="bob.admin").exists()


def test_a_requester_forcing_a_decision_on_their_own_request_hears_the_real_reason(
    client, offline, people
):
    """alice holds no approver role; her own request is refused for being hers, which is
    the rule that would stop her even with the role."""
    r = submit(offline, people.alice)
    client.force_login(people.alice)
    forced = client.post(reverse("tickets:request_reject", args=[r.pk]))
    assert forced.status_code == 403
    assert f"You requested {r.number}; another approver must decide." in forced.content.decode()
    other = submit(offline, people.bob, username="bea")
    forced = client.post(reverse("tickets:request_approve", args=[other.pk]))
    assert forced.status_code == 403
    assert "needs the approver role" in forced.content.decode()


def test_the_badge_counts_only_what_the_user_may_decide(client, offline, people):
    submit(offline, people.alice, username="bob")  # bob is its beneficiary
    submit(offline, people.bob, username="bea")  # bob requested it
    submit(offline, people.alice, username="cid")  # bob may decide this one
    client.force_login(people.bob)
    page = client.get(reverse("tickets:inbox")).content.decode()
    assert nav_badge(page) == "1"
    assert page.count("Approve…") == 1
    client.force_login(people.carol)
    assert nav_badge(client.get(reverse("tickets:inbox")).content.decode()) == "3"


# --- owners --------------------------------------------------------------------------------------


def test_only_the_owners_and_admins_decide_an_application_that_has_owners(client, offline, people):
    system = offline.security_system
    system.owners.add(people.carol)
    r = submit(offline, people.alice)
    with pytest.raises(PermissionDenied, match=f"Only the owners of {system}"):
        services.request_approve(access_request=r, by=people.bob)
    client.force_login(people.bob)
    inbox = client.get(reverse("tickets:inbox")).content.decode()
    assert f"Only the owners of {system} (or an admin) may decide {r.number}" in inbox
    assert nav_badge(inbox) == ""
    forced = client.post(reverse("tickets:request_approve", args=[r.pk]))
    assert forced.status_code == 403 and "Only the owners" in forced.content.decode()
    services.request_approve(access_request=r, by=people.carol)
    assert AccessRequest.objects.get(pk=r.pk).status == "approved"


def test_an_owner_group_and_an_admin_may_decide(offline, people):
    system = offline.security_system
    owners = Group.objects.create(name="crm-owners")
    system.owner_groups.add(owners)
    first, second = submit(offline, people.alice), submit(offline, people.alice, username="bea")
    with pytest.raises(PermissionDenied, match="Only the owners"):
        services.request_approve(access_request=first, by=people.bob)
    people.bob.groups.add(owners)
    bob = type(people.bob).objects.get(pk=people.bob.pk)
    services.request_approve(access_request=first, by=bob)
    admin = factories.user("root", superuser=True)
    services.request_reject(access_request=second, by=admin, comment="not needed")
    assert {r.status for r in AccessRequest.objects.all()} == {"approved", "rejected"}


# --- two approvals -------------------------------------------------------------------------------


def test_two_approvals_an_owner_first_then_another_approver(client, offline, people):
    system = offline.security_system
    system.two_approvals = True
    system.save()
    system.owners.add(people.carol)
    r = submit(offline, people.alice)
    client.force_login(people.bob)
    inbox = client.get(reverse("tickets:inbox")).content.decode()
    assert "Owner approval (1 of 2), then a second approver" in inbox
    assert f"Only the owners of {system}" in inbox  # bob is not an owner: not the first
    client.force_login(people.carol)
    response = client.post(
        reverse("tickets:request_approve", args=[r.pk]), {"comment": "ok from the owner"}
    )
    flashed = [str(m) for m in response.wsgi_request._messages]
    assert flashed == [
        f"First approval of {r.number} recorded; it now waits for a second approver."
    ]
    client.force_login(people.bob)
    r.refresh_from_db()
    assert r.status == "pending_approval" and r.first_approved_by == people.carol
    assert not r.tasks.exists()
    with pytest.raises(PermissionDenied, match="You gave .* its first approval"):
        services.request_approve(access_request=r, by=people.carol)
    inbox = client.get(reverse("tickets:inbox")).content.decode()
    assert "Second approval (2 of 2); first approved by carol" in inbox
    assert nav_badge(inbox) == "1"
    response = client.post(reverse("tickets:request_approve", args=[r.pk]), {"comment": "second"})
    assert response.status_code == 302
    flashed = [str(m) for m in response.wsgi_request._messages]
    assert flashed == [f"{r.number} approved. Its tasks are queued for the service desk."]
    r.refresh_from_db()
    assert r.status == "approved" and r.decided_by == people.bob and r.tasks.count() == 1
    reasons = list(r.events.values_list("reason", flat=True))
    assert "first approval: ok from the owner; waits for a second approver" in reasons
    assert "approved: second" in reasons


def test_without_owners_the_first_of_two_approvals_is_not_called_the_owners(
    client, offline, people
):
    system = offline.security_system
    system.two_approvals = True
    system.save()
    first, waiting = submit(offline, people.alice), submit(offline, people.alice, username="bea")
    submit(offline, people.alice, username="cid")
    client.force_login(people.bob)
    inbox = client.get(reverse("tickets:inbox")).content.decode()
    assert "First approval (1 of 2), then a second approver" in inbox
    assert "Owner approval" not in inbox
    services.request_approve(access_request=first, by=people.carol)
    services.request_approve(access_request=waiting, by=people.carol)
    services.request_approve(access_request=first, by=people.bob)  # approved: waits no more
    client.force_login(factories.user("olga", "operators"))
    card = client.get(reverse("tickets:overview")).content.decode()
    card = card.split("Waiting for approval", 1)[1].split("</a>", 1)[0]
    assert ">2<" in card
    assert "requests waiting for a decision, 1 of them for the second of two approvals" in card


def test_the_inbox_asks_the_same_number_of_queries_for_many_requests(client, offline, people):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    offline.security_system.owners.add(people.carol)  # bob may decide none of them
    client.force_login(people.bob)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("tickets:inbox")).status_code == 200
        return len(captured.captured_queries)

    for n in range(3):
        submit(offline, people.alice, username=f"few{n}")
    few = queries()
    for n in range(30):
        submit(offline, people.alice, username=f"many{n}")
    assert queries() == few
