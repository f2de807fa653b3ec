"""Who sees what: a requester sees the requests they filed and, of a beneficiary, only what
those requests concern; the submit form never tells them what others hold."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import Connection
from tests import factories
from tickets import services
from tickets.models import Account, AccountEntitlement, Identity

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(offline, people):
    """ada holds an account on CRM (two entitlements) and one on HR; dave, a requester,
    files a throwaway request for her on CRM."""
    hr = factories.endpoint(
        Connection.objects.get(name="offline"), name="hr", entitlements=("payroll",)
    )
    ada = Identity.objects.create(username="ada", first_name="Ada", email="ada@example.com")
    crm_account = Account.objects.create(identity=ada, endpoint=offline, name="ada.crm")
    for e in ("crm-read", "crm-admin"):
        AccountEntitlement.objects.create(account=crm_account, entitlement=e)
    hr_account = Account.objects.create(identity=ada, endpoint=hr, name="ada.payroll-secret")
    AccountEntitlement.objects.create(account=hr_account, entitlement="payroll")
    dave = factories.user("dave", "requesters")
    throwaway = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=offline,
        operation="add_access",
        entitlements=["crm-write"],
        requester=dave,
    )
    others = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=hr,
        operation="remove_access",
        entitlements=["payroll"],
        requester=people.bob,
    )
    return dave, hr, throwaway, others


def test_a_requester_sees_only_what_their_requests_concern_on_the_identity_page(
    client, world, people
):
    dave, hr, throwaway, others = world
    client.force_login(dave)
    page = client.get(reverse("tickets:identity", args=["ada"])).content.decode()
    assert "ada.crm" in page  # the account his request concerns
    assert "ada.payroll-secret" not in page and "payroll" not in page  # another endpoint
    assert "crm-admin" not in page and "crm-read" not in page  # entitlements he never named
    assert throwaway.number in page and others.number not in page
    assert "You see only what your own requests for this person concern" in page
    # An approver keeps the whole view.
    client.force_login(people.carol)
    page = client.get(reverse("tickets:identity", args=["ada"])).content.decode()
    assert "ada.payroll-secret" in page and "crm-admin" in page and others.number in page


def test_a_requester_cannot_open_others_requests(client, world):
    dave, hr, throwaway, others = world
    client.force_login(dave)
    assert client.get(throwaway.get_absolute_url()).status_code == 200
    assert client.get(others.get_absolute_url()).status_code == 404
    listing = client.get(reverse("tickets:request_list")).content.decode()
    assert throwaway.number in listing and others.number not in listing


def test_a_stranger_sees_nobody(client, world):
    client.force_login(factories.user("erin", "requesters"))
    assert client.get(reverse("tickets:identity", args=["ada"])).status_code == 404
    assert "ada" not in client.get(reverse("tickets:identity_list")).content.decode()


def test_a_person_sees_all_of_their_own_access(client, world):
    ada_user = factories.user("ada", "requesters")
    client.force_login(ada_user)
    page = client.get(reverse("tickets:identity", args=["ada"])).content.decode()
    assert "ada.payroll-secret" in page and "crm-admin" in page


@pytest.mark.parametrize(
    ("asked", "said", "hidden"),
    [
        (
            {"operation": "create_account"},
            "This request cannot be made: this person already has an account on HR.",
            "ada.payroll-secret",
        ),
        (
            {"operation": "add_access", "entitlements": ["payroll"]},
            "This request cannot be made: it does not fit the entitlements this person holds on HR.",
            "already has: payroll",
        ),
    ],
)
def test_the_form_says_why_a_request_cannot_be_made_without_listing_access(
    client, world, asked, said, hidden
):
    dave, hr, *_ = world
    client.force_login(dave)
    response = client.post(
        reverse("tickets:submit"), {"beneficiary": "ada", "endpoint": hr.pk, **asked}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert said in html
    assert hidden not in html


def test_the_form_does_not_say_who_holds_an_account_name(client, world):
    dave, hr, *_ = world
    client.force_login(dave)
    html = client.post(
        reverse("tickets:submit"),
        {
            "beneficiary": "zoe",
            "endpoint": hr.pk,
            "operation": "create_account",
            "account_name": "ada.payroll-secret",
        },
    ).content.decode()
    assert "the account name &#x27;ada.payroll-secret&#x27; is taken on HR; choose another" in html
    assert "belongs to" not in html and ">ada<" not in html


def test_the_requester_sees_the_details_for_what_their_requests_concern(client, world):
    """On CRM, where dave filed a request for ada, the form names the conflict."""
    dave, *_ = world
    client.force_login(dave)
    crm = Account.objects.get(name="ada.crm").endpoint
    html = client.post(
        reverse("tickets:submit"),
        {"beneficiary": "ada", "endpoint": crm.pk, "operation": "create_account"},
    ).content.decode()
    assert "Ada already has the account &#x27;ada.crm&#x27; on CRM." in html
