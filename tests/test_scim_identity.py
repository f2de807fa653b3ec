"""The person behind a SCIM User: who may change their name and email, and every open
ticket of theirs hearing of a change. A token is scoped to endpoints, not to the person, whose
email receives their notifications and links them to a console user."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests import factories
from tests.test_scim_service import BASE, PATCH, USER, new_user, send
from tickets import api, services
from tickets.models import AccessRequest, Account, Identity, ProvisioningTask, TaskEvent, TicketNote


def identity_events() -> list[str]:
    return list(
        TaskEvent.objects.filter(reason__startswith="the identity changed")
        .order_by("id")
        .values_list("reason", flat=True)
    )


@pytest.mark.django_db
@pytest.mark.parametrize("elsewhere", ["account", "request", "console user"])
def test_a_client_never_rewrites_a_person_used_outside_its_endpoints(
    scim, offline, django_user_model, elsewhere
):
    client, _ = scim
    erp = factories.endpoint(offline.security_system.service_desk_connection, name="erp")
    grace = Identity.objects.create(
        username="grace", first_name="Grace", last_name="", email="grace@corp.example"
    )
    if elsewhere == "account":
        Account.objects.create(identity=grace, endpoint=erp, name="grace")
    elif elsewhere == "request":
        services.request_submit(
            beneficiary=grace,
            endpoint=erp,
            operation="create_account",
            account_name="grace",
            justification="needs the ledger",
        )
    else:
        Identity.objects.filter(pk=grace.pk).update(
            user=django_user_model.objects.create(username="ghopper")
        )
    before = Identity.objects.filter(pk=grace.pk).values().get()
    mallory = {
        "name": {"givenName": "Mallory", "familyName": "Evil"},
        "emails": [{"value": "mallory@evil.example", "primary": True}],
    }
    user = new_user(client, "grace", **mallory)
    # The account on crm is asked for; the person stays who they are everywhere.
    [create] = AccessRequest.objects.filter(endpoint=offline)
    assert (create.operation, create.beneficiary_id) == ("create_account", grace.pk)
    assert Identity.objects.filter(pk=grace.pk).values().get() == before
    # What the client pushed is kept on its User, and read back as it pushed it.
    shown = send(client, "GET", f"/Users/{user['id']}").json()
    assert shown["emails"][0]["value"] == "mallory@evil.example"
    patch = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "path": "name.familyName", "value": "Hopper-Evil"}],
    }
    assert send(client, "PATCH", f"/Users/{user['id']}", patch).status_code == 200
    assert Identity.objects.filter(pk=grace.pk).values().get() == before
    assert identity_events() == [] and not TicketNote.objects.exists()


@pytest.mark.django_db
def test_a_change_to_a_person_without_an_open_task_is_on_their_newest_requests_timeline(
    scim, offline
):
    client, _ = scim
    linus = Identity.objects.create(username="linus", email="linus@old.example")
    Account.objects.create(identity=linus, endpoint=offline, name="linus")
    waiting = services.request_submit(
        beneficiary=linus,
        endpoint=offline,
        operation="add_access",
        account_name="linus",
        entitlements=["crm-read"],
        justification="reports",
    )
    assert not waiting.tasks.exists()  # waits for an approver: no task yet
    [user] = client.get(f"{BASE}/Users").json()["Resources"]
    patch = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "path": "emails", "value": [{"value": "l@new.example"}]}],
    }
    assert send(client, "PATCH", f"/Users/{user['id']}", patch).status_code == 200
    assert Identity.objects.get(pk=linus.pk).email == "l@new.example"
    [event] = TaskEvent.objects.filter(reason__startswith="the identity changed")
    assert (event.request_id, event.task_id, event.actor_label) == (waiting.pk, None, "api:entra")
    assert event.reason == "the identity changed: email linus@old.example → l@new.example"


@pytest.mark.django_db(transaction=True)
def test_a_person_only_this_client_provisions_follows_it_and_every_open_ticket_hears(sim):
    connection = factories.otrs_connection(sim)
    crm = factories.endpoint(connection, name="crm")
    erp = factories.endpoint(connection, name="erp")
    client, token = api.api_client_create(name="entra", trusted=True)
    client.scim_endpoints.set([crm, erp])
    scim = Client(HTTP_AUTHORIZATION=f"Bearer {token}", raise_request_exception=False)
    ada = {"name": {"givenName": "Ada"}, "emails": [{"value": "ada@corp.example"}]}
    on_crm = new_user(scim, "ada", **ada)
    # The same person on the client's other endpoint: an empty family name is filled.
    answer = scim.post(
        "/scim/v2/erp/Users",
        data=json.dumps(
            {"schemas": [USER], "userName": "ada", "name": {"givenName": "Ada", "familyName": "L"}}
        ),
        content_type="application/scim+json",
    )
    assert answer.status_code == 201, answer.content
    assert identity_events() == ["the identity changed: family name (none) → L"] * 2
    services.provision_due(owner="scim-test")
    tasks = {t.endpoint.name: t for t in ProvisioningTask.objects.select_related("endpoint")}
    assert {name: t.status for name, t in tasks.items()} == {
        "crm": "ticket_open",
        "erp": "ticket_open",
    }
    # A new name and email on crm: the person changes, and both open tickets hear of it.
    patch = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "replace", "path": "name.givenName", "value": "Augusta"},
            {"op": "replace", "path": "userName", "value": "augusta"},
            {"op": "replace", "path": "emails", "value": [{"value": "augusta@corp.example"}]},
        ],
    }
    assert send(scim, "PATCH", f"/Users/{on_crm['id']}", patch).status_code == 200
    person = Identity.objects.get(username="ada")
    assert (person.first_name, person.last_name, person.email) == (
        "Augusta",
        "L",
        "augusta@corp.example",
    )
    new = "given name Ada → Augusta; email ada@corp.example → augusta@corp.example"
    notes = {n.task.endpoint.name: n for n in TicketNote.objects.select_related("task__endpoint")}
    assert {name: (n.kind, n.why) for name, n in notes.items()} == {
        # The account name is crm's: only crm's ticket hears of it.
        "crm": ("identity_changed", f"{new}; userName ada → augusta"),
        "erp": ("identity_changed", new),
    }
    assert sorted(identity_events()[2:]) == sorted(
        f"the identity changed: {n.why}" for n in notes.values()
    )
    services.notes_send_due()
    assert set(TicketNote.objects.values_list("status", flat=True)) == {"sent"}
