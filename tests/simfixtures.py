"""Pytest fixtures for the OTRS simulator (plain pytest, no Django needed).

Use from any test module::

    from tests.simfixtures import sim  # noqa: F401  (pytest finds the fixture by name)

    def test_something(sim):
        requests.post(sim.base_url + "/Session", json=...)

``sim`` is a fresh simulator on a free port with default knobs (seeded, so fault
draws are reproducible); change knobs with ``sim.configure(fail_rate=1)``.
``sim_factory`` starts extra simulators with a custom SimConfig.
"""

from __future__ import annotations

import pytest
import requests

from otrs_sim import SimConfig, start_server

USER = "bridge"
PASSWORD = "bridge-demo-password"


@pytest.fixture
def sim():
    server = start_server(port=0, config=SimConfig(seed=20261126))
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture
def sim_factory():
    started = []

    def make(state_file=None, **config):
        config.setdefault("seed", 20261126)
        server = start_server(port=0, config=SimConfig(**config), state_file=state_file)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.shutdown()


def login(sim) -> str:
    """Create a session for the demo agent and return its SessionID."""
    response = requests.post(
        sim.base_url + "/Session", json={"UserLogin": USER, "Password": PASSWORD}, timeout=5
    )
    return response.json()["SessionID"]


def ticket_body(session_id: str, title: str = "t1", **ticket) -> dict:
    """The TicketCreate body used for the Znuny 6.5.10 recordings (reference §5.2)."""
    fields = {
        "Title": title,
        "Queue": "Raw",
        "State": "new",
        "Priority": "3 normal",
        "CustomerUser": "someone@example.com",
    }
    fields.update(ticket)
    return {
        "SessionID": session_id,
        "Ticket": fields,
        "Article": {
            "CommunicationChannel": "Internal",
            "Subject": "s",
            "Body": "b",
            "ContentType": "text/plain; charset=utf8",
        },
    }


def create_ticket(sim, session_id: str, title: str = "t1", **ticket) -> dict:
    response = requests.post(
        sim.base_url + "/Ticket", json=ticket_body(session_id, title, **ticket), timeout=5
    )
    return response.json()
