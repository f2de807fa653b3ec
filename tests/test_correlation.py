"""The correlation key an agent cannot break: kept where agents do not edit it, searched for
everywhere it can be, and a hit adopted only once a TicketGet shows it carries the key.

The cases that matter run on the simulator and on the real Znuny (tests.znuny.server).
"""

from __future__ import annotations

import copy
import uuid

import pytest
import requests
from django.utils import timezone

from connections.client import TicketClient
from connections.documents import KeyCheckSpec
from connections.errors import OTRSError
from connections.spec import SpecError, validate_documents
from tests import factories
from tests.bridge_servers import KEY_FIELD, server  # noqa: F401  (fixture)
from tests.engine_fixtures import documents, sample_task_context
from tests.simfixtures import (
    create_ticket,
    login,
    sim_factory,  # noqa: F401  (fixture)
)
from tests.test_provisioning import approved_task
from tickets import services
from tickets.models import ProvisioningTask, TaskEvent

pytestmark = pytest.mark.django_db

BASE = "https://otrs.example.com/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _connection(server, *, key_field: str = ""):  # noqa: F811
    connection = factories.otrs_connection(
        server,
        name=_unique("otrs"),
        user=server.user,
        password=server.password,
        key_field=key_field,
    )
    return connection, factories.endpoint(connection, name=_unique("crm"), tries=10)


def _provision_now(task: ProvisioningTask) -> None:
    """Run the provisioning job for this task, its backoff skipped."""
    ProvisioningTask.objects.filter(pk=task.pk).update(next_attempt_at=timezone.now())
    services.provision_due(owner="t", connection=task.connection)
    task.refresh_from_db()


# --- on both servers ------------------------------------------------------------------------


@pytest.mark.parametrize("key_field", ["", KEY_FIELD], ids=["article", "dynamic-field"])
def test_a_retitled_ticket_whose_create_answer_was_lost_is_adopted_once(
    server,  # noqa: F811
    people,
    key_field,
):
    if key_field:
        server.ensure_key_field()
    connection, endpoint = _connection(server, key_field=key_field)
    task = approved_task(endpoint, people, username=_unique("ada"))
    key = task.correlation_key

    with server.losing_create_answers():
        services.provision_due(owner="t", limit=1, connection=connection)
    task.refresh_from_db()
    assert task.status == "retry_wait" and task.outcome_unknown
    [ticket_id] = server.tickets_with(key)  # OTRS has it; the bridge does not know

    server.retitle(ticket_id, "Access for Ada (renamed by the agent)")
    assert key not in server.ticket(ticket_id)["Title"]
    _provision_now(task)

    assert task.status == "ticket_open"
    assert task.ticket.ticket_id == ticket_id
    assert server.tickets_with(key) == [ticket_id]
    adopted = TaskEvent.objects.filter(task=task, to_status="ticket_open").get()
    assert adopted.reason.startswith("adopted the ticket found by correlation key")
    fields = {f["Name"]: f["Value"] for f in server.ticket(ticket_id).get("DynamicField", [])}
    assert fields.get(KEY_FIELD) == (key if key_field else None)


def test_a_search_that_ignores_its_filter_adopts_nothing(server, people):  # noqa: F811
    connection, endpoint = _connection(server)
    # OTRS ignores an unknown parameter and answers with every ticket: Subject is not one
    # of TicketSearch's (the article fields are MIMEBase_*).
    document = copy.deepcopy(connection.create_ticket_json)
    document["searchCall"]["url"] = document["searchCall"]["url"].replace("Fulltext=", "Subject=")
    type(connection).objects.filter(pk=connection.pk).update(create_ticket_json=document)
    unrelated = {server.create_ticket(f"unrelated {_unique('t')}") for _ in range(2)}
    task = approved_task(endpoint, people, username=_unique("bea"))
    ProvisioningTask.objects.filter(pk=task.pk).update(outcome_unknown=True)

    _provision_now(task)

    assert task.status == "ticket_open"
    assert task.ticket.ticket_id not in unrelated
    assert server.tickets_with(task.correlation_key) == [task.ticket.ticket_id]
    [refused] = TaskEvent.objects.filter(task=task, reason__contains="none carries")
    assert refused.from_status == refused.to_status == "claimed"
    assert f"none carries {task.correlation_key}" in refused.reason
    assert any(str(ticket_id) in refused.reason for ticket_id in unrelated)


