"""The simulator against the raw Znuny 6.5.10 exchanges quoted in the reference.

Bodies are compared key by key and type by type (numbers stay numbers, strings stay
strings), and value by value except for what legitimately differs per run
(timestamps, Age, SessionIDs).  Error bodies are compared byte for byte, including
the Content-Length the reference recorded.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from otrs_sim.store import fmt_time, ticket_number
from tests.simfixtures import PASSWORD, USER, create_ticket, login, sim, sim_factory, ticket_body

__all__ = ["sim", "sim_factory"]  # fixtures, re-exported for pytest

# ---------------------------------------------------------------- recorded bodies (§5-§8)

OBS_CREATE = '{"ArticleID":2,"TicketID":"2","TicketNumber":"2026112610000015"}'
OBS_GET = (
    '{"Ticket":[{"Age":1,"ArchiveFlag":"n","ChangeBy":2,"Changed":"2026-11-26 21:14:57",'
    '"CreateBy":2,"Created":"2026-11-26 21:14:57","CustomerID":"","CustomerUserID":"someone@example.com",'
    '"EscalationResponseTime":0,"EscalationSolutionTime":0,"EscalationTime":0,"EscalationUpdateTime":0,'
    '"GroupID":1,"Lock":"unlock","LockID":1,"Owner":"bridge","OwnerID":2,"Priority":"3 normal",'
    '"PriorityID":3,"Queue":"Raw","QueueID":2,"RealTillTimeNotUsed":0,"Responsible":"root@localhost",'
    '"ResponsibleID":1,"SLAID":"","ServiceID":"","State":"new","StateID":1,"StateType":"new",'
    '"TicketID":2,"TicketNumber":"2026112610000015","TimeUnit":0,"Title":"t1","Type":"Unclassified",'
    '"TypeID":1,"UnlockTimeout":1795727697,"UntilTime":0}]}'
)
OBS_GET_FULL = (
    '{"Ticket":[{"Age":2,"ArchiveFlag":"n","Article":[{"ArticleID":2,"ArticleNumber":1,"Bcc":"",'
    '"Body":"b","Cc":"","ChangeBy":2,"ChangeTime":"2026-11-26 21:14:57","Charset":"utf8",'
    '"CommunicationChannelID":3,"ContentCharset":"utf8","ContentType":"text/plain; charset=utf8",'
    '"CreateBy":2,"CreateTime":"2026-11-26 21:14:57","From":"someone@example.com","InReplyTo":"",'
    '"IncomingTime":1795727697,"IsVisibleForCustomer":1,"MessageID":"","MimeType":"text/plain",'
    '"References":"","ReplyTo":"","SenderType":"agent","SenderTypeID":"1","Subject":"s","TicketID":2,'
    '"TimeUnit":0,"To":"Raw"}],"ChangeBy":2,"Changed":"2026-11-26 21:14:57","CreateBy":2,'
    '"Created":"2026-11-26 21:14:57","CustomerID":"","CustomerUserID":"someone@example.com",'
    '"DynamicField":[{"Name":"ProcessManagementActivityID","Value":null},'
    '{"Name":"ProcessManagementAttachment","Value":null},{"Name":"ProcessManagementProcessID","Value":null},'
    '{"Name":"TicketCalendarEndTime","Value":null},{"Name":"TicketCalendarStartTime","Value":null}],'
    '"EscalationResponseTime":0,"EscalationSolutionTime":0,"EscalationTime":0,"EscalationUpdateTime":0,'
    '"GroupID":1,"Lock":"unlock","LockID":1,"Owner":"bridge","OwnerID":2,"Priority":"3 normal",'
    '"PriorityID":3,"Queue":"Raw","QueueID":2,"RealTillTimeNotUsed":0,"Responsible":"root@localhost",'
    '"ResponsibleID":1,"SLAID":"","ServiceID":"","State":"new","StateID":1,"StateType":"new",'
    '"TicketID":2,"TicketNumber":"2026112610000015","TimeUnit":0,"Title":"t1","Type":"Unclassified",'
    '"TypeID":1,"UnlockTimeout":1795727697,"UntilTime":0}]}'
)
OBS_UPDATE = '{"TicketID":"2","TicketNumber":"2026112610000015"}'

# Error bodies with the Content-Length recorded on Znuny 6.5.10.
ERR_SESSION_AUTH = (
    '{"Error":{"ErrorCode":"SessionCreate.AuthFail","ErrorMessage":"SessionCreate: Authorization failing!"}}',
    103,
)
ERR_GET_AUTH = (
    '{"Error":{"ErrorCode":"TicketGet.AuthFail","ErrorMessage":"TicketGet: Authorization failing!"}}',
    95,
)
ERR_SEARCH_AUTH = (
    '{"Error":{"ErrorCode":"TicketSearch.AuthFail","ErrorMessage":"TicketSearch: Authorization failing!"}}',
    101,
)
ERR_CREATE_AUTH = (
    '{"Error":{"ErrorCode":"TicketCreate.AuthFail","ErrorMessage":"TicketCreate: User could not be authenticated!"}}',
    111,
)
ERR_UPDATE_AUTH = (
    '{"Error":{"ErrorCode":"TicketUpdate.AuthFail","ErrorMessage":"TicketUpdate: User could not be authenticated!"}}',
    111,
)
ERR_CREATE_TITLE = (
    '{"Error":{"ErrorCode":"TicketCreate.MissingParameter","ErrorMessage":"TicketCreate: Ticket->Title parameter is missing!"}}',
    122,
)
ERR_CREATE_QUEUE = (
    '{"Error":{"ErrorCode":"TicketCreate.InvalidParameter","ErrorMessage":"TicketCreate: Ticket->QueueID or Ticket->Queue parameter is invalid!"}}',
    141,
)
ERR_CREATE_STATE = (
    '{"Error":{"ErrorCode":"TicketCreate.InvalidParameter","ErrorMessage":"TicketCreate: Ticket->StateID or Ticket->State parameter is invalid!"}}',
    141,
)
ERR_GET_DENIED = (
    '{"Error":{"ErrorCode":"TicketGet.AccessDenied","ErrorMessage":"TicketGet: User does not have access to the ticket!"}}',
    117,
)
ERR_UPDATE_STATE = (
    '{"Error":{"ErrorCode":"TicketUpdate.InvalidParameter","ErrorMessage":"TicketUpdate: Ticket->StateID or Ticket->State parameter is invalid!"}}',
    141,
)
ERR_UPDATE_DENIED = (
    '{"Error":{"ErrorCode":"TicketUpdate.AccessDenied","ErrorMessage":"TicketUpdate: User does not have access to the ticket!"}}',
    123,
)

VOLATILE = {
    "Age",
    "Changed",
    "Created",
    "UnlockTimeout",
    "IncomingTime",
    "ChangeTime",
    "CreateTime",
    "TicketNumber",
}


# ---------------------------------------------------------------- helpers


def assert_same_shape(actual, expected, path="$"):
    """Same keys and the same JSON types, recursively (None only matches None)."""
    assert type(actual) is type(expected), (
        f"{path}: {type(actual).__name__} {actual!r} != {type(expected).__name__} {expected!r}"
    )
    if isinstance(expected, dict):
        missing, extra = set(expected) - set(actual), set(actual) - set(expected)
        assert not missing and not extra, f"{path}: missing keys {missing}, extra keys {extra}"
        for key in expected:
            assert_same_shape(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: {len(actual)} items != {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_shape(a, e, f"{path}[{index}]")


def assert_same_values(actual, expected, ignore=VOLATILE, path="$"):
    """Equal values except for keys that differ per run (timestamps, Age ...)."""
    if isinstance(expected, dict):
        for key, value in expected.items():
            if key not in ignore:
                assert_same_values(actual[key], value, ignore, f"{path}.{key}")
    elif isinstance(expected, list):
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_values(a, e, ignore, f"{path}[{index}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def assert_error(response, recorded):
    text, length = recorded
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.text == text
    assert len(response.content) == length == int(response.headers["Content-Length"])


def raw_exchange(sim, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection((sim.host, sim.port), timeout=5) as conn:
        conn.sendall(request)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def ws_path(sim) -> str:
    return sim.base_url[len(sim.url) :]


def get(sim, route, **params):
    return requests.get(sim.base_url + route, params=params, timeout=5)


def post(sim, route, body):
    return requests.post(sim.base_url + route, json=body, timeout=5)


def patch(sim, route, body):
    return requests.patch(sim.base_url + route, json=body, timeout=5)


# ---------------------------------------------------------------- sessions and framing


def test_session_create_shape_and_exact_framing(sim):
    body = json.dumps({"UserLogin": USER, "Password": PASSWORD}).encode()
    raw = raw_exchange(
        sim,
        f"POST {ws_path(sim)}/Session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert lines[1:] == [
        "Content-Type: application/json; charset=UTF-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    assert len(payload) == 48
    data = json.loads(payload)
    assert_same_shape(data, {"SessionID": "9dhLQw3PkQrlVP8Xdwjoi3VMlVjTMOwX"})
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["SessionID"])


def test_status_line_echoes_http_1_0(sim):
    raw = raw_exchange(sim, f"GET {ws_path(sim)}/Ticket/2 HTTP/1.0\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
    assert raw.endswith(ERR_GET_AUTH[0].encode())


def test_session_create_wrong_password_and_missing_password(sim):
    assert_error(post(sim, "/Session", {"UserLogin": USER, "Password": "wrong"}), ERR_SESSION_AUTH)
    response = post(sim, "/Session", {"UserLogin": USER})
    assert response.json() == {
        "Error": {
            "ErrorCode": "SessionCreate.MissingParameter",
            "ErrorMessage": "SessionCreate: Password parameter is missing!",
        }
    }


def test_session_get_valid_and_invalid(sim):
    sid = login(sim)
    data = get(sim, f"/Session/{sid}").json()
    entries = {e["Key"]: e["Value"] for e in data["SessionData"]}
    assert [e["Key"] for e in data["SessionData"]] == sorted(entries)
    assert entries["UserLogin"] == USER
    assert entries["UserID"] == "2"
    assert entries["UserType"] == "User"
    assert entries["SessionSource"] == "GenericInterface"
    assert all(isinstance(v, str) for v in entries.values())
    assert "UserPw" not in entries
    assert get(sim, "/Session/nosuchsession").json() == {
        "Error": {
            "ErrorCode": "SessionGet.SessionInvalid",
            "ErrorMessage": "SessionGet: SessionID is Invalid!",
        }
    }


def test_expired_session_fails_exactly_like_unknown_and_use_does_not_refresh(sim):
    sim.configure(session_ttl=0.6)
    sid = login(sim)
    create_ticket(sim, sid)
    time.sleep(0.3)
    assert get(sim, "/Ticket/2", SessionID=sid).json()["Ticket"][0]["TicketID"] == 2  # used
    time.sleep(0.35)  # 0.65 s after creation, 0.35 s after the last use
    expired = get(sim, "/Ticket/2", SessionID=sid)
    unknown = get(sim, "/Ticket/2", SessionID="invalidsession123")
    assert expired.content == unknown.content
    assert_error(expired, ERR_GET_AUTH)
    assert sim.stats()["sessions"] == 0  # deleted when found expired
    assert_error(get(sim, "/Ticket", SessionID=sid, Title="t1"), ERR_SEARCH_AUTH)
    assert_error(post(sim, "/Ticket", ticket_body(sid)), ERR_CREATE_AUTH)
    assert_error(
        patch(sim, "/Ticket/2", {"SessionID": sid, "Ticket": {"State": "open"}}), ERR_UPDATE_AUTH
    )
    assert get(sim, f"/Session/{sid}").json()["Error"]["ErrorCode"] == "SessionGet.SessionInvalid"


def test_absolute_session_lifetime(sim):
    sim.configure(session_max_ttl=0.5)
    sid = login(sim)
    assert "Error" not in get(sim, "/Ticket", SessionID=sid).json()
    time.sleep(0.55)
    assert_error(get(sim, "/Ticket", SessionID=sid), ERR_SEARCH_AUTH)


def test_expire_all_sessions_endpoint(sim):
    sid = login(sim)
    assert requests.post(sim.url + "/_sim/sessions/expire", timeout=5).json() == {"expired": 1}
    assert_error(get(sim, "/Ticket", SessionID=sid), ERR_SEARCH_AUTH)


def test_auth_precedence_and_per_request_credentials(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    # An invalid SessionID fails even with valid UserLogin + Password.
    assert_error(
        get(sim, "/Ticket/2", SessionID="bad", UserLogin=USER, Password=PASSWORD), ERR_GET_AUTH
    )
    # No session needed: credentials on every request work.
    ok = get(sim, "/Ticket/2", UserLogin=USER, Password=PASSWORD).json()
    assert ok["Ticket"][0]["Owner"] == USER
    assert_error(get(sim, "/Ticket/2"), ERR_GET_AUTH)  # no credentials at all
    body = ticket_body("")
    del body["SessionID"]
    assert post(sim, "/Ticket", body).json()["Error"] == {
        "ErrorCode": "TicketCreate.MissingParameter",
        "ErrorMessage": "TicketCreate: UserLogin, CustomerUserLogin or SessionID is required!",
    }
    body["UserLogin"] = USER
    assert post(sim, "/Ticket", body).json()["Error"] == {
        "ErrorCode": "TicketCreate.MissingParameter",
        "ErrorMessage": "TicketCreate: Password or SessionID is required!",
    }
    body["Password"] = PASSWORD
    assert post(sim, "/Ticket", body).json()["TicketID"] == "3"
    assert patch(sim, "/Ticket/2", {"Ticket": {"State": "open"}}).json()["Error"] == {
        "ErrorCode": "TicketUpdate.MissingParameter",
        "ErrorMessage": "TicketUpdate: UserLogin, CustomerUserLogin or SessionID is required!",
    }


# ---------------------------------------------------------------- TicketCreate / Get / Update


def test_ticket_create_matches_recording(sim):
    sid = login(sim)
    first = post(sim, "/Ticket", ticket_body(sid))
    second = post(sim, "/Ticket", ticket_body(sid))
    expected = json.loads(OBS_CREATE)
    for response, ticket_id, article_id, counter in ((first, "2", 2, 1), (second, "3", 3, 2)):
        data = response.json()
        assert_same_shape(data, expected)
        assert data["TicketID"] == ticket_id and data["ArticleID"] == article_id
        assert len(response.content) == 64
        assert data["TicketNumber"] == ticket_number(time.time(), counter)
        assert re.fullmatch(r"\d{8}10\d{6}", data["TicketNumber"])
    # The checksum scheme reproduces both recorded numbers.
    base = 1795727697  # 2026-11-26 21:14:57 UTC
    assert ticket_number(base, 1) == "2026112610000015"
    assert ticket_number(base, 2) == "2026112610000024"


def test_ticket_get_matches_recording(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    response = get(sim, "/Ticket/2", SessionID=sid)
    expected = json.loads(OBS_GET)
    data = response.json()
    assert_same_shape(data, expected)
    assert_same_values(data, expected)
    ticket = data["Ticket"][0]
    assert ticket["Created"] == ticket["Changed"] == fmt_time(ticket["UnlockTimeout"])
    assert 0 <= ticket["Age"] <= 2
    assert len(response.content) == 704  # same byte count as the recording
    assert "SLA" not in ticket and "Service" not in ticket


def test_ticket_get_with_articles_and_dynamic_fields(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    data = get(sim, "/Ticket/2", SessionID=sid, AllArticles=1, DynamicFields=1).json()
    expected = json.loads(OBS_GET_FULL)
    assert_same_shape(data, expected)
    assert_same_values(data, expected)
    article = data["Ticket"][0]["Article"][0]
    assert article["IncomingTime"] == data["Ticket"][0]["UnlockTimeout"]
    # AllArticles=0 / DynamicFields=0 (as PyOTRS sends them) mean "no".
    plain = get(sim, "/Ticket/2", SessionID=sid, AllArticles=0, DynamicFields=0).json()
    assert_same_shape(plain, json.loads(OBS_GET))


def test_ticket_get_several_ids_and_ticket_list(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    create_ticket(sim, sid)
    single = json.loads(OBS_GET)["Ticket"][0]
    for response in (
        get(sim, "/Ticket/2,3", SessionID=sid),
        get(sim, "/TicketList", SessionID=sid, TicketID="2,3"),
        requests.get(
            sim.base_url + f"/TicketList?SessionID={sid}&TicketID=2&TicketID=3", timeout=5
        ),
        get(sim, "/Ticket/2, 3", SessionID=sid),
    ):
        data = response.json()
        assert_same_shape(data, {"Ticket": [single, single]})
        assert [t["TicketID"] for t in data["Ticket"]] == [2, 3]
    assert [t["TicketID"] for t in get(sim, "/Ticket/3,2", SessionID=sid).json()["Ticket"]] == [
        3,
        2,
    ]


def test_ticket_get_errors(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    assert_error(get(sim, "/Ticket/99999999", SessionID=sid), ERR_GET_DENIED)
    assert_error(get(sim, "/Ticket/2,99999999", SessionID=sid), ERR_GET_DENIED)  # whole call fails
    assert_error(get(sim, "/Ticket/1", SessionID=sid), ERR_GET_DENIED)  # no welcome ticket
    # Znuny 6.5.10 has no "Invalid ticket ID" check (the reference read it in newer
    # sources): an id that names no ticket is denied, and "02" is ticket 2
    # (test_sim_matches_znuny.py checks this against the real server).
    for bad in ("abc", "2,x", "-1"):
        assert_error(get(sim, f"/Ticket/{bad}", SessionID=sid), ERR_GET_DENIED)
    assert get(sim, "/Ticket/02", SessionID=sid).json()["Ticket"][0]["TicketID"] == 2
    missing = {
        "ErrorCode": "TicketGet.MissingParameter",
        "ErrorMessage": "TicketGet: TicketID parameter is missing!",
    }
    assert get(sim, "/TicketList", SessionID=sid).json()["Error"] == missing
    assert get(sim, "/Ticket/0", SessionID=sid).json()["Error"] == missing
    # /TicketList reports TicketGet.* codes.
    assert_error(get(sim, "/TicketList", SessionID=sid, TicketID="99999999"), ERR_GET_DENIED)
    assert_error(get(sim, "/TicketList", SessionID="nope", TicketID="2"), ERR_GET_AUTH)


def test_ticket_create_errors(sim):
    sid = login(sim)
    body = ticket_body(sid)
    del body["Ticket"]["Title"]
    assert_error(post(sim, "/Ticket", body), ERR_CREATE_TITLE)
    assert_error(post(sim, "/Ticket", ticket_body(sid, Queue="NoSuchQueue")), ERR_CREATE_QUEUE)
    assert_error(post(sim, "/Ticket", ticket_body(sid, State="bogus")), ERR_CREATE_STATE)
    assert_error(post(sim, "/Ticket", ticket_body("invalidsession123")), ERR_CREATE_AUTH)

    def error_of(body):
        return post(sim, "/Ticket", body).json()["Error"]

    nested = ticket_body(sid)
    nested["Ticket"]["Article"] = nested.pop("Article")
    assert error_of(nested) == {
        "ErrorCode": "TicketCreate.MissingParameter",
        "ErrorMessage": "TicketCreate: Article parameter is missing or not valid!",
    }
    assert error_of(ticket_body(sid, CustomerUser="not an address"))["ErrorMessage"] == (
        "TicketCreate: Ticket->CustomerUser parameter is invalid!"
    )
    no_priority = ticket_body(sid)
    del no_priority["Ticket"]["Priority"]
    assert error_of(no_priority)["ErrorMessage"] == (
        "TicketCreate: Ticket->PriorityID or Ticket->Priority parameter is required!"
    )
    no_content_type = ticket_body(sid)
    del no_content_type["Article"]["ContentType"]
    assert error_of(no_content_type)["ErrorMessage"] == (
        "TicketCreate: Article->ContentType or Ticket->MimeType and Article->Charset parameters are required!"
    )
    bad_df = ticket_body(sid)
    bad_df["DynamicField"] = {"Name": "NoSuchField", "Value": "x"}
    assert error_of(bad_df) == {
        "ErrorCode": "TicketCreate.InvalidParameter",
        "ErrorMessage": "TicketCreate: DynamicField->Name parameter is invalid!",
    }
    # Quirk: a non-object item in the DynamicField list is a 500 fault, not an Error.
    quirk = ticket_body(sid)
    quirk["DynamicField"] = ["oops"]
    response = post(sim, "/Ticket", quirk)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert response.json() == {
        "faultcode": "Server",
        "faultstring": "TicketCreate: Ticket->DynamicField parameter is invalid!",
    }
    assert sim.stats()["tickets"] == 0  # nothing of the above created a ticket


def test_ticket_create_by_ids_with_dynamic_fields_and_owner(sim):
    sid = login(sim)
    body = ticket_body(sid, QueueID=4, StateID=4, PriorityID=5, Owner="root@localhost")
    for key in ("Queue", "State", "Priority"):
        del body["Ticket"][key]
    body["DynamicField"] = [{"Name": "ProcessManagementProcessID", "Value": "Proc-1"}]
    created = post(sim, "/Ticket", body).json()
    ticket = get(sim, f"/Ticket/{created['TicketID']}", SessionID=sid, DynamicFields=1).json()[
        "Ticket"
    ][0]
    assert (ticket["Queue"], ticket["State"], ticket["Priority"]) == ("Misc", "open", "5 very high")
    assert (ticket["Owner"], ticket["OwnerID"], ticket["Lock"]) == ("root@localhost", 1, "lock")
    values = {f["Name"]: f["Value"] for f in ticket["DynamicField"]}
    assert values["ProcessManagementProcessID"] == "Proc-1"
    assert values["TicketCalendarEndTime"] is None


def test_ticket_update_matches_recording(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    before = get(sim, "/Ticket/2", SessionID=sid).json()["Ticket"][0]
    with sim.store.lock:  # pretend the ticket is two seconds old
        ticket = sim.store.get(2)
        ticket["Created"] -= 2
        ticket["Changed"] -= 2
    response = patch(sim, "/Ticket/2", {"SessionID": sid, "Ticket": {"State": "closed successful"}})
    assert_same_shape(response.json(), json.loads(OBS_UPDATE))
    assert response.json()["TicketID"] == "2"
    assert response.json()["TicketNumber"] == before["TicketNumber"]
    after = get(sim, "/Ticket/2", SessionID=sid).json()
    expected = json.loads(OBS_GET)
    expected["Ticket"][0].update(State="closed successful", StateID=2, StateType="closed")
    assert_same_shape(after, expected)
    assert_same_values(after, expected)
    ticket = after["Ticket"][0]
    assert ticket["Changed"] > ticket["Created"]  # Changed moved, Created did not
    assert ticket["ChangeBy"] == 2


def test_ticket_update_errors_and_article(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    create_ticket(sim, sid)
    assert_error(
        patch(sim, "/Ticket/3", {"SessionID": sid, "Ticket": {"State": "bogus"}}), ERR_UPDATE_STATE
    )
    assert_error(
        patch(sim, "/Ticket/99999999", {"SessionID": sid, "Ticket": {"State": "open"}}),
        ERR_UPDATE_DENIED,
    )
    assert_error(
        patch(sim, "/Ticket/2", {"SessionID": "invalidsession123", "Ticket": {"State": "open"}}),
        ERR_UPDATE_AUTH,
    )
    with_article = patch(
        sim,
        "/Ticket/2",
        {
            "SessionID": sid,
            "Article": {
                "Subject": "note",
                "Body": "done",
                "ContentType": "text/plain; charset=utf8",
            },
        },
    ).json()
    assert with_article == {
        "ArticleID": 4,
        "TicketID": "2",
        "TicketNumber": with_article["TicketNumber"],
    }
    # A TicketNumber in the body takes precedence over the route TicketID.
    number3 = get(sim, "/Ticket/3", SessionID=sid).json()["Ticket"][0]["TicketNumber"]
    by_number = patch(
        sim,
        "/Ticket/2",
        {"SessionID": sid, "TicketNumber": number3, "Ticket": {"Title": "renamed"}},
    )
    assert by_number.json() == {"TicketID": "3", "TicketNumber": number3}
    assert get(sim, "/Ticket/3", SessionID=sid).json()["Ticket"][0]["Title"] == "renamed"
    articles = get(sim, "/Ticket/2", SessionID=sid, AllArticles=1).json()["Ticket"][0]["Article"]
    assert [a["Subject"] for a in articles] == ["s", "note"]
    assert articles[1]["ArticleNumber"] == 2


def test_history_shows_state_changes_and_merge(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    create_ticket(sim, sid)
    patch(sim, "/Ticket/2", {"SessionID": sid, "Ticket": {"State": "open"}})
    merged = requests.post(sim.url + "/_sim/tickets/2/merge", json={"into": 3}, timeout=5).json()
    assert merged["changed"] is True and merged["Ticket"]["State"] == "merged"
    ticket = get(sim, "/Ticket/2", SessionID=sid).json()["Ticket"][0]
    assert (ticket["State"], ticket["StateID"], ticket["StateType"]) == ("merged", 9, "merged")
    history = get(sim, "/TicketHistory/2", SessionID=sid).json()["TicketHistory"]
    assert history[0]["TicketID"] == "2"
    lines = history[0]["History"]
    assert set(lines[0]) == {
        "ArticleID",
        "CreateBy",
        "CreateTime",
        "HistoryType",
        "HistoryTypeID",
        "Name",
        "OwnerID",
        "PriorityID",
        "QueueID",
        "StateID",
        "TicketID",
        "TypeID",
    }
    types = [line["HistoryType"] for line in lines]
    assert types[0] == "NewTicket" and "StateUpdate" in types and "Merged" in types
    n2, n3 = (
        get(sim, f"/Ticket/{i}", SessionID=sid).json()["Ticket"][0]["TicketNumber"] for i in (2, 3)
    )
    merge_line = next(line for line in lines if line["HistoryType"] == "Merged")
    assert merge_line["Name"] == f"%%{n2}%%2%%{n3}%%3"
    assert (
        get(sim, "/TicketHistory/99", SessionID=sid).json()["Error"]["ErrorCode"]
        == "TicketHistoryGet.AccessDenied"
    )


# ---------------------------------------------------------------- TicketSearch


def test_ticket_search_recorded_sequence(sim):
    sid = login(sim)
    assert get(sim, "/Ticket", SessionID=sid).content == b"{}"
    create_ticket(sim, sid)
    create_ticket(sim, sid)

    def search(**params):
        response = get(sim, "/Ticket", SessionID=sid, **params)
        assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
        return response.content

    assert search(Title="t1") == b'{"TicketID":["3","2"]}'
    assert search(Title="t1", StateType="new") == b'{"TicketID":["3","2"]}'
    assert search(Title="t1", StateType="open") == b"{}"
    assert search(Title="no-such-title-xyz") == b"{}"
    assert search(TicketID="2") == b'{"TicketID":["2"]}'
    patch(sim, "/Ticket/2", {"SessionID": sid, "Ticket": {"State": "closed successful"}})
    assert search(Title="t1", StateType="closed") == b'{"TicketID":["2"]}'
    assert search(Title="t1", StateType="new") == b'{"TicketID":["3"]}'
    assert_error(get(sim, "/Ticket", SessionID="invalidsession123", Title="t1"), ERR_SEARCH_AUTH)


def test_ticket_search_filters(sim):
    sid = login(sim)
    create_ticket(sim, sid, "Grant access BR-17")  # 2
    create_ticket(sim, sid, "Remove access br-18", Queue="Misc")  # 3
    create_ticket(sim, sid, "Other")  # 4
    pending = {"State": "pending reminder", "PendingTime": {"Diff": 60}}  # Znuny needs a time
    patch(sim, "/Ticket/3", {"SessionID": sid, "Ticket": pending})
    patch(sim, "/Ticket/4", {"SessionID": sid, "Ticket": {"State": "closed unsuccessful"}})

    def ids(query):
        return get_raw(query).get("TicketID", [])

    def get_raw(query):
        return requests.get(f"{sim.base_url}/Ticket?SessionID={sid}&{query}", timeout=5).json()

    assert ids("Title=*access*") == ["3", "2"]
    assert ids("Title=%25BR-1%25") == ["3", "2"]  # % wildcard, case-insensitive
    assert ids("Title=grant+access+br-17") == ["2"]  # + is a space, no implicit wildcards
    assert ids("Title=access") == []
    assert ids("Title=Grant*;Title=Other") == ["4", "2"]  # ';' separator, list OR
    assert ids("States=new&States=pending+reminder") == ["3", "2"]
    assert ids("StateIDs=3") == ["4"]
    # Over the web service "Open" and "Closed" are type names, without case: no ticket
    # is of type "open"; "Closed" is "closed" (test_sim_matches_znuny.py, on both).
    assert ids("StateType=Open") == []
    assert ids("StateType=new&StateType=pending+reminder") == ["3", "2"]
    assert ids("StateType=Closed") == ["4"]
    assert ids("StateType=pending+reminder") == ["3"]
    assert ids("StateTypeIDs=3") == ["4"]
    assert ids("Queues=Misc") == ["3"]
    assert ids("QueueIDs=2") == ["4", "2"]
    assert get_raw("Queues=NoSuchQueue") == {}  # Znuny's search gives up
    assert ids("Priorities=3+normal") == ["4", "3", "2"]
    assert ids("CustomerUserLogin=SOMEONE@example.com") == ["4", "3", "2"]
    assert ids(
        "TicketNumber="
        + get(sim, "/Ticket/3", SessionID=sid).json()["Ticket"][0]["TicketNumber"][:10]
        + "*"
    ) == ["4", "3", "2"]
    assert ids("SortBy=Age&OrderBy=Up") == ["2", "3", "4"]
    assert ids("SortBy=Title&OrderBy=Up") == ["2", "4", "3"]
    assert get_raw("SortBy=Bogus") == {}
    assert ids("Limit=2") == ["4", "3"]
    assert ids("Limit=0") == ["4", "3", "2"]  # 0 means the default
    assert ids("Title=Other=ignored") == ["4"]  # only text between first and second '='
    assert ids("DynamicField_X=abc") == ["4", "3", "2"]  # string DF criteria are ignored

    now = time.time()
    with sim.store.lock:  # age ticket 2 by two hours
        t2 = sim.store.get(2)
        t2["Created"] -= 7200
        t2["Changed"] -= 7200
        for line in t2["History"]:
            line["Created"] -= 7200
    hour_ago = fmt_time(now - 3600).replace(" ", "%20")
    assert ids(f"TicketLastChangeTimeNewerDate={hour_ago}") == ["4", "3"]
    assert ids(f"TicketLastChangeTimeOlderDate={hour_ago}") == ["2"]
    assert ids(f"TicketCreateTimeOlderDate={hour_ago}") == ["2"]
    assert ids("TicketCreateTimeNewerMinutes=60") == ["4", "3"]
    assert ids(f"TicketChangeTimeNewerDate={hour_ago}") == ["4", "3"]
    assert get_raw("TicketCreateTimeNewerDate=yesterday") == {}
    assert ids("TicketCloseTimeNewerMinutes=5") == ["4"]


# ---------------------------------------------------------------- transport rules


def test_route_errors_are_plain_text_500(sim):
    sid = login(sim)
    cases = [
        ("GET", "/NoSuchRoute", "/NoSuchRoute", 74),
        ("DELETE", "/Session", "/Session", 70),
        ("POST", "/Ticket/2", "/Ticket/2", None),
        ("PUT", "/Ticket/2", "/Ticket/2", None),
        ("GET", "/Ticket/", "/Ticket/", None),
        ("GET", "/ticket", "/ticket", None),
        ("GET", "/Session", "/Session", None),
    ]
    for method, route, shown, length in cases:
        response = requests.request(method, f"{sim.base_url}{route}?SessionID={sid}", timeout=5)
        expected = f"HTTP::REST Error while determine Operation for request URI '{shown}'."
        assert response.status_code == 500, (method, route)
        assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
        assert response.text == expected
        if length:
            assert len(response.content) == length
    assert sim.stats()["transport"]["no_route"] == len(cases)


def test_aliases_webservice_id_and_unknown_webservice(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    for base in (
        f"{sim.url}/znuny/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST",
        f"{sim.url}/otrs/nph-genericinterface.pl/WebserviceID/1",
    ):
        assert (
            requests.get(f"{base}/Ticket/2", params={"SessionID": sid}, timeout=5).json()["Ticket"][
                0
            ]["TicketID"]
            == 2
        )
    for base in (
        f"{sim.url}/otrs/nph-genericinterface.pl/Webservice/NoSuchService",
        f"{sim.url}/otrs/nph-genericinterface.pl/WebserviceID/7",
    ):
        response = requests.get(f"{base}/Ticket/2", params={"SessionID": sid}, timeout=5)
        assert response.status_code == 500
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.text.startswith('<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN">')


def test_body_decoding_errors(sim_factory):
    small = sim_factory(max_length=1000)

    def send(data: bytes):
        return requests.post(
            small.base_url + "/Ticket",
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=5,
        )

    for data, text in (
        (b'{"SessionID":', "Error while decoding request content."),
        (b"null", "Error while decoding request content."),
        (b"false", "Error while decoding request content."),
        (b"0", "Error while decoding request content."),
        (b"{}", "Unsupported request content structure."),
        (b"[]", "Unsupported request content structure."),
        (b'"text"', "Unsupported request content structure."),
    ):
        response = send(data)
        assert (response.status_code, response.text) == (500, text), data
        assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert len(send(b'{"SessionID":').content) == 37
    too_big = send(b'{"x":"' + b"a" * 2000 + b'"}')
    assert too_big.status_code == 413
    assert too_big.headers["Content-Type"] == "text/plain; charset=UTF-8"
    # Without a body the operation sees only the URL parameters.
    assert send(b"").json()["Error"]["ErrorCode"] == "TicketCreate.MissingParameter"


def test_parameter_merge_rules(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    create_ticket(sim, sid)
    # GET bodies are ignored: SessionID in the body means no credentials.
    response = requests.get(
        sim.base_url + "/Ticket/2",
        data=json.dumps({"SessionID": sid}),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert_error(response, ERR_GET_AUTH)
    # The route parameter wins over the query string.
    assert get(sim, "/Ticket/2", SessionID=sid, TicketID="3").json()["Ticket"][0]["TicketID"] == 2
    # URL parameters win over the body.
    url = f"{sim.base_url}/Ticket/2?SessionID={sid}"
    response = requests.patch(
        url, json={"SessionID": "bad", "Ticket": {"Title": "via query"}}, timeout=5
    )
    assert response.json() == {"TicketID": "2", "TicketNumber": response.json()["TicketNumber"]}
    # ... and the route TicketID wins over a body TicketID.
    requests.patch(url, json={"TicketID": "3", "Ticket": {"Title": "route wins"}}, timeout=5)
    assert get(sim, "/Ticket/2", SessionID=sid).json()["Ticket"][0]["Title"] == "route wins"
    # Query credentials work for POST too; ';' separates parameters.
    body = ticket_body("")
    del body["SessionID"]
    created = requests.post(
        f"{sim.base_url}/Ticket?UserLogin={USER};Password={PASSWORD}", json=body, timeout=5
    )
    assert created.json()["TicketID"] == "4"


# ---------------------------------------------------------------- control endpoints and pages


def test_stats_and_reset(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    get(sim, "/Ticket/2", SessionID=sid)
    get(sim, "/Ticket", SessionID=sid)
    patch(sim, "/Ticket/2", {"SessionID": sid, "Ticket": {"State": "open"}})
    get(sim, "/TicketList", SessionID=sid, TicketID="2")
    stats = requests.get(sim.url + "/_sim/stats", timeout=5).json()
    assert stats["calls"] == {
        "SessionCreate": 1,
        "SessionGet": 0,
        "TicketCreate": 1,
        "TicketGet": 1,
        "TicketGetList": 1,
        "TicketHistoryGet": 0,
        "TicketSearch": 1,
        "TicketUpdate": 1,
    }
    assert stats["tickets"] == 1
    assert stats["tickets_by_state"] == {"open": 1}
    assert stats["sessions"] == 1
    assert set(stats["webhooks"]) >= {"sent", "failed"}
    after = requests.post(sim.url + "/_sim/reset", timeout=5).json()
    assert after["tickets"] == 0 and after["sessions"] == 0
    assert set(after["calls"].values()) == {0}
    assert_error(get(sim, "/Ticket/2", SessionID=sid), ERR_GET_AUTH)  # sessions are gone
    sid = login(sim)
    assert create_ticket(sim, sid)["TicketID"] == "3"  # IDs keep counting ...
    requests.post(sim.url + "/_sim/reset", json={"reset_ids": True}, timeout=5)
    sid = login(sim)
    assert create_ticket(sim, sid)["TicketID"] == "2"  # ... unless asked


def test_config_endpoint(sim):
    config = requests.get(sim.url + "/_sim/config", timeout=5).json()
    assert config["session_ttl"] == 7200 and config["session_max_ttl"] == 57600
    assert config["user"] == USER and config["webservice"] == "GenericTicketConnectorREST"
    assert "password" not in config and "webhook_secret_header" not in config
    changed = requests.post(
        sim.url + "/_sim/config",
        json={
            "latency_ms": 5,
            "fail_rate": 0.25,
            "drop_after_commit": 0.5,
            "html_errors": True,
            "session_ttl": 30,
            "webhook_url": "http://127.0.0.1:9/hook",
        },
        timeout=5,
    ).json()
    assert (changed["latency_ms"], changed["fail_rate"], changed["drop_after_commit"]) == (
        5,
        0.25,
        0.5,
    )
    assert changed["html_errors"] is True and changed["session_ttl"] == 30
    assert sim.config.webhook_url == "http://127.0.0.1:9/hook"
    bad = requests.post(sim.url + "/_sim/config", json={"fail_rate": 2}, timeout=5)
    assert bad.status_code == 400 and "fail_rate" in bad.json()["error"]
    assert (
        requests.post(sim.url + "/_sim/config", json={"password": "x"}, timeout=5).status_code
        == 400
    )
    assert sim.config.fail_rate == 0.25


def test_state_endpoint_json_and_form(sim):
    sid = login(sim)
    create_ticket(sim, sid)
    response = requests.post(
        sim.url + "/_sim/tickets/2/state", json={"state": "pending reminder"}, timeout=5
    )
    data = response.json()
    assert data["changed"] is True
    assert (data["Ticket"]["State"], data["Ticket"]["StateType"]) == (
        "pending reminder",
        "pending reminder",
    )
    assert data["Ticket"]["UntilTime"] > 0
    form = requests.post(
        sim.url + "/_sim/tickets/2/state",
        data={"state": "closed successful"},
        allow_redirects=False,
        timeout=5,
    )
    assert form.status_code == 303 and form.headers["Location"] == "/"
    ticket = get(sim, "/Ticket/2", SessionID=sid).json()["Ticket"][0]
    assert (ticket["State"], ticket["StateID"], ticket["ChangeBy"]) == ("closed successful", 2, 1)
    assert (
        requests.post(
            sim.url + "/_sim/tickets/2/state", json={"state": "nope"}, timeout=5
        ).status_code
        == 400
    )
    assert (
        requests.post(
            sim.url + "/_sim/tickets/77/state", json={"state": "open"}, timeout=5
        ).status_code
        == 404
    )
    assert sim.stats()["tickets_by_state"] == {"closed successful": 1}


def test_html_pages(sim):
    sid = login(sim)
    number = create_ticket(sim, sid, "Grant <b>access</b>")["TicketNumber"]
    html = requests.get(sim.url + "/", timeout=5).text
    assert "<title>OTRS simulator</title>" in html
    assert f'aria-label="Close successful ticket {number}"' in html
    for label in ("Open ticket", "Pending reminder ticket", "Close unsuccessful ticket"):
        assert f'aria-label="{label} {number}"' in html
    assert "Grant &lt;b&gt;access&lt;/b&gt;" in html  # escaped
    assert 'action="/_sim/tickets/2/state"' in html
    for alias in ("otrs", "znuny"):
        zoom = requests.get(
            f"{sim.url}/{alias}/index.pl?Action=AgentTicketZoom;TicketID=2", timeout=5
        )
        assert zoom.status_code == 200 and number in zoom.text
    assert (
        requests.get(
            f"{sim.url}/otrs/index.pl?Action=AgentTicketZoom;TicketID=9", timeout=5
        ).status_code
        == 404
    )


def test_state_file_persists_across_restart(sim_factory, tmp_path: Path):
    state = tmp_path / "sim.json"
    first = sim_factory(state_file=str(state))
    sid = login(first)
    create_ticket(first, sid, "persisted")
    first.shutdown()
    assert json.loads(state.read_text())["tickets"][0]["Title"] == "persisted"
    second = sim_factory(state_file=str(state))
    assert get(second, "/Ticket/2", SessionID=sid).json()["Ticket"][0]["Title"] == "persisted"
    assert create_ticket(second, sid)["TicketID"] == "3"


def test_cli_prints_urls_and_credentials():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otrs_sim",
            "--port",
            "0",
            "--user",
            "agent7",
            "--password",
            "pw7",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        lines = []
        while not any("agent password" in line for line in lines) and len(lines) < 20:
            lines.append(process.stdout.readline())
        text = "".join(lines)
        assert "agent login:     agent7" in text and "agent password:  pw7" in text
        base = re.search(r"web service:\s+(\S+)", text).group(1)
        assert base.endswith("/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST")
        response = requests.post(
            base + "/Session", json={"UserLogin": "agent7", "Password": "pw7"}, timeout=5
        )
        assert len(response.json()["SessionID"]) == 32
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_webhook_token_is_masked_in_config(sim):
    sim.configure(webhook_url="http://127.0.0.1:9/hook?token=s3cret&x=1")
    shown = requests.get(sim.url + "/_sim/config", timeout=5).json()["webhook_url"]
    assert shown == "http://127.0.0.1:9/hook?token=***&x=1"
    assert "s3cret" not in requests.get(sim.url + "/", timeout=5).text


def test_welcome_ticket_option(sim_factory):
    fresh = sim_factory(welcome_ticket=True)
    sid = login(fresh)
    welcome = get(fresh, "/Ticket/1", SessionID=sid).json()["Ticket"][0]
    assert (welcome["Title"], welcome["Owner"], welcome["State"]) == (
        "Welcome to Znuny!",
        "root@localhost",
        "new",
    )
    assert create_ticket(fresh, sid) == {
        "ArticleID": 2,
        "TicketID": "2",
        "TicketNumber": ticket_number(time.time(), 1),
    }
    assert get(fresh, "/Ticket", SessionID=sid).json() == {"TicketID": ["2", "1"]}


def test_sim_ticket_dump(sim):
    sid = login(sim)
    create_ticket(sim, sid, "first")
    create_ticket(sim, sid, "second")
    listing = requests.get(sim.url + "/_sim/tickets", timeout=5).json()["tickets"]
    assert [t["Title"] for t in listing] == ["second", "first"]  # newest first
    one = requests.get(sim.url + "/_sim/tickets/2", timeout=5).json()
    assert one["Article"][0]["Body"] == "b" and one["History"][0]["HistoryType"] == "NewTicket"
    assert requests.get(sim.url + "/_sim/tickets/99", timeout=5).status_code == 404
