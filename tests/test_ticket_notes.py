"""Who and what tells a ticket: the reason typed in the console's cancel dialogs, an API
client named as a person reads it, the note sent when a SCIM client says the person left,
and the operators' email when a note fails or a ticket is reopened.

Over real HTTP to the simulator, and to the real Znuny 6.5 where OTRS takes part
(`otrs_server`).
"""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests import factories, test_notifications
from tests.test_conversation import fresh, newest_articles, sim_server, timeline
from tests.test_znuny_contract import poll, provisioned
from tickets import api, limits, services
from tickets.models import AccessRequest, Account, Identity, ProvisioningTask, TicketNote

pytestmark = pytest.mark.django_db

# Run an action as one committed change with jobs inline; the mails it sent.
sent = test_notifications.sent

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def otrs(otrs_server):
    return factories.otrs_connection(
        otrs_server, user=otrs_server.user, password=otrs_server.password
    )


# --- the console's cancel dialogs -------------------------------------------------------------


def test_the_reason_typed_in_a_cancel_dialog_reaches_the_tickets_article(
    sim, connection, crm, people, client
):
    [task, other] = provisioned(crm, people, n=2)
    client.force_login(people.olga)
    page = client.get(task.request.get_absolute_url()).content.decode()
    assert page.count(f'name="reason" maxlength="{limits.CANCEL_REASON}"') == 2  # one dialog each

    answer = client.post(
        f"/tasks/{task.pk}/cancel/", {"reason": "Wrong application, see REQ-9"}, follow=True
    )
    assert f"Task {task.pk} of {task.request} cancelled." in answer.content.decode()
    client.post(f"/requests/{other.request_id}/cancel/", {"reason": "The project was stopped"})
    services.notes_send_due()

    for done, why in ((task, "Wrong application, see REQ-9"), (other, "The project was stopped")):
        done = fresh(done)
        assert done.status == "cancelled"
        [article] = newest_articles(sim_server(sim), done.ticket.ticket_id)
        assert f"Why: {why}" in article["Body"]
        assert "Cancelled by: olga" in article["Body"]
    assert timeline(fresh(task))[-3] == "cancelled: Wrong application, see REQ-9"


@pytest.mark.parametrize(
    "reason, message",
    [
        ("stop\x00now", "Null characters are not allowed."),
        ("stop\rnow", "Write it on one line (no line breaks)."),
        ("x" * (limits.CANCEL_REASON + 1), f"at most {limits.CANCEL_REASON} characters"),
    ],
    ids=["nul", "cr", "too-long"],
)
def test_a_cancel_reason_that_cannot_be_kept_is_refused_and_nothing_is_cancelled(
    sim, connection, crm, people, client, reason, message
):
    [task] = provisioned(crm, people)
    client.force_login(people.olga)
    for url, refused in (
        (f"/tasks/{task.pk}/cancel/", f"Task {task.pk} of {task.request} was not cancelled"),
        (f"/requests/{task.request_id}/cancel/", f"{task.request} was not cancelled"),
    ):
        answer = client.post(url, {"reason": reason}, follow=True)
        assert answer.status_code == 200
        page = answer.content.decode()
        assert f"{refused}: Reason: " in page and message in page
    task = fresh(task)
    assert (task.status, task.request.status) == ("ticket_open", "in_progress")
    assert not TicketNote.objects.exists()


# --- an API client, as the agent reads it -----------------------------------------------------


