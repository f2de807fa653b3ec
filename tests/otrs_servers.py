"""The two OTRS servers a contract test runs against: the simulator and a real Znuny 6.5.

    def test_something(otrs_server):         # runs twice: [sim] and [znuny]
        ticket = otrs_server.create_ticket(otrs_server.unique("title"))
        otrs_server.set_state(ticket["TicketID"], "closed successful")   # as an agent

`otrs_server` gives both, so one test body checks the simulator against the real thing;
`znuny` gives only the real one. Both have the same methods: what a test needs to play the
OTRS agent (set a state, merge two tickets) and to break a session the bridge holds.

The real Znuny is the one `bash ../shared/znuny/setup.sh` serves (ZNUNY_URL, default
http://127.0.0.1:8180). It is shared by everything on the machine: tests find their
tickets by their own unique titles and keys, never by "all tickets", and delete nothing.
When it does not answer, its tests are skipped with the reason; with ZNUNY_REQUIRED=1 (CI)
they fail instead, so CI can never pass without having run them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any

import pytest
import requests

from otrs_sim import SimConfig, start_server

ZNUNY_URL = os.environ.get("ZNUNY_URL", "http://127.0.0.1:8180").rstrip("/")
ZNUNY_REQUIRED = os.environ.get("ZNUNY_REQUIRED", "") not in ("", "0")
# Znuny's own console (merging, ending a session) runs on this machine, as setup.sh installed it.
ZNUNY_HOME = os.environ.get("ZNUNY_HOME", "/opt/znuny")
WEBSERVICE_PATH = "/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
# The accounts setup.sh creates (shared/znuny/README.md).
ZNUNY_AGENT = ("bridge", "bridge-pass")
ZNUNY_ADMIN = ("root@localhost", "root-pass")
SIM_AGENT = ("bridge", "bridge-demo-password")
TIMEOUT = 30

# Znuny's TicketMerge and RemoveSessionID, the same calls its agent interface makes.
_PERL_MERGE = (
    "my $ok = $Kernel::OM->Get('Kernel::System::Ticket')->TicketMerge("
    "MergeTicketID => $ARGV[0], MainTicketID => $ARGV[1], UserID => 1); exit($ok ? 0 : 1);"
)
_PERL_END_SESSION = (
    "my $ok = $Kernel::OM->Get('Kernel::System::AuthSession')->RemoveSessionID("
    "SessionID => $ARGV[0]); exit($ok ? 0 : 1);"
)


def _unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a missing Znuny must never make CI pass."""
    if ZNUNY_REQUIRED:
        pytest.fail(f"ZNUNY_REQUIRED is set but {reason}", pytrace=False)
    pytest.skip(f"{reason}; run `bash ../shared/znuny/setup.sh` from the project root")


class OtrsServer:
    """One GenericTicketConnectorREST web service, driven over HTTP as the bridge's agent."""

    name = ""

    def __init__(self, base_url: str, user: str, password: str) -> None:
        self.base_url = base_url
        self.user = user
        self.password = password
        self._session_id = ""

    def __repr__(self) -> str:
        return f"<{self.name} {self.base_url}>"

    def unique(self, label: str = "t") -> str:
        """A text no other test (or other run on the shared Znuny) has used."""
        return f"{label}-{uuid.uuid4().hex[:12]}"

    def login(self, user: str | None = None, password: str | None = None) -> str:
        response = requests.post(
            self.base_url + "/Session",
            json={"UserLogin": user or self.user, "Password": password or self.password},
            timeout=TIMEOUT,
        )
        body = response.json()
        assert "SessionID" in body, f"{self.name}: login refused: {body}"
        return body["SessionID"]

    @property
    def session_id(self) -> str:
        """The test's own session (not the bridge's), made on first use."""
        if not self._session_id:
            self._session_id = self.login()
        return self._session_id

    def call(self, method: str, route: str, **kw: Any) -> requests.Response:
        """One raw request to the web service (route such as "/Ticket/5")."""
        return requests.request(method, self.base_url + route, timeout=TIMEOUT, **kw)

    def get(self, route: str, query: str = "", **params: Any) -> dict:
        """A GET with this test's SessionID; `query` is appended raw (already encoded)."""
        url = f"{route}?SessionID={self.session_id}" + (f"&{query}" if query else "")
        return self.call("GET", url, params=params or None).json()

    def patch(self, ticket_id: Any, body: dict, *, ok: bool = True) -> dict:
        """TicketUpdate with this test's session; asserts it worked unless `ok` is False."""
        answer = self.call(
            "PATCH", f"/Ticket/{ticket_id}", json={"SessionID": self.session_id, **body}
        ).json()
        assert not ok or "Error" not in answer, f"{self.name}: TicketUpdate failed: {answer}"
        return answer

    def create_ticket(self, title: str, **ticket: Any) -> dict:
        """A ticket as the bridge's agent creates one; the answer of TicketCreate."""
        body = {
            "SessionID": self.session_id,
            "Ticket": {
                "Title": title,
                "Queue": "Raw",
                "State": "new",
                "Priority": "3 normal",
                "CustomerUser": "someone@example.com",
                **ticket,
            },
            "Article": {
                "CommunicationChannel": "Internal",
                "Subject": f"subject of {title}",
                "Body": f"body of {title}",
                "ContentType": "text/plain; charset=utf8",
            },
        }
        answer = self.call("POST", "/Ticket", json=body).json()
        assert "TicketID" in answer, f"{self.name}: TicketCreate failed: {answer}"
        return answer

    def ticket(self, ticket_id: Any, **params: Any) -> dict:
        return self.get(f"/Ticket/{ticket_id}", **params)["Ticket"][0]

    def history(self, ticket_id: Any) -> list[dict]:
        return self.get(f"/TicketHistory/{ticket_id}")["TicketHistory"][0]["History"]

    def search(self, query: str) -> list[str]:
        """TicketSearch with a raw query string; the ids found (empty for `{}`)."""
        return self.get("/Ticket", query).get("TicketID", [])

    # --- what an agent or an admin does in OTRS ----------------------------------------------

    def set_state(self, ticket_id: Any, state: str) -> None:
        raise NotImplementedError

    def merge(self, ticket_id: Any, into: Any) -> None:
        raise NotImplementedError

    def end_session(self, session_id: str) -> None:
        raise NotImplementedError


