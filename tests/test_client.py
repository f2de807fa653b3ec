"""The call engine against the OTRS simulator over real HTTP: create, find, poll, errors.

A small scripted HTTP server stands in only for shapes the simulator cannot produce (a
body over 2 MB, Saviynt's errorPath/authError/expiryError, retryFailureStatusCode).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from django.core.management import CommandError, call_command

from connections.client import CreatedTicket, TicketClient
from connections.errors import OTRSError
from connections.models import ApiCall, Connection
from connections.services import connection_check
from tests.engine_fixtures import make_connection, sample_task_context, sim_calls, sim_config

pytestmark = pytest.mark.django_db


def set_state(sim, ticket_id: int, state: str) -> None:
    requests.post(
        f"{sim.url}/_sim/tickets/{ticket_id}/state", json={"state": state}, timeout=5
    ).raise_for_status()


def sim_ticket(sim, ticket_id: int) -> dict:
    return requests.get(f"{sim.url}/_sim/tickets/{ticket_id}", timeout=5).json()


@pytest.fixture
def otrs(sim) -> Connection:
    return make_connection(sim.base_url)


def with_config(connection: Connection, **config) -> Connection:
    Connection.objects.filter(pk=connection.pk).update(
        config_json={**connection.config_json, **config}
    )
    return Connection.objects.get(pk=connection.pk)


def test_it_creates_a_ticket_with_the_rendered_body(sim, otrs):
    created = TicketClient(otrs).create_ticket(sample_task_context("BR-CREATE001"), ref="task:1")

    ticket = sim_ticket(sim, created.ticket_id)
    assert ticket["TicketNumber"] == created.ticket_number != ""
    assert ticket["Title"] == "[BR-CREATE001] Add access for jdoe on payroll"
    assert ticket["Queue"] == "Raw"
    assert ticket["Article"][0]["Body"] == 'User: Jane Doe\nEntitlements: ["payroll-viewer"]'
    calls = list(
        ApiCall.objects.order_by("id").values_list("call_name", "ref", "outcome", "status_code")
    )
    assert calls == [("token:otrs", "task:1", "ok", 200), ("TicketCreate", "task:1", "ok", 200)]


def test_it_finds_a_ticket_by_correlation_key_and_none_when_absent(sim, otrs):
    client = TicketClient(otrs)
    created = client.create_ticket(sample_task_context("BR-FIND0001"))
    client.create_ticket(sample_task_context("BR-OTHER001"))

    assert client.find_ticket(sample_task_context("BR-FIND0001")) == created
    assert client.find_ticket(sample_task_context("BR-NOTHERE1")) is None


def test_it_reads_statuses_in_one_batch_call_and_maps_outcomes(sim, otrs):
    client = TicketClient(otrs)
    ids = [client.create_ticket(sample_task_context(f"BR-BATCH{i:03}")).ticket_id for i in range(3)]
    set_state(sim, ids[0], "closed successful")
    set_state(sim, ids[1], "pending reminder")
    before = sim_calls(sim).get("TicketGet", 0)

    statuses = client.ticket_statuses(ids)

    assert sim_calls(sim)["TicketGet"] - before == 1
    assert [(statuses[i].state, statuses[i].state_type, statuses[i].outcome) for i in ids] == [
        ("closed successful", "closed", "completed"),
        ("pending reminder", "pending reminder", "pending"),
        ("new", "new", "open"),
    ]
    assert statuses[ids[2]].changed is not None and statuses[ids[2]].changed.tzinfo is not None
    assert statuses[ids[0]].ticket_number == sim_ticket(sim, ids[0])["TicketNumber"]


def test_it_splits_the_batch_size_of_the_connection(sim, otrs):
    Connection.objects.filter(pk=otrs.pk).update(batch_size=2)
    client = TicketClient(Connection.objects.get(pk=otrs.pk))
    ids = [client.create_ticket(sample_task_context(f"BR-SIZE{i:04}")).ticket_id for i in range(5)]
    before = sim_calls(sim).get("TicketGet", 0)

    assert sorted(client.ticket_statuses(ids)) == sorted(ids)
    assert sim_calls(sim)["TicketGet"] - before == 3


def test_it_isolates_a_missing_id_instead_of_failing_the_batch(sim, otrs):
    client = TicketClient(otrs)
    ids = [client.create_ticket(sample_task_context(f"BR-MISS{i:04}")).ticket_id for i in range(4)]

    statuses = client.ticket_statuses([*ids[:2], 999999, *ids[2:]])

    assert sorted(statuses) == sorted(ids)
    refused = ApiCall.objects.filter(call_name="TicketGet", outcome="error")
    assert refused.exists() and "TicketGet.AccessDenied" in refused.first().error


def test_it_encodes_the_comma_separated_ids_and_otrs_accepts_them(sim, otrs):
    client = TicketClient(otrs)
    ids = [client.create_ticket(sample_task_context(f"BR-COMMA{i:03}")).ticket_id for i in range(2)]

    client.ticket_statuses(ids)

    url = ApiCall.objects.filter(call_name="TicketGet").latest("id").url
    assert f"/Ticket/{ids[0]}%2C{ids[1]}?" in url


def test_it_follows_a_merged_ticket_to_its_target(sim, otrs):
    client = TicketClient(otrs)
    first = client.create_ticket(sample_task_context("BR-MERGE001")).ticket_id
    second = client.create_ticket(sample_task_context("BR-MERGE002")).ticket_id
    requests.post(
        f"{sim.url}/_sim/tickets/{first}/merge", json={"into": second}, timeout=5
    ).raise_for_status()

    statuses = client.ticket_statuses([first, second])

    assert statuses[first].state == "merged" and statuses[first].merged_into == second
    assert statuses[second].merged_into is None


def test_it_treats_an_error_inside_http_200_as_an_error(sim, otrs):
    context = sample_task_context()
    context["endpoint"]["queue"] = "NoSuchQueue"

    with pytest.raises(OTRSError) as caught:
        TicketClient(otrs).create_ticket(context)

    error = caught.value
    assert error.message == (
        "TicketCreate.InvalidParameter: TicketCreate: Ticket->QueueID or Ticket->Queue parameter is invalid!"
    )
    assert (
        error.permanent
        and not error.auth
        and not error.outcome_unknown
        and error.status_code == 200
    )
    row = ApiCall.objects.get(call_name="TicketCreate")
    assert (row.status_code, row.outcome, row.error) == (200, "error", error.message)


def test_it_reports_a_missing_ticket_id_as_permanent(sim, otrs):
    document = otrs.create_ticket_json
    document["call"][0]["ticketidPath"] = "Ticket.ID"
    Connection.objects.filter(pk=otrs.pk).update(create_ticket_json=document)

    with pytest.raises(OTRSError) as caught:
        TicketClient(Connection.objects.get(pk=otrs.pk)).create_ticket(sample_task_context())

    assert caught.value.permanent
    assert caught.value.message == "TicketCreate answered without TicketID at path Ticket.ID"


def test_it_names_a_wrong_route_as_a_configuration_error(sim, otrs):
    document = otrs.create_ticket_json
    document["call"][0]["url"] = sim.base_url + "/Tickets"
    Connection.objects.filter(pk=otrs.pk).update(create_ticket_json=document)

    with pytest.raises(OTRSError) as caught:
        TicketClient(Connection.objects.get(pk=otrs.pk)).create_ticket(sample_task_context())

    assert caught.value.permanent and caught.value.status_code == 500
    assert "no operation for this URL and method" in caught.value.message
    assert "determine Operation for request URI '/Tickets'" in caught.value.message


def test_it_reports_html_500_pages_and_raw_pages_without_status_line(sim, otrs):
    client = TicketClient(with_config(otrs, retryCount=0))
    client.ticket_statuses([])  # nothing to do, no call
    ticket = client.create_ticket(sample_task_context()).ticket_id
    sim_config(sim, fail_rate=1, html_errors=True)

    messages = set()
    for _ in range(12):
        with pytest.raises(OTRSError) as caught:
            client.ticket_statuses([ticket])
        assert not caught.value.permanent and not caught.value.outcome_unknown  # a GET
        messages.add(caught.value.message.split(":")[0])

    assert messages == {
        "OTRS answered HTML instead of JSON (HTTP 500)",
        "OTRS answered without an HTTP status line (a raw error page)",
    }
    raw = ApiCall.objects.filter(
        error__startswith="OTRS answered without an HTTP status line"
    ).first()
    assert raw.outcome == "transport_error" and "<!DOCTYPE HTML PUBLIC" in raw.error


def test_a_failed_create_has_an_unknown_outcome_and_is_not_repeated(sim, otrs):
    client = TicketClient(otrs)
    client.find_ticket(sample_task_context())  # logs in first
    sim_config(sim, fail_rate=1)

    messages = set()
    for _ in range(10):
        with pytest.raises(OTRSError) as caught:
            client.create_ticket(sample_task_context())
        assert caught.value.outcome_unknown and not caught.value.permanent
        messages.add(caught.value.message)

    port = sim.base_url.split(":")[2].split("/")[0]
    assert messages == {
        "OTRS failed internally (HTTP 500): Ticket could not be created, please contact the system administrator",
        f"OTRS closed the connection to 127.0.0.1:{port} without an answer",
    }
    assert sim_calls(sim)["TicketCreate"] == 10  # a POST is never repeated by the client


def test_it_retries_idempotent_gets_on_transient_errors(sim, otrs):
    client = TicketClient(with_config(otrs, retryCount=2, retryWait=0.01))
    ticket = client.create_ticket(sample_task_context()).ticket_id
    sim_config(sim, fail_rate=1)

    with pytest.raises(OTRSError):
        client.ticket_statuses([ticket])

    assert sim_calls(sim)["TicketGet"] == 3


def test_a_read_timeout_names_the_limit(sim, otrs):
    client = TicketClient(with_config(otrs, readTimeout=0.3, retryCount=0))
    client.find_ticket(sample_task_context())
    sim_config(sim, latency_ms=1000)

    with pytest.raises(OTRSError) as caught:
        client.create_ticket(sample_task_context())

    assert caught.value.message == "OTRS did not answer within 0.3 s (read timeout)"
    assert caught.value.outcome_unknown and not caught.value.permanent
    assert ApiCall.objects.filter(call_name="TicketCreate").get().outcome == "timeout"


def test_connection_refused_is_transient_and_names_the_address(db):
    connection = make_connection("http://127.0.0.1:9/otrs/nph-genericinterface.pl/Webservice/X")

    with pytest.raises(OTRSError) as caught:
        TicketClient(connection).ticket_statuses([1])

    assert caught.value.message == "Connection refused by 127.0.0.1:9"
    assert not caught.value.permanent and not caught.value.outcome_unknown
    assert ApiCall.objects.get().outcome == "transport_error"


def test_test_connection_logs_in_and_searches(sim, otrs):
    result = TicketClient(otrs).test_connection()

    assert result.ok, result.message
    assert result.message.startswith("logged in as bridge and searched tickets in ")
    assert [e["call"] for e in result.exchanges] == ["token:otrs", "TicketSearch"]
    assert "Limit=1" in result.exchanges[1]["url"]


def test_test_connection_reports_a_refused_login(sim):
    connection = make_connection(sim.base_url, password="wrong-password-123")

    result = TicketClient(connection).test_connection()

    assert not result.ok
    assert result.message == "OTRS refused the login for user bridge: SessionCreate.AuthFail"


def test_preview_shows_the_exact_requests_without_sending(sim, otrs):
    previews = TicketClient(otrs).preview_create(sample_task_context("BR-PREVIEW1"))

    assert sim_calls(sim) == {} or sum(sim_calls(sim).values()) == 0
    assert ApiCall.objects.count() == 0
    (preview,) = previews
    assert preview["method"] == "POST" and preview["url"] == sim.base_url + "/Ticket"
    body = json.loads(preview["body"])
    assert body["SessionID"] == "********"
    assert body["Ticket"]["Title"] == "[BR-PREVIEW1] Add access for jdoe on payroll"
    assert preview["headers"] == {"Content-Type": "application/json"}


def test_preview_shows_where_an_earlier_answer_goes(sim, otrs):
    document = otrs.create_ticket_json
    second = {**document["call"][0], "name": "Note", "ticketidPath": "", "ticketNumberPath": ""}
    second["httpParams"] = {
        "SessionID": "${access_token}",
        "Note": "after ${response.TicketCreate.message.TicketID}",
    }
    document["call"].append(second)
    Connection.objects.filter(pk=otrs.pk).update(create_ticket_json=document)

    previews = TicketClient(Connection.objects.get(pk=otrs.pk)).preview_create(
        sample_task_context()
    )

    assert (
        json.loads(previews[1]["body"])["Note"] == "after <response.TicketCreate.message.TicketID>"
    )


def test_one_call_per_ticket_without_batch_mode(sim, otrs):
    document = otrs.ticket_status_json
    call = document["call"][0]
    del call["batch"]
    call.update(url=sim.base_url + "/Ticket/${ticketID}?SessionID=${access_token}")
    call.update(ticketStatusPath="Ticket[0].State", stateTypePath="Ticket[0].StateType")
    call.update(ticketNumberPath="Ticket[0].TicketNumber", changedPath="Ticket[0].Changed")
    Connection.objects.filter(pk=otrs.pk).update(ticket_status_json=document)
    client = TicketClient(Connection.objects.get(pk=otrs.pk))
    ids = [
        client.create_ticket(sample_task_context(f"BR-SINGLE{i:02}")).ticket_id for i in range(2)
    ]
    set_state(sim, ids[1], "removed")

    statuses = client.ticket_statuses([ids[0], 999999, ids[1]])

    assert {i: s.outcome for i, s in statuses.items()} == {ids[0]: "open", ids[1]: "discontinued"}
    assert sim_calls(sim)["TicketGet"] == 3


def test_connection_check_records_the_verdict(sim, otrs):
    result = connection_check(connection=otrs)

    otrs.refresh_from_db()
    assert result.ok and otrs.last_test_ok and otrs.last_test_message == result.message
    assert otrs.last_test_at is not None


def test_the_command_prints_the_verdict_and_the_exchange(sim, otrs):
    out = io.StringIO()

    call_command("test_connection", otrs.name, stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("OK: logged in as bridge and searched tickets in ")
    assert lines[1].startswith(f"  POST {sim.base_url}/Session -> 200 in ")
    assert lines[2].startswith(f"  GET {sim.base_url}/Ticket?Limit=1&SessionID=******** -> 200 in ")


def test_the_command_fails_with_exit_code_1(sim):
    make_connection(sim.base_url, name="bad", password="nope-nope")
    out = io.StringIO()

    with pytest.raises(SystemExit) as exited:
        call_command("test_connection", "bad", stdout=out)

    assert exited.value.code == 1
    assert (
        out.getvalue().splitlines()[0]
        == "FAILED: OTRS refused the login for user bridge: SessionCreate.AuthFail"
    )


def test_the_command_refuses_an_unknown_name(db):
    with pytest.raises(CommandError, match="No connection named 'nothing'"):
        call_command("test_connection", "nothing")


def test_invalid_stored_documents_become_a_permanent_error(sim, otrs):
    Connection.objects.filter(pk=otrs.pk).update(ticket_status_json={"call": []})

    with pytest.raises(OTRSError) as caught:
        TicketClient(Connection.objects.get(pk=otrs.pk))

    assert caught.value.permanent
    assert caught.value.message == (
        "The documents of connection otrs are invalid: TicketStatusJSON: call: is required: a list of call objects"
    )


# --- shapes the simulator cannot produce, from a scripted HTTP server --------------------------

FIRST, SECOND = "FirstSession0123456789abcdefghij", "SecondSession123456789abcdefghi"
TICKET_7 = {"Ticket": [{"TicketID": 7, "TicketNumber": "N7", "State": "open", "StateType": "open"}]}
# (method, path, query) -> (status, body) or (status, body, headers)
Answer = Callable[[str, str, dict], tuple]


class _Scripted(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        status, body, *headers = self.server.answer(
            self.command, parts.path, dict(parse_qsl(parts.query))
        )  # type: ignore[attr-defined]
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers[0] if headers else {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted():
    """A server that answers with `server.answer(method, path, query) -> (status, body)`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def scripted_connection(
    server: ThreadingHTTPServer, answer: Answer, **auth_changes: Any
) -> Connection:
    server.answer = answer  # type: ignore[attr-defined]
    connection = make_connection(f"http://127.0.0.1:{server.server_address[1]}/otrs")
    document = connection.connection_document()
    document["authentications"]["otrs"].update(auth_changes)
    connection.set_connection_json(document)
    connection.config_json = {**connection.config_json, "retryCount": 0}
    connection.save()
    return connection


