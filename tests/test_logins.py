"""Brute force on the logins: after AXES_FAILURE_LIMIT wrong passwords in a row, the same
username from the same address is refused, on the console's login and the admin's alike,
with a page that says when to try again; failures are logged without the password; an
admin can lift a lock with the axes commands."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from otrsbridge.logins import client_address
from tests import factories

pytestmark = pytest.mark.django_db

RIGHT = "pw-for-tests-only"
WRONG = "Wrong-Guess-0815"
LOGINS = {"console": "/login/", "admin": "/admin/login/"}


@pytest.fixture
def users(db):
    """alice and bob, both staff so that the admin login lets them in too."""
    alice = factories.user("alice", "admins", password=RIGHT)
    bob = factories.user("bob", "admins", password=RIGHT)
    return alice, bob


def attempt(client: Client, login: str, username: str, password: str, address="127.0.0.1"):
    return client.post(
        LOGINS[login], {"username": username, "password": password}, REMOTE_ADDR=address
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail(client: Client, login: str, username: str, times: int, address="127.0.0.1"):
    for _ in range(times):
        response = attempt(client, login, username, WRONG, address)
    return response


@pytest.mark.parametrize("login", sorted(LOGINS))
def test_after_the_limit_the_right_password_is_refused(client, users, login):
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == 5  # the documented default
    for _ in range(limit - 1):
        response = attempt(client, login, "alice", WRONG)
        assert response.status_code == 200  # the login form again, with its error
    assert attempt(client, login, "alice", WRONG).status_code == 429  # the one that locks
    refused = attempt(client, login, "alice", RIGHT)
    assert refused.status_code == 429 and not logged_in(client)
    html = refused.content.decode()
    assert "Too many failed logins" in html and "OTRS Bridge" in html
    assert re.search(r"Try again after \d\d:\d\d", html) and "in 15 minutes" in html
    assert refused["Retry-After"] == "900"
    assert "Traceback" not in html and WRONG not in html and RIGHT not in html


def test_fifty_wrong_passwords_then_the_right_one_does_not_log_in(client, users):
    fail(client, "console", "alice", 50)
    assert attempt(client, "console", "alice", RIGHT).status_code == 429
    assert not logged_in(client)


def test_failures_on_both_logins_count_together(client, users):
    fail(client, "console", "alice", 3)
    fail(client, "admin", "alice", 2)
    assert attempt(client, "admin", "alice", RIGHT).status_code == 429
    assert attempt(client, "console", "alice", RIGHT).status_code == 429


@pytest.mark.parametrize("login", sorted(LOGINS))
def test_a_lock_holds_one_username_at_one_address(users, login):
    attacker = Client()
    fail(attacker, login, "alice", 10)
    # Another user from the same address logs in.
    bob = Client()
    assert attempt(bob, login, "bob", RIGHT).status_code == 302 and logged_in(bob)
    # The same user from another address logs in: nobody can lock alice out from elsewhere.
    alice = Client()
    assert attempt(alice, login, "alice", RIGHT, address="10.1.2.3").status_code == 302
    assert logged_in(alice)


def test_fewer_failures_than_the_limit_are_forgotten_at_a_good_login(client, users):
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(3):  # three rounds of limit-1 typos, each ended by the right password
        fail(client, "console", "alice", limit - 1)
        assert attempt(client, "console", "alice", RIGHT).status_code == 302
        client.post(reverse("logout"))


def test_the_lock_ends_after_the_cool_off(client, users):
    fail(client, "console", "alice", settings.AXES_FAILURE_LIMIT)
    with time_machine.travel(timezone.now() + timedelta(minutes=14)):
        assert attempt(client, "console", "alice", RIGHT).status_code == 429
    # That try started the wait again: 14 minutes after it, still locked; 16, free.
    with time_machine.travel(timezone.now() + timedelta(minutes=28)):
        assert attempt(client, "console", "alice", RIGHT).status_code == 429
    with time_machine.travel(timezone.now() + timedelta(minutes=60)):
        assert attempt(client, "console", "alice", RIGHT).status_code == 302


def test_without_a_cool_off_the_page_says_to_ask_an_admin(client, users, settings):
    settings.AXES_COOLOFF_TIME = None
    response = fail(client, "console", "alice", settings.AXES_FAILURE_LIMIT)
    assert response.status_code == 429 and "Retry-After" not in response
    assert "until an admin lifts it" in response.content.decode()


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("axes_reset_username", ["alice"]),
        ("axes_reset_ip", ["127.0.0.1"]),
        ("axes_reset_ip_username", ["127.0.0.1", "alice"]),
        ("axes_reset", []),
    ],
)
def test_the_unlock_commands_lift_the_lock(client, users, command, args):
    fail(client, "console", "alice", settings.AXES_FAILURE_LIMIT)
    assert attempt(client, "console", "alice", RIGHT).status_code == 429
    call_command(command, *args, stdout=open("/dev/null", "w"))
    assert attempt(client, "console", "alice", RIGHT).status_code == 302 and logged_in(client)


def test_a_failed_login_is_one_log_line_with_username_and_address_never_the_password(
    client, users, caplog
):
    caplog.set_level(logging.DEBUG)
    attempt(client, "console", "alice", WRONG, address="192.0.2.7")
    lines = [r.getMessage() for r in caplog.records if r.name == "otrsbridge.logins"]
    assert lines == ["login failed: username 'alice' from 192.0.2.7 on /login/, failure 1 of 5"]
    fail(client, "admin", "alice", 4, address="192.0.2.7")
    last = [r.getMessage() for r in caplog.records if r.name == "otrsbridge.logins"][-1]
    assert last == (
        "login failed: username 'alice' from 192.0.2.7 on /admin/login/, failure 5 of 5, locked out"
    )
    assert all(WRONG not in r.getMessage() for r in caplog.records)
    # Nor is it kept in the attempts axes records.
    for row in AccessAttempt.objects.all():
        assert WRONG not in row.post_data and WRONG not in row.get_data


def test_a_username_cannot_forge_or_flood_a_log_line(client, users, caplog):
    caplog.set_level(logging.WARNING, logger="otrsbridge.logins")
    attempt(client, "console", "eve\nlogin ok: username 'root'" + "x" * 500, WRONG)
    [line] = [r.getMessage() for r in caplog.records if r.name == "otrsbridge.logins"]
    assert "\n" not in line and len(line) < 250 and "\\n" in line


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.1"),  # no trusted proxy: the header is ignored
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the left entry may be forged
        (2, "198.51.100.1, 203.0.113.9", "198.51.100.1"),
        (2, "203.0.113.9", "10.0.0.1"),  # fewer entries than proxies: not trusted
        (1, "not-an-address", "10.0.0.1"),
        (1, "", "10.0.0.1"),
    ],
)
def test_the_address_behind_trusted_proxies(settings, proxies, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().post(
        "/login/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded
    )
    assert client_address(request) == expected


def test_behind_a_proxy_the_lock_holds_the_client_address(client, users, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(
            "/login/",
            {"username": "alice", "password": WRONG},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR="203.0.113.9",
        )
    other = Client()
    response = other.post(
        "/login/",
        {"username": "alice", "password": RIGHT},
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_FORWARDED_FOR="198.51.100.4",
    )
    assert response.status_code == 302  # same proxy, another client: not locked


@pytest.mark.parametrize("login", ["console", "admin"])
def test_a_username_longer_than_axes_stores_is_counted_not_a_500(client, users, settings, login):
    typed = "m" * 1000
    answers = [
        attempt(client, login, typed, WRONG).status_code for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert answers == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    [stored] = AccessAttempt.objects.values_list("username", flat=True)
    assert stored == typed[:255]
    assert attempt(client, login, typed, WRONG).status_code == 429
