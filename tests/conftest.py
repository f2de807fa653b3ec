"""Shared fixtures: the OTRS simulator, a connection to it, an endpoint, people with roles."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import settings as hypothesis_settings

from tests import factories
from tests.otrs_servers import otrs_server, znuny  # noqa: F401  (re-exported fixtures)
from tests.simfixtures import sim  # noqa: F401  (re-exported fixture)

# CI runs the generated tests (fuzzing, schemathesis) on a fixed sequence of examples, so a
# run that fails fails again when repeated; locally every run draws new ones and keeps the
# failures it finds in .hypothesis/ to replay them.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# SQLite files of test databases this run destroyed; their -wal and -shm go at the end.
DESTROYED_SQLITE: list[Path] = []


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test databases, with every connection closed before they are dropped.

    Threads of the tests (live server, pollers, provisioning workers) open connections of
    their own. Left open, PostgreSQL refuses to drop the test database ("being accessed by
    other users") and SQLite leaves its -wal and -shm files behind.
    """
    yield
    from django.db import connections

    gc.collect()  # connections of finished threads close when their objects go
    with django_db_blocker.unblock():
        for alias in connections:
            db = connections[alias]
            if db.vendor == "postgresql":
                with db.cursor() as cursor:  # what a thread still alive holds open
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
            elif db.vendor == "sqlite" and not db.is_in_memory_db():
                DESTROYED_SQLITE.append(Path(db.settings_dict["NAME"]))
        connections.close_all()


def pytest_unconfigure(config):
    """After the test databases are gone: the SQLite write-ahead files they left."""
    for database in DESTROYED_SQLITE:
        if not database.exists():
            for suffix in ("-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)


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


@pytest.fixture
def scim(offline):
    """A SCIM client of the `crm` endpoint (whose connection is never called), and its token."""
    from django.test import Client

    from tickets import api

    client, token = api.api_client_create(name="entra", trusted=True)
    client.scim_endpoints.set([offline])
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}", raise_request_exception=False), token


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
