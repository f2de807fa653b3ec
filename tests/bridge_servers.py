"""`server`: the shared `otrs_server` (the simulator, then the real Znuny) with what the
correlation-key and change-polling tests add to it.

They need to lose TicketCreate's answer after it committed (the simulator's
drop_after_commit knob; a relay in front of the real Znuny), the BridgeKey dynamic field
(Znuny's console, as an admin creates it), and a few GenericInterface calls as the agent.
Tickets on the real server are shared with other tests: count only tickets that carry a
key of your own.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.otrs_servers import WEBSERVICE_PATH, ZNUNY_HOME, ZNUNY_URL, OtrsServer

# The ticket dynamic field that keeps the correlation key (README: Security).
KEY_FIELD = "BridgeKey"
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


class Server:
    """One ticket system as the bridge sees it: `base_url` is where the bridge points (on
    the real Znuny, a relay that can lose answers); `otrs` acts as the agent."""

    def __init__(self, otrs: OtrsServer, proxy: LossyProxy | None = None) -> None:
        self.otrs = otrs
        self.kind = otrs.name
        self.proxy = proxy
        self.base_url = proxy.url + WEBSERVICE_PATH if proxy else otrs.base_url
        self.user, self.password = otrs.user, otrs.password

    def create_ticket(self, title: str, body: str = "") -> int:
        return int(self.otrs.create_ticket(title, body=body)["TicketID"])

    def retitle(self, ticket_id: int, title: str) -> None:
        """What an agent does in the ticket: give it another title (a TicketUpdate)."""
        self.otrs.patch(ticket_id, {"Ticket": {"Title": title}})

    def ticket(self, ticket_id: int) -> dict:
        return self.otrs.ticket(ticket_id, DynamicFields=1, AllArticles=1)

    def tickets_with(self, key: str) -> list[int]:
        """The tickets whose title or an article holds `key` (Fulltext), oldest first."""
        return sorted(int(i) for i in self.otrs.get("/Ticket", Fulltext=key).get("TicketID", []))

    @contextmanager
    def losing_create_answers(self) -> Iterator[None]:
        """TicketCreate commits, and its answer never reaches the bridge."""
        if self.proxy is None:
            self.otrs.server.configure(drop_after_commit=1.0)  # type: ignore[attr-defined]
        else:
            self.proxy.drop_creates = True
        try:
            yield
        finally:
            if self.proxy is None:
                self.otrs.server.configure(drop_after_commit=0.0)  # type: ignore[attr-defined]
            else:
                self.proxy.drop_creates = False

    def ensure_key_field(self) -> None:
        """The BridgeKey ticket dynamic field exists (README: how an admin creates it)."""
        if self.proxy is None:
            # The simulator has no admin screen: its store learns the name, as Znuny's
            # database does on the import below.
            store = self.otrs.server.store  # type: ignore[attr-defined]
            with store.lock:
                store.dynamic_field_names = tuple(sorted({*store.dynamic_field_names, KEY_FIELD}))
            return
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as file:
            file.write(_KEY_FIELD_YAML)
        os.chmod(file.name, 0o644)  # the console runs as user otrs
        console = [f"{ZNUNY_HOME}/bin/otrs.Console.pl", "Admin::DynamicField::Import", file.name]
        as_otrs = (
            ["runuser", "-u", "otrs", "--"] if os.geteuid() == 0 else ["sudo", "-n", "-u", "otrs"]
        )
        try:
            done = subprocess.run(
                [*as_otrs, "env", f"HOME={ZNUNY_HOME}", *console],
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
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(answer.status_code)
                if "Content-Type" in answer.headers:
                    self.send_header("Content-Type", answer.headers["Content-Type"])
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


@pytest.fixture
def server(otrs_server: OtrsServer) -> Iterator[Server]:
    """`otrs_server` (the simulator, then the real Znuny) for these tests."""
    if otrs_server.name == "sim":
        yield Server(otrs_server)
        return
    proxy = LossyProxy(ZNUNY_URL)
    try:
        yield Server(otrs_server, proxy)
    finally:
        proxy.close()
