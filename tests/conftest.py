"""Shared fixtures: the OTRS simulator, a connection to it, an endpoint, people with roles."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests import factories
from tests.otrs_servers import otrs_server, znuny  # noqa: F401  (re-exported fixtures)
from tests.simfixtures import sim  # noqa: F401  (re-exported fixture)


@pytest.fixture
def connection(sim, db):  # noqa: F811
    """The shipped OTRS package imported against a running simulator."""
    return factories.otrs_connection(sim)


@pytest.fixture
def crm(connection):
    return factories.endpoint(connection, name="crm")


@pytest.fixture
def people(db):
    return SimpleNamespace(
        alice=factories.user("alice", "requesters"),
        bob=factories.user("bob", "approvers", "requesters"),
        olga=factories.user("olga", "operators"),
        carol=factories.user("carol", "approvers"),
    )


@pytest.fixture
def q_sync(monkeypatch):
    """Run django-q2 tasks inline (django-q2 reads Q_CLUSTER once, at import)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def offline(db):
    """An endpoint on a connection that is never called (console tests without OTRS)."""
    from connections.models import Connection

    return factories.endpoint(Connection.objects.create(name="offline"), name="crm")


def pytest_collection_modifyitems(items):
    """A test that uses the real Znuny carries the `znuny` marker, however it asked for it."""
    for item in items:
        if "znuny" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("znuny"):
            item.add_marker(pytest.mark.znuny)


def pytest_addoption(parser):
    parser.addoption(
        "--screenshots",
        action="store_true",
        default=False,
        help="save console screenshots to docs/screenshots/ (make screenshots)",
    )
