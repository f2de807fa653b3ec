"""The submit-request form: entitlements follow the endpoint, and every error shows inline."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tickets import limits
from tickets.models import AccessRequest, Account, Identity

pytestmark = pytest.mark.django_db


def test_form_offers_the_endpoints_entitlements_as_checkboxes(client, offline, people):
    client.force_login(people.alice)
    page = client.get(reverse("tickets:submit")).content.decode()
    assert "Choose an endpoint to see the entitlements" in page
    assert 'hx-get="/requests/new/entitlements/"' in page
    partial = client.get(reverse("tickets:submit_entitlements"), {"endpoint": offline.pk})
    html = partial.content.decode()
    assert "<html" not in html and html.count('type="checkbox" name="entitlements"') == 3
    assert 'value="crm-admin"' in html


def test_submit_creates_the_request_and_says_what_next(client, offline, people):
    client.force_login(people.alice)
    response = client.post(
        reverse("tickets:submit"),
        {
            "beneficiary": "ada",
            "beneficiary_first_name": "Ada",
            "endpoint": offline.pk,
            "operation": "create_account",
            "entitlements": ["crm-read", "crm-write"],
            "justification": "new hire",
        },
    )
    r = AccessRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == r.get_absolute_url()
    assert (r.requester, r.entitlements) == (people.alice, ["crm-read", "crm-write"])
    assert Identity.objects.get(username="ada").first_name == "Ada"


def test_service_errors_show_inline_on_their_fields(client, offline, people):
    identity = Identity.objects.create(username="ada")
    Account.objects.create(identity=identity, endpoint=offline, name="ada")
    client.force_login(people.alice)
    response = client.post(
        reverse("tickets:submit"),
        {"beneficiary": "ada", "endpoint": offline.pk, "operation": "create_account"},
    )
    assert response.status_code == 400
    form = response.context["form"]
    # alice never asked for ada's access on this endpoint: she learns why the request
    # cannot be made, not which account ada holds.
    assert form.errors["operation"] == [
        f"This request cannot be made: this person already has an account on {offline}."
    ]
    html = response.content.decode()
    assert 'id="id_operation-errors"' in html and "'ada'" not in html
    assert AccessRequest.objects.count() == 0


def test_access_change_without_entitlements_is_refused_inline(client, offline, people):
    identity = Identity.objects.create(username="ada")
    Account.objects.create(identity=identity, endpoint=offline, name="ada")
    client.force_login(people.alice)
    response = client.post(
        reverse("tickets:submit"),
        {"beneficiary": "ada", "endpoint": offline.pk, "operation": "add_access"},
    )
    assert response.context["form"].errors["entitlements"] == [
        "Name at least one entitlement for an access change."
    ]
    # The checkboxes of the chosen endpoint are still there, ready to tick.
    assert response.content.decode().count('name="entitlements"') == 3


def test_form_errors_before_the_service(client, offline, people):
    client.force_login(people.alice)
    response = client.post(
        reverse("tickets:submit"),
        {"beneficiary": "", "endpoint": "999", "operation": "fly", "beneficiary_email": "nope"},
    )
    errors = response.context["form"].errors
    assert set(errors) == {"beneficiary", "endpoint", "operation", "beneficiary_email"}
    assert AccessRequest.objects.count() == 0


def test_only_requesters_submit(client, offline, people):
    client.force_login(people.olga)
    response = client.post(
        reverse("tickets:submit"),
        {"beneficiary": "ada", "endpoint": offline.pk, "operation": "create_account"},
    )
    assert response.status_code == 403 and AccessRequest.objects.count() == 0


def _submit_ada(client, endpoint, **fields):
    body = {"beneficiary": "ada", "endpoint": endpoint.pk, "operation": "create_account"}
    return client.post(reverse("tickets:submit"), {**body, **fields})


def test_justification_over_the_limit_is_refused_with_a_message(client, offline, people):
    """The console refuses what the API refuses: both read tickets/limits.py."""
    client.force_login(people.alice)
    response = _submit_ada(client, offline, justification="x" * (limits.JUSTIFICATION + 1))
    assert response.status_code == 400
    assert response.context["form"].errors["justification"] == [
        f"Ensure this value has at most {limits.JUSTIFICATION} characters "
        f"(it has {limits.JUSTIFICATION + 1})."
    ]
    assert "at most 5000 characters" in response.content.decode()
    assert AccessRequest.objects.count() == 0


def test_more_entitlements_than_a_request_may_name_are_refused(client, offline, people):
    offline.entitlements = [f"e{i}" for i in range(limits.ENTITLEMENTS_PER_REQUEST + 1)]
    offline.save()
    client.force_login(people.alice)
    response = _submit_ada(client, offline, entitlements=offline.entitlements)
    assert response.context["form"].errors["entitlements"] == [
        "Choose at most 100 entitlements; submit another request for the rest."
    ]
    assert AccessRequest.objects.count() == 0