# --- the client, on the simulator -----------------------------------------------------------


@pytest.fixture
def otrs(sim, db):
    return factories.otrs_connection(sim)


def _retitle(sim, ticket_id: int, title: str) -> None:
    """What an agent does: change the ticket's title (a TicketUpdate)."""
    requests.patch(
        f"{sim.base_url}/Ticket/{ticket_id}",
        json={"SessionID": login(sim), "Ticket": {"Title": title}},
        timeout=5,
    ).raise_for_status()


def test_a_hit_is_proven_by_the_article_when_the_title_lost_the_key(sim, otrs):
    client = TicketClient(otrs)
    context = sample_task_context("BR-PROOF0001")
    created = client.create_ticket(context)
    _retitle(sim, created.ticket_id, "no key here")

    found = client.reconcile(context)

    assert found.ticket == created and found.notes == ()


def test_a_hit_without_the_key_is_no_hit_and_says_why(sim, otrs):
    # Found by Fulltext (the key is in its article), but the ticket is not the task's:
    # its title and article only mention the key inside a longer word.
    ticket = create_ticket(sim, login(sim), "about BR-PROOF0002X")
    client = TicketClient(otrs)

    found = client.reconcile(sample_task_context("BR-PROOF0002"))

    assert found.ticket is None
    [note] = found.notes
    assert note == (
        f"search found ticket(s) {ticket['TicketID']}; none carries BR-PROOF0002 at "
        "DynamicField, Article[0].Body, Title, so none was adopted"
    )


def test_of_two_tickets_carrying_the_key_the_first_created_is_adopted(sim, otrs):
    client = TicketClient(otrs)
    context = sample_task_context("BR-TWICE0001")
    first = client.create_ticket(context)
    client.create_ticket(context)

    assert client.find_ticket(context) == first


def test_the_bridge_never_searches_without_a_key(sim, otrs):
    context = sample_task_context()
    context["correlationKey"] = ""
    with pytest.raises(OTRSError, match="never searches without one"):
        TicketClient(otrs).find_ticket(context)


def test_the_key_field_is_sent_with_the_ticket_and_shown_in_the_preview(sim_factory):  # noqa: F811
    sim = sim_factory(dynamic_fields=(KEY_FIELD,))
    connection = factories.otrs_connection(sim, key_field=KEY_FIELD)
    client = TicketClient(connection)
    context = sample_task_context("BR-FIELD0001")

    [preview] = client.preview_create(context)
    created = client.create_ticket(context)

    assert '"DynamicField": [{"Name": "BridgeKey", "Value": "BR-FIELD0001"}]' in preview["body"]
    ticket = requests.get(f"{sim.url}/_sim/tickets/{created.ticket_id}", timeout=5).json()
    assert {"Name": KEY_FIELD, "Value": "BR-FIELD0001"} in ticket["DynamicField"]


# --- proving a hit: where the key counts -----------------------------------------------------


@pytest.mark.parametrize(
    ("ticket", "carries"),
    [
        ({"Title": "[BR-K1] Add access"}, True),
        ({"Title": "x", "Article": [{"Body": "Access request BR-K1\nmore"}]}, True),
        ({"DynamicField": [{"Name": "BridgeKey", "Value": "BR-K1"}]}, True),
        ({"Title": "[BR-K12] Add access"}, False),  # another key that starts the same
        ({"Title": "xBR-K1"}, False),
        ({"Title": "x", "Article": [{"Body": "x"}, {"Body": "BR-K1"}]}, False),  # a later note
        ({"Subject": "BR-K1"}, False),  # not a key path
        ({}, False),
    ],
)
def test_a_ticket_carries_the_key_as_a_whole_word_at_a_key_path(ticket, carries):
    check = KeyCheckSpec(
        call=None,  # type: ignore[arg-type]
        ticket_list_path="Ticket",
        ticket_id_path="TicketID",
        key_paths=("DynamicField", "Article[0].Body", "Title"),
    )
    assert check.carries(ticket, "BR-K1") is carries


