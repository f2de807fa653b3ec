"""`${...}` rendering on parsed JSON: values cannot break a body, inject a key or run code."""

from __future__ import annotations

import json

import pytest

from connections.templating import TemplateError, render, render_headers, render_url

HOSTILE = [
    'Robert"); DROP TABLE tickets;--',
    'quote " and backslash \\ and \\" together',
    "new\nline\r\nand\ttab",
    "${access_token}",
    '"}, "Injected": {"x": "',
    '"}}}}',
    "ünïcødé ☃ 𝄞 \u2028 \u0000",
    "x" * 10_000,
]
BODY = {
    "SessionID": "${access_token}",
    "Ticket": {"Title": "Access for ${user.name}", "CustomerUser": "${user.name}"},
    "Article": {"Body": "Name: ${user.name}\nEndpoint: ${endpoint}"},
}


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_stays_one_value(value):
    context = {"user": {"name": value}, "access_token": "tok", "endpoint": {"_": "crm"}}

    wire = json.dumps(render(BODY, context), ensure_ascii=False)
    parsed = json.loads(wire)

    assert parsed.keys() == BODY.keys() and parsed["Ticket"].keys() == BODY["Ticket"].keys()
    assert parsed["Ticket"]["CustomerUser"] == value
    assert parsed["Ticket"]["Title"] == f"Access for {value}"
    assert parsed["Article"]["Body"] == f"Name: {value}\nEndpoint: crm"
    assert parsed["SessionID"] == "tok"


def test_a_value_is_substituted_once_and_never_evaluated():
    context = {"a": "${b}", "b": "secret", "c": "${user.name.toUpperCase()}"}

    assert render("${a} and ${c}", context) == "${b} and ${user.name.toUpperCase()}"


def test_a_lone_variable_keeps_its_json_type():
    context = {"ents": ["a", "b"], "n": 7, "none": None, "flag": True, "obj": {"k": 1}}

    rendered = render(
        {"l": "${ents}", "n": "${n}", "z": "${none}", "f": "${flag}", "o": "${obj}"}, context
    )

    assert rendered == {"l": ["a", "b"], "n": 7, "z": None, "f": True, "o": {"k": 1}}


def test_inside_text_lists_read_as_json_and_null_as_empty():
    context = {"ents": ["a", "b"], "none": None, "n": 7, "flag": False}

    assert (
        render("E: ${ents}; N: ${none}; ${n}; ${flag}", context) == 'E: ["a", "b"]; N: ; 7; false'
    )


def test_a_dict_with_underscore_stands_for_its_own_value():
    context = {"endpoint": {"_": "crm", "queue": "Raw"}, "task": {"_": 42}}

    assert render("${endpoint}/${endpoint.queue}/${task}", context) == "crm/Raw/42"
    assert render("${task}", context) == 42


def test_response_paths_take_list_indexes():
    context = {"response": {"call1": {"message": {"result": [{"number": "RITM1"}]}}}}

    assert render("${response.call1.message.result[0].number}", context) == "RITM1"


def test_keys_are_never_rendered():
    assert render({"${user}": "${user}"}, {"user": "u"}) == {"${user}": "u"}


def test_a_missing_variable_is_named_with_where_it_is():
    with pytest.raises(TemplateError) as caught:
        render(
            BODY,
            {"user": {}, "access_token": "t", "endpoint": "e"},
            where="TicketCreate httpParams",
        )

    assert str(caught.value) == "TicketCreate httpParams.Ticket.Title: ${user.name} has no value"


def test_a_fallback_fills_missing_variables_for_previews():
    assert (
        render("id ${response.c.message.id}", {}, fallback=lambda name: f"<{name}>")
        == "id <response.c.message.id>"
    )


def test_url_values_are_percent_encoded():
    context = {"q": "a b&SessionID=stolen/../?#", "ticketIDs": "1,2,3", "access_token": "s+/="}

    url = render_url(
        "https://otrs/Ticket/${ticketIDs}?Title=*${q}*&SessionID=${access_token}", context
    )

    assert url == (
        "https://otrs/Ticket/1%2C2%2C3?Title=*a%20b%26SessionID%3Dstolen%2F..%2F%3F%23*&SessionID=s%2B%2F%3D"
    )


def test_url_values_are_text_even_alone():
    assert render_url("${n}", {"n": 5}) == "5"


def test_header_values_lose_cr_and_lf():
    headers = render_headers(
        {"X-Note": "${v}", "Authorization": "Bearer ${t}"}, {"v": "a\r\nX-Evil: 1", "t": "k"}
    )

    assert headers == {"X-Note": "aX-Evil: 1", "Authorization": "Bearer k"}


def test_a_default_stands_in_for_a_missing_or_empty_variable():
    with_queue = {"endpoint": {"_": "crm", "queue": "Misc"}, "task": {"_": "42"}}
    without = {"endpoint": {"_": "crm"}, "task": {"_": "42"}}
    empty = {"endpoint": {"_": "crm", "queue": ""}, "task": {"_": "42"}}
    body = {"Queue": "${endpoint.queue|Raw}", "Title": "${task} in ${endpoint.queue|the Raw queue}"}

    assert render(body, with_queue) == {"Queue": "Misc", "Title": "42 in Misc"}
    assert render(body, without) == {"Queue": "Raw", "Title": "42 in the Raw queue"}
    assert render(body, empty)["Queue"] == "Raw"
    # In a URL the default is encoded like any value.
    assert render_url("https://x/${endpoint.queue|a b&c}", without) == "https://x/a%20b%26c"
    # Without a default a missing variable is still an error that names it.
    with pytest.raises(TemplateError, match=r"\$\{endpoint.queue\} has no value"):
        render("${endpoint.queue}", without)