def test_an_api_cancel_names_the_client_readably_in_the_article(
    sim, connection, crm, people, client
):
    iga, token = api.api_client_create(name="iga", trusted=True)
    [task] = provisioned(crm, people)
    AccessRequest.objects.filter(pk=task.request_id).update(api_client=iga)
    answer = client.post(
        f"/api/v1/requests/{task.request_id}/cancel",
        data={"reason": "left the project"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert answer.status_code == 200, answer.content
    services.notes_send_due()
    [article] = newest_articles(sim_server(sim), task.ticket.ticket_id)
    assert "Cancelled by: API client iga" in article["Body"]
    assert "api:iga" not in article["Body"]


# --- the person left --------------------------------------------------------------------------


def test_a_scim_user_deactivated_then_deleted_tells_their_other_open_tickets_once(
    otrs_server, otrs, people
):
    """Lin has an account on CRM, a pending grant on CRM and one on HR, each with an open
    ticket. The SCIM client deactivates Lin on CRM: the CRM grant's ticket gets the
    "beneficiary left" note, HR's does not; deleting the user later tells nobody twice."""
    crm = factories.endpoint(otrs, name="crm")
    name = otrs_server.unique("lin")
    lin = Identity.objects.create(username=name, first_name="Lin", last_name="Wu")
    Account.objects.create(identity=lin, endpoint=crm, name=name)
    hr = factories.endpoint(otrs, name="hr", entitlements=("hr-read",))
    Account.objects.create(identity=lin, endpoint=hr, name=name)
    grants = []
    for endpoint, entitlement in ((crm, "crm-read"), (hr, "hr-read")):
        r = services.request_submit(
            beneficiary=lin,
            endpoint=endpoint,
            operation="add_access",
            entitlements=[entitlement],
            requester=people.alice,
        )
        services.request_approve(access_request=r, by=people.bob)
        grants.append(r)
    services.provision_due(owner="test")
    crm_grant, hr_grant = (ProvisioningTask.objects.get(request=r) for r in grants)
    assert crm_grant.status == hr_grant.status == "ticket_open", crm_grant.last_error

    entra, token = api.api_client_create(name="entra", trusted=True)
    entra.scim_endpoints.set([crm])
    scim = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    found = scim.get("/scim/v2/crm/Users", {"filter": f'userName eq "{name}"'}).json()
    [user] = found["Resources"]
    path = f"/scim/v2/crm/Users/{user['id']}"
    answer = scim.patch(
        path,
        json.dumps(
            {
                "schemas": [PATCH],
                "Operations": [{"op": "replace", "path": "active", "value": False}],
            }
        ),
        content_type="application/scim+json",
    )
    assert answer.status_code == 200, answer.content

    [note] = TicketNote.objects.filter(kind="beneficiary_left")
    assert note.task_id == crm_grant.pk
    assert note.why == f"the SCIM client entra deactivated the user {name} on CRM"
    assert note.actor_label == "API client entra"
    assert AccessRequest.objects.filter(beneficiary=lin, operation="remove_account").exists()
    assert services.notes_send_due() == "1 note(s) due, 1 sent"
    [article] = newest_articles(otrs_server, crm_grant.ticket.ticket_id)
    assert article["Subject"] == "Lin Wu has left"
    assert f"the SCIM client entra deactivated the user {name} on CRM" in article["Body"]
    assert timeline(crm_grant)[-1] == (
        f'OTRS ticket {fresh(crm_grant).ticket}: note "The beneficiary left" added'
    )
    assert "The beneficiary left" not in " ".join(timeline(hr_grant))

    # Deleting the user is the same departure: no ticket hears it twice.
    assert scim.delete(path).status_code == 204
    assert TicketNote.objects.filter(kind="beneficiary_left").count() == 1


# --- the new flags mail the operators ---------------------------------------------------------


def test_a_note_the_ticket_did_not_get_mails_the_operators(otrs_server, otrs, people, sent):
    otrs.ticket_status_json = dict(otrs.ticket_status_json, cancelState="no such state")
    otrs.save(update_fields=["ticket_status_json"])
    [task] = provisioned(factories.endpoint(otrs, name="crm"), people)
    services.task_cancel(task=task, by=people.olga)
    _, [mail] = sent(services.notes_send_due)
    assert mail.subject == f"Tickets on {otrs} need an operator"
    assert 'the ticket was not told: the "Cancelled" note failed' in mail.body
    assert set(mail.to) | set(mail.bcc) == {"olga@example.com"}


def test_a_ticket_reopened_after_completion_mails_the_operators(otrs_server, otrs, people, sent):
    [task] = provisioned(factories.endpoint(otrs, name="crm"), people)
    poll(otrs)
    otrs_server.set_state(task.ticket.ticket_id, "closed successful")
    sent(lambda: poll(otrs))
    assert fresh(task).status == "completed"
    otrs_server.set_state(task.ticket.ticket_id, "open")
    _, mails = sent(lambda: poll(otrs))
    [mail] = [m for m in mails if "need an operator" in m.subject]
    assert ProvisioningTask.REOPENED_FLAG in mail.body
    assert set(mail.to) | set(mail.bcc) == {"olga@example.com"}
