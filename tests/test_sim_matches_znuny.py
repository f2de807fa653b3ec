"""The simulator does what the real Znuny 6.5.10 does: each test runs against both.

Every check here was first run against the real server; where the simulator answered
differently, the simulator was fixed and the check stayed. The expected values are what
Znuny answered (shared/znuny, GenericTicketConnectorREST as shipped). The bridge-level
contract (the product against both servers) is in test_znuny_contract.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.slow

DENIED = "TicketGet.AccessDenied"
NOTE = {"Subject": "n", "Body": "n", "ContentType": "text/plain; charset=utf8"}


def entries(history: list[dict], *, resets: bool = True) -> list[tuple[str, str]]:
    """(HistoryType, Name) of each line. Without `resets`, no "Reset of unlock time.": Znuny
    writes one only when the timeout moves to another second, so it depends on timing."""
    return [
        (line["HistoryType"], line["Name"])
        for line in history
        if resets or line["Name"] != "Reset of unlock time."
    ]


def created_lines(server, answer: dict, customer: str = "someone@example.com") -> list:
    """The five history lines TicketCreate writes for an agent's ticket in queue Raw."""
    ticket_id, number = answer["TicketID"], answer["TicketNumber"]
    return [
        ("NewTicket", f"%%{number}%%Raw%%3 normal%%new%%{ticket_id}"),
        ("CustomerUpdate", f"%%CustomerID=;CustomerUser={customer};"),
        ("NewTicket", "%%GenericInterface Create"),
        ("Misc", "Reset of unlock time."),
        ("OwnerUpdate", f"%%{server.user}%%2"),
    ]


# --- TicketGet reads ids as MySQL reads numbers ----------------------------------------------


def test_ticket_get_takes_any_text_that_mysql_reads_as_the_id(otrs_server):
    ticket_id = otrs_server.create_ticket(otrs_server.unique("ids"))["TicketID"]
    for spelled in (f"0{ticket_id}", f"{ticket_id}%20", f"%20{ticket_id}", f"{ticket_id}abc"):
        tickets = otrs_server.get(f"/Ticket/{spelled}")["Ticket"]
        assert [t["TicketID"] for t in tickets] == [int(ticket_id)], spelled
    for spelled in (f"{ticket_id}.0", f"{ticket_id}e0", f"{ticket_id},%20{ticket_id}"):
        assert "Ticket" in otrs_server.get(f"/Ticket/{spelled}"), spelled


def test_ticket_get_answers_access_denied_for_ids_that_are_no_ticket(otrs_server):
    ticket_id = otrs_server.create_ticket(otrs_server.unique("ids"))["TicketID"]
    for spelled in ("abc", f"{ticket_id},abc", "-1", "1.5", f"{ticket_id},,{ticket_id}"):
        answer = otrs_server.get(f"/Ticket/{spelled}")
        assert answer["Error"]["ErrorCode"] == DENIED, (spelled, answer)


def test_history_and_update_echo_the_ticket_id_as_it_was_written(otrs_server):
    answer = otrs_server.create_ticket(otrs_server.unique("echo"))
    spelled = f"0{answer['TicketID']}"
    [item] = otrs_server.get(f"/TicketHistory/{spelled}")["TicketHistory"]
    assert item["TicketID"] == spelled
    assert {line["TicketID"] for line in item["History"]} == {spelled}
    updated = otrs_server.patch(spelled, {"Ticket": {"Priority": "4 high"}})
    assert updated == {"TicketID": spelled, "TicketNumber": answer["TicketNumber"]}


# --- TicketSearch ----------------------------------------------------------------------------


def test_state_types_are_names_compared_without_case_and_open_is_no_shorthand(otrs_server):
    ticket_id = otrs_server.create_ticket(otrs_server.unique("st"))["TicketID"]
    where = f"TicketID={ticket_id}"
    for query in ("StateType=new", "StateType=NEW", "States=New", "StateType=new&StateType=x"):
        assert otrs_server.search(f"{where}&{query}") == [ticket_id], query
    # The operation passes StateType on as a list, which the search core never compares
    # with its "Open"/"Closed" shorthands: it looks the name up as a state type, without
    # case, so "Open" is the type "open" (not "new") and "Closed" is "closed".
    assert otrs_server.search(f"{where}&StateType=Open") == []
    otrs_server.set_state(ticket_id, "open")
    assert otrs_server.search(f"{where}&StateType=Open") == [ticket_id]
    otrs_server.set_state(ticket_id, "closed successful")
    assert otrs_server.search(f"{where}&StateType=Closed") == [ticket_id]
    # Queues, priorities, locks and types are looked up with their case.
    for query in ("Queues=raw", "Priorities=3%20Normal", "Locks=Unlock", "Types=unclassified"):
        assert otrs_server.search(f"{where}&{query}") == [], query