def sessions_then(ticket_answer: Answer) -> Answer:
    """Log in as FIRST, then SECOND, …; everything else goes to `ticket_answer`."""
    sessions = iter([FIRST, SECOND, "ThirdSession"])

    def answer(method: str, path: str, query: dict) -> tuple[int, Any]:
        if path.endswith("/Session"):
            return 200, {"SessionID": next(sessions)}
        return ticket_answer(method, path, query)

    return answer


def test_a_body_over_2_mb_is_refused_with_its_first_bytes(scripted):
    huge = b'{"Ticket": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    connection = scripted_connection(scripted, sessions_then(lambda *_: (200, huge)))

    with pytest.raises(OTRSError) as caught:
        TicketClient(connection).ticket_statuses([7])

    assert caught.value.message.startswith(
        'OTRS answered more than 2 MB (HTTP 200): {"Ticket": "xxx'
    )
    assert len(ApiCall.objects.get(call_name="TicketGet").response_excerpt) <= 4096


@pytest.mark.parametrize("status", [200, 500])
def test_an_answer_nested_too_deeply_is_an_error_not_a_crash(scripted, status):
    deep = b"[" * 200_000 + b"]" * 200_000
    connection = scripted_connection(scripted, sessions_then(lambda *_: (status, deep)))

    with pytest.raises(OTRSError) as caught:
        TicketClient(connection).ticket_statuses([7])

    assert f"HTTP {status}" in caught.value.message
    assert ApiCall.objects.filter(call_name="TicketGet").exists()


