"""The servers a `znuny` test runs against: the simulator and the real Znuny 6.5.

`server` is a fixture parametrised over both, so one test checks the bridge (and the
simulator's claims) against the real thing. The real Znuny is the one
../shared/znuny/setup.sh serves at ZNUNY_URL (default http://127.0.0.1:8180); where none
answers, its cases are skipped with the reason. Tests use only the GenericInterface (and
the Znuny console to create a dynamic field), never a server's own control endpoints, so
each step means the same on both. Tickets on the real server are shared with other
tests: count only tickets that carry a key of your own.
"""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.simfixtures import PASSWORD as SIM_PASSWORD
from tests.simfixtures import USER as SIM_USER

ZNUNY_URL = os.environ.get("ZNUNY_URL", "http://127.0.0.1:8180").rstrip("/")
WEBSERVICE = "/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
ZNUNY_USER, ZNUNY_PASSWORD = "bridge", "bridge-pass"
# The ticket dynamic field that keeps the correlation key (README: Security).
KEY_FIELD = "BridgeKey"
_CONSOLE = [
    "runuser",
    "-u",
    "otrs",
    "--",
    "env",
    "HOME=/opt/znuny",
    "/opt/znuny/bin/otrs.Console.pl",
]
_KEY_FIELD_YAML = f"""---
DynamicFields:
  {KEY_FIELD}:
    Name: {KEY_FIELD}
    Label: {KEY_FIELD}
    FieldType: Text
    ObjectType: Ticket
    Config:
      DefaultValue: ''
"""


@functools.cache
def znuny_missing() -> str:
    """Why the real Znuny cannot be used here; "" when it answers and lets the agent in."""
    try:
        answer = requests.post(
            ZNUNY_URL + WEBSERVICE + "/Session",
            json={"UserLogin": ZNUNY_USER, "Password": ZNUNY_PASSWORD},
            timeout=10,
        )
        session = answer.json().get("SessionID")
    except (requests.RequestException, ValueError) as exc:
        return (
            f"no Znuny answers at {ZNUNY_URL} ({type(exc).__name__}); "
            "run bash ../shared/znuny/setup.sh or set ZNUNY_URL"
        )
    if not session:
        return f"Znuny at {ZNUNY_URL} refused the login of {ZNUNY_USER}: {answer.text[:200]}"
    return ""


@dataclass
class Server:
    """One ticket system as the bridge sees it: its REST root, the agent, and GI calls."""

    kind: str  # "simulator" or "znuny"
    base_url: str  # the REST root the bridge is pointed at
    user: str
    password: str
    sim: Any = None  # the simulator, for its knobs
    proxy: LossyProxy | None = None
    _session: str = field(default="", repr=False)

    def call(self, method: str, path: str, **data: Any) -> dict:
        """One GI call as the agent; GET parameters go into the query string."""
        if not self._session:
            self._session = requests.post(
                self.base_url + "/Session",
                json={"UserLogin": self.user, "Password": self.password},
                timeout=10,
            ).json()["SessionID"]
        data["SessionID"] = self._session
        if method == "GET":
            answer = requests.get(self.base_url + path, params=data, timeout=30)
        else:
            answer = requests.request(method, self.base_url + path, json=data, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def create_ticket(self, title: str, body: str = "created by the test") -> int:
        created = self.call(
            "POST",
            "/Ticket",
            Ticket={
                "Title": title,
                "Queue": "Raw",
                "State": "new",
                "Priority": "3 normal",
                "CustomerUser": "someone@example.com",
            },
            Article={
                "CommunicationChannel": "Internal",
                "Subject": "test",
                "Body": body,
                "ContentType": "text/plain; charset=utf8",
            },
        )
        return int(created["TicketID"])

    def update(self, ticket_id: int, **ticket: Any) -> None:
        """What an agent does in the ticket: retitle it, close it (a TicketUpdate)."""
        answer = self.call("PATCH", f"/Ticket/{ticket_id}", Ticket=ticket)
        assert "Error" not in answer, answer

    def ticket(self, ticket_id: int) -> dict:
        answer = self.call("GET", f"/Ticket/{ticket_id}", DynamicFields=1, AllArticles=1)
        return answer["Ticket"][0]

    def tickets_with(self, key: str) -> list[int]:
        """The tickets whose title or an article holds `key` (Fulltext), oldest first."""
        found = self.call("GET", "/Ticket", Fulltext=key).get("TicketID", [])
        return sorted(int(i) for i in found)

    @contextmanager
    def losing_create_answers(self) -> Iterator[None]:
        """TicketCreate commits, and its answer never reaches the bridge."""
        if self.sim is not None:
            self.sim.configure(drop_after_commit=1.0)
        else:
            assert self.proxy is not None
            self.proxy.drop_creates = True
        try:
            yield
        finally:
            if self.sim is not None:
                self.sim.configure(drop_after_commit=0.0)
            else:
                assert self.proxy is not None
                self.proxy.drop_creates = False

    def ensure_key_field(self) -> None:
        """The BridgeKey ticket dynamic field exists (README: how an admin creates it)."""
        if self.kind == "simulator":
            return  # the fixture's simulator has it
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as file:
            file.write(_KEY_FIELD_YAML)
        os.chmod(file.name, 0o644)  # the console runs as user otrs
        try:
            done = subprocess.run(
                [*_CONSOLE, "Admin::DynamicField::Import", file.name],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot run the Znuny console to create {KEY_FIELD}: {exc}")
        finally:
            os.unlink(file.name)
        if done.returncode != 0:
            pytest.skip(f"the Znuny console did not create {KEY_FIELD}: {done.stdout[-300:]}")


class LossyProxy:
    """An HTTP relay in front of the real Znuny that can lose TicketCreate's answer: the
    request goes through and commits, then the bridge's connection is closed unanswered
    (what the simulator's drop_after_commit knob does)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.drop_creates = False
        self.dropped = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=60
                )
                if proxy.drop_creates and self.command == "POST" and self.path.endswith("/Ticket"):
                    proxy.dropped += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(answer.status_code)
                for name in ("Content-Type",):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["simulator", pytest.param("znuny", marks=pytest.mark.znuny)])
def server(request, sim_factory) -> Iterator[Server]:
    """The simulator, then the real Znuny (skipped, with the reason, where none answers)."""
    if request.param == "simulator":
        sim = sim_factory(dynamic_fields=(KEY_FIELD,))
        yield Server("simulator", sim.base_url, SIM_USER, SIM_PASSWORD, sim=sim)
        return
    missing = znuny_missing()
    if missing:
        pytest.skip(missing)
    proxy = LossyProxy(ZNUNY_URL)
    try:
        yield Server("znuny", proxy.url + WEBSERVICE, ZNUNY_USER, ZNUNY_PASSWORD, proxy=proxy)
    finally:
        proxy.close()