TITLES = ["{T} alpha beta", "{T} gamma", "{T} (paren) x+y", "{T} a_b c%d", "{T} AND OR"]
TITLE_SEARCHES = [
    # (Title criterion, which of TITLES it finds): Znuny's search expressions ({T}: a tag)
    ("{T} alpha beta", [0]),
    ("{T!u} ALPHA beta ", [0]),  # without case; trimmed
    ("{T} alpha", []),  # no implicit wildcards
    ("{T}*||*gamma", [0, 1, 2, 3, 4]),
    ("{T} alpha||{T} gamma", [1]),
    ("{T}*&&*beta", [0]),
    ("{T}* AND *beta", [0]),
    ("{T}*beta OR {T}*gamma", [0, 1]),
    ("{T}* && !*gamma*", [0, 2, 3, 4]),
    ("!{T} gamma", [0, 2, 3, 4]),
    ("{T}* && (*gamma*||*beta*)", [0, 1]),
    ("({T} gamma)", [1]),
    ('"{T} (paren) x+y"', [2]),  # quotes keep the specials
    ("{T} (paren) x+y", []),  # unquoted, they are operators
    (r"{T} \(paren\) x*", [2]),
    ("({T}*alpha*", []),  # unbalanced: nothing
    ("{T}*&&*a_b*", [3]),  # "_" is no wildcard
    ("{T}*c%d", [3]),
    ('"{T} AND OR"', [4]),
    ("{T} AND OR", []),
    ("{T}* *gamma", [1]),
    ("&&{T}*", [0, 1, 2, 3, 4]),
]


def test_title_criteria_are_search_expressions(otrs_server):
    tag = otrs_server.unique("qc").replace("-", "")
    ids = [otrs_server.create_ticket(t.format(T=tag))["TicketID"] for t in TITLES]
    for criterion, found in TITLE_SEARCHES:
        spelled = quote(criterion.replace("{T!u}", tag.upper()).replace("{T}", tag))
        hits = otrs_server.search(f"Title={spelled}&Queues=Raw")
        assert sorted(ids.index(h) for h in hits if h in ids) == found, criterion
    both = otrs_server.search(f"Title={tag}%20gamma&Title={tag}*beta&Queues=Raw")
    assert sorted(ids.index(h) for h in both) == [0, 1]  # several values: any of them


ARTICLE_SEARCHES = [
    # (query, found): the article fields are searched in Znuny's search index, whose words
    # are lower-cased, stripped of punctuation and stop words, short words and repeats.
    ("MIMEBase_Body=KEY", True),
    ("MIMEBase_Body=*KEY*", True),
    ("MIMEBase_Body=%25KEY%25", True),
    ("MIMEBase_Body=key", True),
    ("MIMEBase_Body=BR-", True),
    ("MIMEBase_Body=Access%20request%20KEY", True),
    ("MIMEBase_Body=request", True),
    ("MIMEBase_Body=operation%20add", True),  # "Operation:" loses its colon
    ("MIMEBase_Body=correlation%20KEY", False),  # the index keeps a repeated word once
    ("MIMEBase_Body=KEY%20nonsenseword", False),
    ("MIMEBase_Subject=Add", True),
    ("MIMEBase_Subject=jdoe%20crm", True),  # "on" is too short for the index
    ("MIMEBase_Subject=for", False),  # a stop word is not in the index
    ("MIMEBase_Subject=on", False),
    ("MIMEBase_Body=KEY&MIMEBase_Subject=zzzqqq", False),  # ContentSearch AND (default)
    ("MIMEBase_Body=KEY&ContentSearch=OR&MIMEBase_Subject=zzzqqq", True),
    ("MIMEBase_From=iga-bridge", True),  # From, To and Cc are kept whole, only lower-cased
    ("MIMEBase_To=raw", True),
    ("Fulltext=KEY", True),
    ("Fulltext=*KEY*", True),
    ("Fulltext=TITLEWORD", True),  # Fulltext also searches the title
]