@pytest.mark.parametrize(
    ("auth_changes", "refused"),
    [
        (
            {"errorPath": "odata~dot#error.code", "authError": ["InvalidToken"]},
            (200, {"odata.error": {"code": "InvalidToken"}}),
        ),
        ({"errorPath": "error", "expiryError": "Expired"}, (200, {"error": "Expired"})),
        ({"retryFailureStatusCode": [401]}, (401, b"no")),
    ],
)
def test_saviynt_auth_errors_renew_the_session_and_repeat_the_call(scripted, auth_changes, refused):
    def tickets(method: str, path: str, query: dict) -> tuple[int, Any]:
        return refused if query.get("SessionID") == FIRST else (200, TICKET_7)

    connection = scripted_connection(scripted, sessions_then(tickets), **auth_changes)

    statuses = TicketClient(connection).ticket_statuses([7])

    assert statuses[7].state == "open"
    outcomes = list(ApiCall.objects.order_by("id").values_list("call_name", "outcome"))
    assert outcomes == [
        ("token:otrs", "ok"),
        ("TicketGet", "auth_error"),
        ("token:otrs", "ok"),
        ("TicketGet", "ok"),
    ]


def test_it_gives_up_after_max_refresh_try_count(scripted):
    refused = {"Error": {"ErrorCode": "TicketGet.AuthFail", "ErrorMessage": "no"}}
    connection = scripted_connection(
        scripted, sessions_then(lambda *_: (200, refused)), maxRefreshTryCount=2
    )

    with pytest.raises(OTRSError) as caught:
        TicketClient(connection).ticket_statuses([7])

    assert caught.value.permanent and caught.value.auth
    assert (
        caught.value.message
        == "OTRS refused the request after 2 new session(s): TicketGet.AuthFail: no"
    )
    assert ApiCall.objects.filter(call_name="token:otrs").count() == 3
    assert Connection.objects.get(pk=connection.pk).last_error == caught.value.message