# --- validation of the search, the key check and the key field ---------------------------


def _errors(edit) -> list[str]:
    docs = documents(BASE)
    edit(docs["create_ticket_json"])
    with pytest.raises(SpecError) as caught:
        validate_documents(**docs)
    return caught.value.errors


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: (d.pop("keyCheckCall"), d.update(keyField="BridgeKey")),
            "CreateTicketJSON: keyField: needs a keyCheckCall that reads the dynamic fields, or "
            "the field proves nothing",
        ),
        (
            lambda d: d["keyCheckCall"].pop("keyPaths"),
            "CreateTicketJSON: keyCheckCall: keyPaths is required: where a ticket carries the "
            "key (e.g. Title)",
        ),
        (
            lambda d: d["keyCheckCall"].update(keyPaths=["Title", "Article[x]"]),
            "CreateTicketJSON: keyCheckCall.keyPaths[1]: 'Article[x]' is not a valid path",
        ),
        (
            lambda d: d["keyCheckCall"].update(
                url=d["keyCheckCall"]["url"].replace("${ticketIDs}", "1")
            ),
            "CreateTicketJSON: keyCheckCall: must use ${ticketIDs}: the hits, read in one call",
        ),
        (
            lambda d: d["keyCheckCall"].pop("ticketListPath"),
            "CreateTicketJSON: keyCheckCall: ticketListPath is required",
        ),
        (
            lambda d: d.update(keyField="Bridge Key"),
            "CreateTicketJSON: keyField: 'Bridge Key' is not a dynamic field name (letters and "
            "digits only)",
        ),
        (
            lambda d: d.update(keyField="BridgeKey"),
            "CreateTicketJSON: keyCheckCall.url: add DynamicFields=1: without it OTRS TicketGet "
            "leaves out keyField BridgeKey, the one place agents do not edit",
        ),
        (
            lambda d: d["searchCall"].update(
                url=d["searchCall"]["url"].replace("${correlationKey}", "${correlationKey|x}")
            ),
            "CreateTicketJSON: searchCall.url: ${correlationKey|x}: a search needs the key "
            "itself; with a default it would search without one",
        ),
        (
            lambda d: d["searchCall"].update(
                url=f"{BASE}/Ticket?SessionID=${{access_token}}",
                httpHeaders={"X-Key": "${correlationKey}"},
            ),
            "CreateTicketJSON: searchCall.url: a GET search must carry ${correlationKey} in the "
            "query string (OTRS reads no GET body and no header as a filter)",
        ),
        (
            lambda d: d["searchCall"].update(
                url=f"{BASE}/Ticket?DynamicField_BridgeKey=${{correlationKey}}&SessionID=${{access_token}}"
            ),
            "CreateTicketJSON: searchCall.url: DynamicField_BridgeKey=: OTRS ignores a dynamic "
            "field filter in a GET query string (its TicketSearch wants a hash there) and "
            "would answer with every ticket; search by Fulltext (the title and the articles) "
            "instead",
        ),
        (
            lambda d: d["searchCall"].pop("ticketidPath"),
            "CreateTicketJSON: searchCall: ticketListPath (the list of hits, e.g. TicketID) or "
            "ticketidPath (one hit, e.g. TicketID[0]) is required",
        ),
        (
            lambda d: d.update(searchCall=[d["searchCall"], {**d["searchCall"], "url": BASE}]),
            "CreateTicketJSON: searchCall[1]: must search for ${correlationKey}, or it could "
            "adopt another task's ticket",
        ),
        (
            lambda d: d.update(searchCall=[]),
            "CreateTicketJSON: searchCall: is an empty list; leave it out to never search",
        ),
    ],
)
def test_each_defect_of_the_search_is_named(edit, expected):
    assert expected in _errors(edit)


def test_without_a_key_check_call_the_status_call_reads_the_hits_and_the_title_proves_them():
    docs = documents(BASE)
    del docs["create_ticket_json"]["keyCheckCall"]

    parsed = validate_documents(**docs)

    check = parsed.create.key_check
    assert check is not None and check.call == parsed.status.call
    assert (check.ticket_list_path, check.ticket_id_path, check.key_paths) == (
        "Ticket",
        "TicketID",
        ("Title",),
    )