def test_article_search_follows_the_search_index(otrs_server):
    key = "BR-" + otrs_server.unique("K").split("-")[1].upper()
    title_word = otrs_server.unique("tw").replace("-", "")
    answer = otrs_server.create_ticket(f"[{key}] {title_word}")
    ticket_id = answer["TicketID"]
    body = (
        f"Access request {key}\n\nOperation: Add access\n"
        f"Keep the correlation key {key} in the title"
    )
    # The ticket's first article has a generated subject; a second one carries the words.
    added = otrs_server.patch(
        ticket_id,
        {
            "Article": {
                "Subject": "Add access for jdoe on crm",
                "Body": body,
                "ContentType": "text/plain; charset=utf8",
                "From": "IGA-Bridge@example.com",
                "To": "Raw",
            }
        },
    )
    assert "ArticleID" in added
    for query, found in ARTICLE_SEARCHES:
        spelled = query.replace("KEY", key).replace("TITLEWORD", title_word)
        hits = otrs_server.search(f"TicketID={ticket_id}&{spelled}")
        assert hits == ([ticket_id] if found else []), query


CHANGE_FILTERS = [
    # The time filters a poll can use to ask what changed (inclusive, to the second).
    "TicketLastChangeTimeNewerDate",
    "TicketChangeTimeNewerDate",
]


@pytest.mark.parametrize("name", CHANGE_FILTERS)
def test_change_time_filters_find_what_an_agent_changed(otrs_server, name):
    tag = otrs_server.unique("chg")
    left, changed = (otrs_server.create_ticket(f"{tag} {n}")["TicketID"] for n in ("a", "b"))
    time.sleep(1.1)  # a later second than the creates
    otrs_server.set_state(changed, "closed successful")
    at = otrs_server.ticket(changed)["Changed"].replace(" ", "%20")
    query = f"Title={tag}*&{name}"
    assert otrs_server.search(f"{query}={at}") == [changed]
    assert sorted(otrs_server.search(f"{query}=2000-01-01%2000:00:00")) == sorted([left, changed])
    assert otrs_server.search(f"{query}=2999-01-01%2000:00:00") == []
    assert otrs_server.search(f"{query}=2026-12-01T00:00:00Z") == []  # not Znuny's format


# --- TicketCreate and TicketUpdate -----------------------------------------------------------


def test_a_body_perl_reads_as_a_form_is_gone_before_the_web_service_reads_it(otrs_server):
    login = f'{{"UserLogin":"{otrs_server.user}","Password":"{otrs_server.password}"}}'
    for content_type in (None, "application/x-www-form-urlencoded; charset=UTF-8"):
        headers = {"Content-Type": content_type} if content_type else {}
        response = otrs_server.call("POST", "/Session", data=login.encode(), headers=headers)
        assert (response.status_code, response.text) == (500, "Could not read input data")
        assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
    multipart = otrs_server.call("POST", "/Session", files={"UserLogin": (None, "x")})
    assert (multipart.status_code, multipart.text) == (500, "Could not read input data")
    for content_type in ("text/plain", "Application/X-WWW-Form-Urlencoded", "multipart/mixed"):
        response = otrs_server.call(
            "POST", "/Session", data=login.encode(), headers={"Content-Type": content_type}
        )
        assert "SessionID" in response.json(), content_type


def test_a_customer_address_at_a_reserved_invalid_domain_is_refused(otrs_server):
    body = {
        "SessionID": otrs_server.session_id,
        "Ticket": {
            "Title": otrs_server.unique("cu"),
            "Queue": "Raw",
            "State": "new",
            "Priority": "3 normal",
            "CustomerUser": "someone@example.invalid",
        },
        "Article": {"Subject": "s", "Body": "b", "ContentType": "text/plain; charset=utf8"},
    }
    assert otrs_server.call("POST", "/Ticket", json=body).json() == {
        "Error": {
            "ErrorCode": "TicketCreate.InvalidParameter",
            "ErrorMessage": "TicketCreate: Ticket->CustomerUser parameter is invalid!",
        }
    }