def test_basic_auth_sends_the_credentials_and_logs_them_masked(scripted):
    def answer(method: str, path: str, query: dict) -> tuple[int, Any]:
        return 200, {"TicketID": "12", "TicketNumber": "N12"}

    scripted.answer = answer
    connection = make_connection(f"http://127.0.0.1:{scripted.server_address[1]}/otrs")
    connection.set_connection_json(
        {
            "authentications": {
                "otrs": {
                    "authType": "Basic",
                    "properties": {"userName": "bridge", "password": "B4sic-Pass"},
                }
            }
        }
    )
    document = connection.create_ticket_json
    document["call"][0]["httpParams"]["SessionID"] = ""
    connection.create_ticket_json = document
    connection.save()

    created = TicketClient(connection).create_ticket(sample_task_context())

    assert created == CreatedTicket(12, "N12")
    assert (
        scripted.seen[0]["Authorization"]
        == "Basic " + base64.b64encode(b"bridge:B4sic-Pass").decode()
    )
    row = ApiCall.objects.get()
    assert (
        "Authorization: ********" in row.request_excerpt and "B4sic-Pass" not in row.request_excerpt
    )


@pytest.mark.parametrize(
    ("auth_changes", "login_headers", "sent"),
    [
        (
            {
                "tokenResponsePath": "#HEADERS#Set-Cookie",
                "authHeaderName": "Cookie",
                "tokenType": "",
            },
            {"Set-Cookie": "SID=CookieSession42xyz; Path=/; HttpOnly"},
            ("Cookie", "SID=CookieSession42xyz"),
        ),
        (
            {
                "tokenResponsePath": "access.token",
                "authHeaderName": "Authorization",
                "tokenType": "Bearer",
            },
            {},
            ("Authorization", "Bearer BearerToken42xyz"),
        ),
    ],
)
def test_tokens_from_headers_or_paths_go_in_the_auth_header(
    scripted, auth_changes, login_headers, sent
):
    def answer(method: str, path: str, query: dict) -> tuple:
        if path.endswith("/Session"):
            return 200, {"access": {"token": "BearerToken42xyz"}}, login_headers
        return 200, {"TicketID": "5", "TicketNumber": "N5"}

    connection = scripted_connection(scripted, answer, **auth_changes)

    TicketClient(connection).create_ticket(sample_task_context())

    assert scripted.seen[1][sent[0]] == sent[1]
    excerpt = ApiCall.objects.get(call_name="TicketCreate").request_excerpt
    assert f"{sent[0]}: ********" in excerpt and "42xyz" not in excerpt