def test_without_a_key_check_call_a_status_call_of_one_ticket_cannot_prove_hits():
    docs = documents(BASE)
    del docs["create_ticket_json"]["keyCheckCall"]
    status = docs["ticket_status_json"]["call"][0]
    del status["batch"]
    status["url"] = status["url"].replace("${ticketIDs}", "${ticketID}")

    with pytest.raises(SpecError) as caught:
        validate_documents(**docs)

    assert caught.value.errors == [
        "CreateTicketJSON: searchCall: needs keyCheckCall: a call that reads the tickets found, "
        "so a hit is adopted only when it carries ${correlationKey} (the status call reads one "
        "ticket per call, so it cannot stand in)"
    ]


def test_a_connection_without_a_key_check_call_adopts_only_hits_titled_with_the_key(sim, otrs):
    document = copy.deepcopy(otrs.create_ticket_json)
    del document["keyCheckCall"]
    type(otrs).objects.filter(pk=otrs.pk).update(create_ticket_json=document)
    otrs.refresh_from_db()
    client = TicketClient(otrs)
    titled, retitled = (sample_task_context(f"BR-OLDDOC{i:04d}") for i in range(2))
    created = client.create_ticket(titled)
    lost = client.create_ticket(retitled)
    _retitle(sim, lost.ticket_id, "renamed")

    assert client.find_ticket(titled) == created
    found = client.reconcile(retitled)  # found by its article, not proven by a title
    assert found.ticket is None and "none carries BR-OLDDOC0001 at Title" in found.notes[0]


def test_searches_may_be_a_list_tried_in_turn(sim, otrs):
    document = copy.deepcopy(otrs.create_ticket_json)
    by_title = {
        **document["searchCall"],
        "name": "byTitle",
        "url": document["searchCall"]["url"].replace(
            "Fulltext=${correlationKey}", "Title=*${correlationKey}*"
        ),
    }
    document["searchCall"] = [by_title, document["searchCall"]]
    type(otrs).objects.filter(pk=otrs.pk).update(create_ticket_json=document)
    otrs.refresh_from_db()
    client = TicketClient(otrs)
    context = sample_task_context("BR-LIST00001")
    created = client.create_ticket(context)

    assert client.find_ticket(context) == created  # by title, the first search
    _retitle(sim, created.ticket_id, "renamed")
    assert client.find_ticket(context) == created  # by the article, the second


def test_fulltext_finds_a_key_in_the_title_or_in_an_article(server):  # noqa: F811
    in_title, in_body = _unique("BR-T").upper(), _unique("BR-B").upper()
    titled = server.create_ticket(f"[{in_title}] fulltext")
    bodied = server.create_ticket("fulltext", body=f"Access request {in_body}\nmore")

    assert server.tickets_with(in_title) == [titled]
    assert server.tickets_with(in_body) == [bodied]
    assert server.tickets_with(in_title.lower()) == [titled]  # case does not matter
    assert server.tickets_with(in_body[:-3]) == [bodied]  # implicit wildcards around it


def test_a_search_answering_with_many_tickets_has_only_the_newest_read(sim, otrs):
    from connections.correlation import KEY_CHECKED_HITS
    from connections.models import ApiCall

    document = copy.deepcopy(otrs.create_ticket_json)
    document["searchCall"]["url"] = document["searchCall"]["url"].replace("Fulltext=", "Subject=")
    type(otrs).objects.filter(pk=otrs.pk).update(create_ticket_json=document)
    otrs.refresh_from_db()
    session = login(sim)
    ids = [int(create_ticket(sim, session, f"other {i}")["TicketID"]) for i in range(25)]

    found = TicketClient(otrs).reconcile(sample_task_context("BR-MANY00001"))

    assert found.ticket is None
    [note] = found.notes
    newest = sorted(ids, reverse=True)[:KEY_CHECKED_HITS]
    assert note.startswith(f"search found ticket(s) {', '.join(map(str, newest))} and 5 more")
    assert ApiCall.objects.filter(call_name="keyCheck").count() == 1