def test_a_pending_state_needs_a_pending_time_and_what_came_before_stays(otrs_server):
    ticket_id = otrs_server.create_ticket(otrs_server.unique("pend"))["TicketID"]
    answer = otrs_server.patch(
        ticket_id, {"Ticket": {"Title": "renamed", "State": "pending reminder"}}, ok=False
    )
    assert answer == {
        "Error": {
            "ErrorCode": "TicketUpdate.MissingParameter",
            "ErrorMessage": "Can't set a ticket on a pending state without pendig time!",
        }
    }
    ticket = otrs_server.ticket(ticket_id)
    assert (ticket["Title"], ticket["State"]) == ("renamed", "new")  # the title went through


# --- TicketHistory ---------------------------------------------------------------------------


def test_history_of_a_new_ticket(otrs_server):
    answer = otrs_server.create_ticket(otrs_server.unique("hist"))
    history = otrs_server.history(answer["TicketID"])
    assert entries(history) == created_lines(otrs_server, answer)
    assert [line["HistoryTypeID"] for line in history] == [1, 21, 1, 25, 23]
    assert [line["ArticleID"] for line in history] == [0, 0, answer["ArticleID"], 0, 0]
    assert [line["OwnerID"] for line in history] == [1, 1, 1, 1, 2]
    assert {line["TicketID"] for line in history} == {answer["TicketID"]}


def test_history_of_new_tickets_with_a_lock_an_owner_or_a_pending_time(otrs_server):
    def made(**ticket):
        answer = otrs_server.create_ticket(otrs_server.unique("new"), **ticket)
        lines = entries(otrs_server.history(answer["TicketID"]), resets=False)
        return lines[2:], otrs_server.ticket(answer["TicketID"])

    lines, ticket = made(Owner="root@localhost", State="closed successful")
    assert lines == [("NewTicket", "%%GenericInterface Create"), ("Lock", "%%lock")]
    assert (ticket["Lock"], ticket["Owner"]) == ("lock", "root@localhost")  # closed, yet locked
    lines, ticket = made(Lock="lock")
    assert lines == [
        ("Lock", "%%lock"),
        ("NewTicket", "%%GenericInterface Create"),
        ("OwnerUpdate", f"%%{otrs_server.user}%%2"),
    ]
    lines, ticket = made(State="pending reminder", PendingTime={"Diff": 30})
    pending_at = datetime.fromtimestamp(ticket["RealTillTimeNotUsed"], tz=UTC)
    assert lines == [
        ("SetPendingTime", f"%%{pending_at:%Y-%m-%d %H:%M}"),
        ("NewTicket", "%%GenericInterface Create"),
        ("OwnerUpdate", f"%%{otrs_server.user}%%2"),
    ]


def test_history_of_a_close_an_article_and_a_pending_time(otrs_server):
    answer = otrs_server.create_ticket(otrs_server.unique("hist"))
    ticket_id = answer["TicketID"]
    time.sleep(1.1)  # so the note moves the unlock timeout to a later second
    note = otrs_server.patch(ticket_id, {"Article": NOTE})
    otrs_server.patch(
        ticket_id, {"Ticket": {"State": "pending reminder", "PendingTime": {"Diff": 120}}}
    )
    until = otrs_server.ticket(ticket_id)["RealTillTimeNotUsed"]
    otrs_server.patch(ticket_id, {"Ticket": {"State": "closed successful"}})
    pending_at = datetime.fromtimestamp(until, tz=UTC).strftime("%Y-%m-%d %H:%M")
    history = otrs_server.history(ticket_id)
    assert entries(history)[5:] == [
        ("AddNote", "%%GenericInterface Note"),
        ("Misc", "Reset of unlock time."),
        ("SetPendingTime", f"%%{pending_at}"),
        ("StateUpdate", "%%new%%pending reminder%%"),
        ("StateUpdate", "%%pending reminder%%closed successful%%"),
        ("SetPendingTime", "%%00-00-00 00:00"),
    ]
    assert history[5]["ArticleID"] == int(note["ArticleID"])
    assert [line["HistoryTypeID"] for line in history[5:]] == [15, 25, 26, 27, 27, 26]


