"""The SCIM service driven as Entra ID's provisioning drives a non-gallery application:
find the user by userName, create it, PATCH its attributes, add it to a group and remove
it, PATCH `active` to "False". Every change becomes a request and a ticket; the agent
closes each ticket in OTRS; the SCIM resources then read "completed".

Runs against the simulator and the real Znuny 6.5 (`otrs_server`), over real HTTP: the
client talks to a live server, the bridge to the ticket system.
"""

from __future__ import annotations

import pytest
import requests

from tests import factories
from tickets import api, services
from tickets.models import (
    AccessRequest,
    Account,
    Identity,
    ProvisioningTask,
    ScimChange,
    TaskEvent,
    TicketNote,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BRIDGE = "urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:User"
BRIDGE_GROUP = "urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:Group"


class Entra:
    """What Entra ID's provisioning service sends, in its own spelling (capitalised ops,
    "False" as a string, `members` removed by value)."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

    def call(self, method: str, path: str, body: dict | None = None, **params) -> requests.Response:
        return requests.request(
            method, self.base + path, json=body, params=params, headers=self.headers, timeout=30
        )

    def patch(self, path: str, *operations: dict) -> dict:
        answer = self.call("PATCH", path, {"schemas": [PATCH], "Operations": list(operations)})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def bridge(self, path: str, extension: str = BRIDGE) -> dict:
        """Where the resource's changes stand: the extension's attributes, asked for by
        name, as SCIM returns what a client does not write."""
        names = ("status", "operation", "request", "ticketNumber", "changes", "endpoint")
        answer = self.call("GET", path, attributes=",".join(f"{extension}:{n}" for n in names))
        assert answer.status_code == 200, answer.text
        return answer.json()[extension]


@pytest.fixture
def setup(otrs_server, live_server):
    connection = factories.otrs_connection(
        otrs_server, user=otrs_server.user, password=otrs_server.password
    )
    endpoint = factories.endpoint(connection, name="crm")
    client, token = api.api_client_create(name="entra", trusted=True)
    client.scim_endpoints.set([endpoint])
    return connection, Entra(f"{live_server.url}/scim/v2/crm", token)


def provision() -> list[ProvisioningTask]:
    """The provisioning job's run; the tasks it opened a ticket for."""
    services.provision_due(owner="scim-test")
    opened = list(
        ProvisioningTask.objects.filter(status="ticket_open", ticket__is_open=True).select_related(
            "ticket", "request"
        )
    )
    assert not ProvisioningTask.objects.filter(status__in=("failed", "retry_wait")).exists(), [
        t.last_error for t in ProvisioningTask.objects.all()
    ]
    return opened


def agent_closes(otrs_server, connection, task: ProvisioningTask) -> None:
    """The agent works the ticket and closes it in OTRS; the poll job sees it."""
    otrs_server.set_state(task.ticket.ticket_id, "closed successful")
    connection.refresh_from_db()
    result = services.tickets_poll(connection=connection)
    assert result.errors == [], result.errors
    task.refresh_from_db()
    assert task.status == "completed", (task.status, task.flag)


def test_entra_provisioning_sequence_through_tickets_closed_by_an_agent(otrs_server, setup):
    connection, entra = setup
    name = otrs_server.unique("ada") + "@contoso.example"

    # 1. Entra looks the user up by its matching attribute: not there.
    found = entra.call("GET", "/Users", filter=f'userName eq "{name}"').json()
    assert (found["totalResults"], found.get("Resources", [])) == (0, [])

    # 2. It creates the user: 201 at once, and a create_account request approved upstream.
    created = entra.call(
        "POST",
        "/Users",
        {
            "schemas": [USER],
            "externalId": "0a1b2c3d",
            "userName": name,
            "active": True,
            "displayName": "Ada Lovelace",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"primary": True, "type": "work", "value": "ada@contoso.example"}],
        },
    )
    assert created.status_code == 201, created.text
    user = created.json()
    path = f"/Users/{user['id']}"
    assert created.headers["Location"].endswith(path)
    [create] = AccessRequest.objects.filter(operation="create_account")
    assert (create.status, create.account_name, create.decided_by_label) == (
        "approved",
        name,
        "SCIM client entra",
    )
    assert (create.beneficiary.first_name, create.beneficiary.email) == (
        "Ada",
        "ada@contoso.example",
    )
    assert entra.bridge(path)["status"] == "pending"

    # A retried POST (Entra timed out) is a conflict, never a second request.
    again = entra.call("POST", "/Users", {"schemas": [USER], "userName": name.upper()})
    assert again.status_code == 409 and again.json()["scimType"] == "uniqueness"
    assert AccessRequest.objects.count() == 1

    # It adds the user to a group at once: that waits for the account to exist.
    groups = entra.call("GET", "/Groups", filter='displayName eq "crm-write"').json()
    assert groups["totalResults"] == 1
    group_path = f"/Groups/{groups['Resources'][0]['id']}"
    entra.patch(group_path, {"op": "Add", "path": "members", "value": [{"value": user["id"]}]})
    assert AccessRequest.objects.count() == 1
    waiting = [c for c in entra.bridge(path)["changes"] if c["operation"] == "Add access"]
    assert [(c["entitlement"], c["status"]) for c in waiting] == [("crm-write", "pending")]

    # 3. The provisioning job opens the ticket; the resource shows it.
    [task] = provision()
    shown = entra.bridge(path)
    assert (shown["status"], shown["ticketNumber"]) == ("ticket open", task.ticket.ticket_number)

    # 4. Entra pushes a new name and work email: the identity follows, the open task hears.
    patched = entra.patch(
        path,
        {"op": "Replace", "path": "name.givenName", "value": "Augusta"},
        {
            "op": "Replace",
            "path": 'emails[type eq "work"].value',
            "value": "augusta@contoso.example",
        },
    )
    assert patched["name"]["givenName"] == "Augusta"
    identity = Identity.objects.get(username=name)
    assert (identity.first_name, identity.email) == ("Augusta", "augusta@contoso.example")
    told = TaskEvent.objects.get(task=task, reason__startswith="the identity changed")
    assert "given name Ada → Augusta" in told.reason
    assert "email ada@contoso.example → augusta@contoso.example" in told.reason
    assert (told.actor_kind, told.actor_label) == ("api", "api:entra")
    # The notes job adds it to the ticket: the agent reads the new name and address there.
    [note] = TicketNote.objects.filter(task=task, kind="identity_changed")
    assert note.why == told.reason.removeprefix("the identity changed: ")
    services.notes_send_due()
    note.refresh_from_db()
    assert (note.status, note.last_error) == ("sent", "")
    [article] = otrs_server.ticket(
        task.ticket.ticket_id, AllArticles=1, ArticleOrder="DESC", ArticleLimit=1
    )["Article"]
    assert str(article["ArticleID"]) == str(note.article_id)
    assert article["Subject"] == f"Details of {name} changed"
    assert "given name Ada → Augusta" in article["Body"]
    assert "Now: Augusta Lovelace <augusta@contoso.example>" in article["Body"]

    # 5. The agent closes the ticket: the account exists, the waiting access is requested.
    agent_closes(otrs_server, connection, task)
    assert entra.bridge(path)["status"] == "completed"
    assert Account.objects.filter(identity=identity, name=name, active=True).exists()
    [add] = AccessRequest.objects.filter(operation="add_access")
    assert (add.entitlements, add.status) == (["crm-write"], "approved")
    [task] = provision()
    assert task.request_id == add.pk
    agent_closes(otrs_server, connection, task)
    member = entra.bridge(group_path, BRIDGE_GROUP)["changes"]
    assert [(c["operation"], c["status"]) for c in member] == [("Add access", "completed")]
    assert list(
        Account.objects.get(name=name).entitlements.values_list("entitlement", flat=True)
    ) == ["crm-write"]

    # 6. Entra removes the member, then disables the user ("False", as it sends it).
    entra.patch(group_path, {"op": "Remove", "path": "members", "value": [{"value": user["id"]}]})
    listed = entra.call("GET", group_path).json()
    assert not listed.get("members")
    disabled = entra.patch(path, {"op": "Replace", "path": "active", "value": "False"})
    assert disabled["active"] is False
    operations = sorted(
        AccessRequest.objects.exclude(status="completed").values_list("operation", flat=True)
    )
    assert operations == ["remove_access", "remove_account"]
    for task in sorted(provision(), key=lambda t: t.pk):
        assert task.ticket.ticket_number
        agent_closes(otrs_server, connection, task)

    # 7. Everything is done, as the resource and the inventory say.
    shown = entra.bridge(path)
    assert (shown["status"], shown["operation"]) == ("completed", "Remove account")
    assert {(c["operation"], c.get("entitlement"), c["status"]) for c in shown["changes"]} == {
        ("Remove account", None, "completed"),
        ("Remove access", "crm-write", "completed"),
    }
    assert not Account.objects.filter(name=name, active=True).exists()
    assert AccessRequest.objects.count() == ScimChange.objects.count() == 4
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {"completed"}
    # One ticket per request, none twice.
    numbers = [t.ticket.ticket_number for t in ProvisioningTask.objects.select_related("ticket")]
    assert len(numbers) == len(set(numbers)) == 4

    # 8. Enabled again: the account is requested again.
    entra.patch(path, {"op": "Replace", "path": "active", "value": "True"})
    again = AccessRequest.objects.exclude(status="completed").get()
    assert (again.operation, again.account_name, again.status) == (
        "create_account",
        name,
        "approved",
    )
    assert entra.bridge(path)["status"] == "pending"