@pytest.mark.parametrize(
    ("changes", "answer", "message"),
    [
        (
            {"unsuccessResponses": {"message": "Failed"}},
            (200, {"message": "Failed", "TicketID": "5"}),
            "TicketCreate: the answer matches unsuccessResponses",
        ),
        (
            {"successResponses": [{"statusCode": [201]}]},
            (200, {"TicketID": "5"}),
            "TicketCreate: the answer does not match successResponses",
        ),
        (
            {"successResponses": [{"result.ok": True}]},
            (200, {"TicketID": "5", "result": {"ok": False}}),
            "TicketCreate: the answer does not match successResponses",
        ),
        (
            {},
            (200, {"TicketID": "five"}),
            "TicketCreate answered without TicketID at path TicketID",
        ),
        ({}, (403, b"<html>Forbidden</html>"), "OTRS answered HTTP 403: <html>Forbidden</html>"),
        ({}, (302, b""), "OTRS redirected to ? (HTTP 302); use that URL"),
    ],
)
def test_answers_that_are_not_a_success_are_permanent(scripted, changes, answer, message):
    connection = scripted_connection(scripted, sessions_then(lambda *_: answer))
    document = connection.create_ticket_json
    document["call"][0].update(changes)
    Connection.objects.filter(pk=connection.pk).update(create_ticket_json=document)

    with pytest.raises(OTRSError) as caught:
        TicketClient(Connection.objects.get(pk=connection.pk)).create_ticket(sample_task_context())

    assert caught.value.message == message and caught.value.permanent