def test_history_of_an_update_in_the_order_znuny_applies_it(otrs_server):
    title = otrs_server.unique("hist")
    answer = otrs_server.create_ticket(title, Owner="root@localhost", State="open")
    ticket_id, number = answer["TicketID"], answer["TicketNumber"]
    otrs_server.patch(
        ticket_id,
        {
            "Ticket": {
                "Title": "renamed",
                "Queue": "Misc",
                "CustomerUser": "other@example.com",
                "Priority": "4 high",
                "Owner": otrs_server.user,
            },
            "Article": NOTE,
        },
    )
    history = [line for line in otrs_server.history(ticket_id) if line["HistoryType"] != "Misc"]
    assert entries(history) == [
        ("NewTicket", f"%%{number}%%Raw%%3 normal%%open%%{ticket_id}"),
        ("CustomerUpdate", "%%CustomerID=;CustomerUser=someone@example.com;"),
        ("NewTicket", "%%GenericInterface Create"),
        ("Lock", "%%lock"),  # an explicit owner locks the new ticket
        ("TitleUpdate", f"%%{title}%%renamed"),
        ("Move", "%%Misc%%4%%Raw%%2"),
        ("Unlock", "%%unlock"),  # moving a locked ticket unlocks it (ForceUnlockOnMove)
        ("CustomerUpdate", "%%CustomerID=;CustomerUser=other@example.com;"),
        ("PriorityUpdate", "%%3 normal%%3%%4 high%%4"),
        ("OwnerUpdate", f"%%{otrs_server.user}%%2"),
        ("AddNote", "%%GenericInterface Note"),
    ]
    assert [line["HistoryTypeID"] for line in history[3:7]] == [17, 50, 16, 18]
    assert history[6]["CreateBy"] == 1  # the unlock is the system's, not the agent's
    assert otrs_server.ticket(ticket_id)["Lock"] == "unlock"


def test_a_merge_moves_the_articles_and_writes_both_histories(otrs_server):
    tag = otrs_server.unique("merge")
    merged = otrs_server.create_ticket(f"{tag} merged")
    target = otrs_server.create_ticket(f"{tag} target")
    otrs_server.merge(merged["TicketID"], target["TicketID"])
    m_id, m_tn = merged["TicketID"], merged["TicketNumber"]
    t_id, t_tn = target["TicketID"], target["TicketNumber"]
    merge_line = ("Merged", f"%%{m_tn}%%{m_id}%%{t_tn}%%{t_id}")
    [created, customer, article, _, owner] = created_lines(otrs_server, merged)

    # Lines about an article go with the article; the merge note stays behind.
    assert entries(otrs_server.history(m_id), resets=False) == [
        created,
        customer,
        owner,
        ("AddNote", "%%Note"),
        merge_line,
        ("TicketLinkAdd", f"%%{t_tn}%%{t_id}%%{m_id}"),
        ("StateUpdate", "%%new%%merged%%"),
        ("SetPendingTime", "%%00-00-00 00:00"),
    ]
    target_history = entries(otrs_server.history(t_id), resets=False)
    assert target_history[0] == article  # ordered by time, then by line
    assert target_history[1:] == [
        *[line for line in created_lines(otrs_server, target) if line[0] != "Misc"],
        merge_line,
        ("TicketLinkAdd", f"%%{m_tn}%%{m_id}%%{t_id}"),
    ]

    ticket = otrs_server.ticket(m_id, AllArticles=1)
    assert (ticket["State"], ticket["StateType"], ticket["ChangeBy"]) == ("merged", "merged", 1)
    [note] = ticket["Article"]
    assert (note["Subject"], note["Body"]) == ("Ticket Merged", f"Merged Ticket {m_tn} to {t_tn}.")
    assert (note["ContentType"], note["SenderType"], note["From"], note["To"]) == (
        "text/plain; charset=ascii",
        "agent",
        "",
        "",
    )
    moved = otrs_server.ticket(t_id, AllArticles=1)["Article"]
    assert [a["Subject"] for a in moved] == [f"subject of {tag} merged", f"subject of {tag} target"]
    assert [a["ArticleNumber"] for a in moved] == [1, 2]
    assert {a["TicketID"] for a in moved} == {int(t_id)}