class SimOtrs(OtrsServer):
    """The simulator, started for one test; the agent acts through its /_sim/ controls."""

    name = "sim"

    def __init__(self) -> None:
        self.server = start_server(port=0, config=SimConfig(seed=20261126))
        super().__init__(self.server.base_url, *SIM_AGENT)

    def _control(self, path: str, body: dict) -> None:
        response = requests.post(f"{self.server.url}/_sim/{path}", json=body, timeout=TIMEOUT)
        assert response.status_code == 200, response.text

    def set_state(self, ticket_id: Any, state: str) -> None:
        self._control(f"tickets/{ticket_id}/state", {"state": state})

    def merge(self, ticket_id: Any, into: Any) -> None:
        self._control(f"tickets/{ticket_id}/merge", {"into": int(into)})

    def end_session(self, session_id: str) -> None:
        self._control("sessions/expire", {"SessionID": session_id})


class Znuny(OtrsServer):
    """The shared real Znuny: agents act as root@localhost over REST, admins by its console."""

    name = "znuny"

    def __init__(self, url: str = ZNUNY_URL) -> None:
        super().__init__(url + WEBSERVICE_PATH, *ZNUNY_AGENT)
        self._admin_session = ""

    def set_state(self, ticket_id: Any, state: str) -> None:
        """An agent (root@localhost) sets the state, as from the ticket's zoom screen."""
        if not self._admin_session:
            self._admin_session = self.login(*ZNUNY_ADMIN)
        ticket: dict[str, Any] = {"State": state}
        if state.startswith("pending"):
            ticket["PendingTime"] = {"Diff": 24 * 60}  # Znuny refuses a pending state without
        answer = self.call(
            "PATCH",
            f"/Ticket/{ticket_id}",
            json={"SessionID": self._admin_session, "Ticket": ticket},
        ).json()
        assert "Error" not in answer, f"znuny: the agent could not set {state!r}: {answer}"

    def merge(self, ticket_id: Any, into: Any) -> None:
        """Merge `ticket_id` into `into` with Znuny's own TicketMerge (the agent's Merge)."""
        self._perl(_PERL_MERGE, str(ticket_id), str(into))

    def end_session(self, session_id: str) -> None:
        """Remove one session from Znuny's session store, as an expired one is removed."""
        self._perl(_PERL_END_SESSION, session_id)

    def _perl(self, code: str, *args: str) -> None:
        """Run `code` inside Znuny (its object manager), as its console user."""
        script = (
            f"use lib '{ZNUNY_HOME}'; use lib '{ZNUNY_HOME}/Kernel/cpan-lib'; "
            f"use lib '{ZNUNY_HOME}/Custom'; use Kernel::System::ObjectManager; "
            "local $Kernel::OM = Kernel::System::ObjectManager->new("
            "'Kernel::System::Log' => {LogPrefix => 'otrs-bridge-tests'}); " + code
        )
        as_otrs = (
            ["runuser", "-u", "otrs", "--"] if os.geteuid() == 0 else ["sudo", "-n", "-u", "otrs"]
        )
        command = [*as_otrs, "env", f"HOME={ZNUNY_HOME}", "perl", "-e", script, *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _unavailable(f"Znuny's console cannot run here ({exc})")
            return
        if done.returncode != 0:
            if not os.path.isdir(ZNUNY_HOME):
                _unavailable(f"Znuny's console is not on this machine ({ZNUNY_HOME})")
            raise AssertionError(f"znuny: {code.split('(')[0]} failed: {done.stderr.strip()}")


def znuny_answer(url: str = ZNUNY_URL) -> str:
    """Why the Znuny at `url` cannot be used, or "" when its bridge agent can log in."""
    try:
        body = requests.post(
            url + WEBSERVICE_PATH + "/Session",
            json={"UserLogin": ZNUNY_AGENT[0], "Password": ZNUNY_AGENT[1]},
            timeout=10,
        ).json()
    except (requests.RequestException, ValueError) as exc:
        return f"no Znuny answers at {url} ({type(exc).__name__})"
    if "SessionID" not in body:
        return f"the Znuny at {url} refused the agent {ZNUNY_AGENT[0]}: {body}"
    return ""


_verdict: list[str] = []


@pytest.fixture
def znuny() -> Znuny:
    """The real Znuny; skipped (failed with ZNUNY_REQUIRED=1) when it does not answer."""
    if not _verdict:
        _verdict.append(znuny_answer())
    if _verdict[0]:
        _unavailable(_verdict[0])
    return Znuny()


@pytest.fixture(params=["sim", pytest.param("znuny", marks=pytest.mark.znuny)])
def otrs_server(request):
    """The simulator, then the real Znuny: the same test body runs against both."""
    if request.param == "znuny":
        yield request.getfixturevalue("znuny")
        return
    server = SimOtrs()
    try:
        yield server
    finally:
        server.server.shutdown()
