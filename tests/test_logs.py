"""The console's log: an answer the console gives on purpose is one line, a fault is a
traceback, and nothing is printed twice."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from django.urls import reverse

from otrsbridge.log_filters import AnswersWithoutTraceback
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def console_log():
    """What the console's own log handler (settings.LOGGING) prints, as text."""
    handlers = [
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, AnswersWithoutTraceback) for f in h.filters)
    ]
    assert len(handlers) == 1, logging.getLogger().handlers
    stream = io.StringIO()
    previous = handlers[0].setStream(stream)
    try:
        yield stream
    finally:
        handlers[0].setStream(previous)


def test_a_refused_page_is_logged_as_one_line(client, console_log):
    client.force_login(factories.user("alice", "requesters"))
    assert client.get(reverse("tickets:board")).status_code == 403
    assert client.get("/no-such-page/").status_code == 404
    lines = console_log.getvalue().splitlines()
    assert [line for line in lines if "Forbidden" in line] == [
        next(line for line in lines if "Forbidden (Permission denied): /board/" in line)
    ]
    assert len([line for line in lines if "Not Found: /no-such-page/" in line]) == 1
    assert "Traceback" not in console_log.getvalue()


def test_django_records_reach_the_log_once():
    """Django's own console handler (DEBUG only) is not there to print them a second time."""
    assert logging.getLogger("django").handlers == []
    assert logging.getLogger("django").propagate


def test_a_fault_keeps_its_traceback(console_log):
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "boom", (), None)
    try:
        raise RuntimeError("our bug")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    record.status_code = 500
    logging.getLogger("django.request").handle(record)
    assert "Traceback" in console_log.getvalue() and "our bug" in console_log.getvalue()