# --- sessions and the ticket view ------------------------------------------------------------


def test_session_data_holds_the_agents_preferences(otrs_server):
    data = otrs_server.get(f"/Session/{otrs_server.session_id}")["SessionData"]
    keys = {entry["Key"] for entry in data}
    assert {
        "ChangeTime",
        "CreateTime",
        "SessionSource",
        "UserLastLogin",
        "UserLastLoginTimestamp",
        "UserLoginFailed",
        "UserRefreshTime",
        "UserSessionStart",
        "ValidID",
    } <= keys
    assert "UserPw" not in keys


def test_an_agent_article_resets_the_unlock_timeout(otrs_server):
    ticket_id = otrs_server.create_ticket(otrs_server.unique("ut"))["TicketID"]
    created = otrs_server.ticket(ticket_id)["UnlockTimeout"]
    time.sleep(1.1)
    otrs_server.patch(ticket_id, {"Article": NOTE})
    assert otrs_server.ticket(ticket_id)["UnlockTimeout"] > created


def test_an_ended_session_fails_like_an_unknown_one(otrs_server):
    session_id = otrs_server.login()
    ticket_id = otrs_server.create_ticket(otrs_server.unique("sess"))["TicketID"]
    otrs_server.end_session(session_id)
    answer = otrs_server.call("GET", f"/Ticket/{ticket_id}?SessionID={session_id}").json()
    assert answer == {
        "Error": {
            "ErrorCode": "TicketGet.AuthFail",
            "ErrorMessage": "TicketGet: Authorization failing!",
        }
    }
    assert otrs_server.search(f"TicketID={ticket_id}") == [ticket_id]  # other sessions live on


# --- what the ticket conversation uses: TicketUpdate notes, newest articles first -------------


def test_a_note_with_an_empty_state_keeps_the_state_and_an_unknown_state_is_an_error_in_200(
    otrs_server,
):
    ticket_id = otrs_server.create_ticket(otrs_server.unique("note"))["TicketID"]
    article = {**NOTE, "CommunicationChannel": "Internal", "SenderType": "agent"}
    answer = otrs_server.patch(ticket_id, {"Ticket": {"State": ""}, "Article": article})
    assert set(answer) == {"ArticleID", "TicketID", "TicketNumber"}
    assert otrs_server.ticket(ticket_id)["State"] == "new"
    refused = otrs_server.call(
        "PATCH",
        f"/Ticket/{ticket_id}",
        json={"SessionID": otrs_server.session_id, "Ticket": {"State": "no such state"}},
    )
    assert refused.status_code == 200
    assert refused.json() == {
        "Error": {
            "ErrorCode": "TicketUpdate.InvalidParameter",
            "ErrorMessage": "TicketUpdate: Ticket->StateID or Ticket->State parameter is invalid!",
        }
    }
    assert otrs_server.patch(ticket_id, {"Ticket": {}}, ok=False) == {
        "Error": {
            "ErrorCode": "TicketUpdate.InvalidParameter",
            "ErrorMessage": "TicketUpdate: Ticket parameter is not valid!",
        }
    }


def test_articles_come_newest_first_limited_and_filtered_by_sender_type(otrs_server):
    ticket_id = otrs_server.create_ticket(otrs_server.unique("articles"))["TicketID"]
    for n in (1, 2, 3):
        article = {**NOTE, "Subject": f"note {n}", "CommunicationChannel": "Internal"}
        otrs_server.patch(ticket_id, {"Article": {**article, "SenderType": "agent"}})
    newest = otrs_server.ticket(
        ticket_id, AllArticles=1, ArticleOrder="DESC", ArticleLimit=2, ArticleSenderType="agent"
    )["Article"]
    assert [a["Subject"] for a in newest] == ["note 3", "note 2"]
    assert {a["SenderType"] for a in newest} == {"agent"}
    assert isinstance(newest[0]["ArticleID"], int)
    # No article of that sender type: the ticket has no Article key at all.
    none = otrs_server.ticket(ticket_id, AllArticles=1, ArticleSenderType="customer")
    assert "Article" not in none
