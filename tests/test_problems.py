"""The one problem collector that spec, packages and the API share."""

from __future__ import annotations

from connections.problems import Problems


def test_no_problems_is_false_and_empty():
    problems = Problems()

    assert not problems
    assert len(problems) == 0
    assert problems.as_lines() == []
    assert problems.as_fields() == {}


def test_problems_keep_their_order_as_lines_and_by_place():
    problems = Problems()
    problems.add("call[0].url", "is required")
    problems.add("", "must be a JSON object")
    problems.add("call[0].url", "must be a string")

    assert problems and len(problems) == 3
    assert problems.as_lines() == [
        "call[0].url: is required",
        "must be a JSON object",
        "call[0].url: must be a string",
    ]
    assert problems.as_lines("CreateTicketJSON") == [
        "CreateTicketJSON: call[0].url: is required",
        "CreateTicketJSON: must be a JSON object",
        "CreateTicketJSON: call[0].url: must be a string",
    ]
    assert problems.as_fields() == {
        "call[0].url": ["is required", "must be a string"],
        "": ["must be a JSON object"],
    }