def test_a_success_rule_on_a_path_accepts_the_answer(scripted):
    connection = scripted_connection(
        scripted, sessions_then(lambda *_: (201, {"TicketID": "5", "result": {"ok": True}}))
    )
    document = connection.create_ticket_json
    document["call"][0].update(
        successResponses=[{"statusCode": [200]}, {"result.ok": True, "statusCode": [201]}]
    )
    Connection.objects.filter(pk=connection.pk).update(create_ticket_json=document)

    created = TicketClient(Connection.objects.get(pk=connection.pk)).create_ticket(
        sample_task_context()
    )

    assert created.ticket_id == 5


def test_the_http_session_reads_the_ca_bundle_environment_only_where_tls_is_verified(
    monkeypatch,
):
    from connections.client import _Session
    from connections.documents import ConfigSpec

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/env-bundle.pem")
    assert _Session(ConfigSpec()).verify == "/etc/ssl/env-bundle.pem"
    assert _Session(ConfigSpec(ca_bundle="/etc/own.pem")).verify == "/etc/own.pem"
    assert _Session(ConfigSpec(verify_tls=False)).verify is False
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert _Session(ConfigSpec()).verify is True


def test_the_http_session_honours_proxy_and_no_proxy_per_host(monkeypatch):
    from connections.client import _Session
    from connections.documents import ConfigSpec

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "otrs.internal")
    session = _Session(ConfigSpec())
    assert session.proxies_for("https://otrs.example/x")["https"] == "http://proxy.example:3128"
    assert not session.proxies_for("https://otrs.internal/x").get("https")


def test_a_password_that_reads_like_a_placeholder_is_refused_without_quoting_it(sim):
    connection = make_connection(sim.base_url, password="Zx@PROD@9secret-tail")
    with pytest.raises(OTRSError) as caught:
        TicketClient(connection)
    assert "a secret value holds text" in caught.value.message
    assert "@PROD@" not in caught.value.message and "secret-tail" not in caught.value.message
    # A property is substituted as a value, never read as a template: ${ in it is fine.
    TicketClient(make_connection(sim.base_url, name="other", password="S3cr${et-value-xyz"))
