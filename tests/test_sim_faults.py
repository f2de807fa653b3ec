"""Fault knobs, webhooks and concurrency of the simulator, over real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.simfixtures import create_ticket, login, sim, sim_factory, ticket_body

__all__ = ["sim", "sim_factory"]


def raw_get(sim, route: str) -> bytes:
    """One raw GET; returns whatever bytes arrive before the server closes (b"" on RST)."""
    path = sim.base_url[len(sim.url) :] + route
    with socket.create_connection((sim.host, sim.port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: sim\r\n\r\n".encode())
        chunks = []
        try:
            while data := conn.recv(65536):
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


# ---------------------------------------------------------------- fail_rate / html_errors


def test_fail_rate_one_gives_500_fault_or_reset(sim):
    sid = login(sim)
    sim.configure(fail_rate=1.0)
    faults, resets = 0, 0
    for _ in range(16):
        try:
            response = requests.post(sim.base_url + "/Ticket", json=ticket_body(sid), timeout=5)
        except requests.ConnectionError:
            resets += 1
            continue
        assert response.status_code == 500
        assert response.headers["Content-Type"] == "text/plain; charset=UTF-8"
        assert response.json() == {
            "faultcode": "Server",
            "faultstring": "Ticket could not be created, please contact the system administrator",
        }
        faults += 1
    assert faults > 0 and resets > 0  # seeded: both halves show up
    stats = sim.stats()
    assert (stats["faults"]["http500"], stats["faults"]["reset"]) == (faults, resets)
    assert stats["calls"]["TicketCreate"] == 16  # counted although they failed
    assert stats["tickets"] == 0  # failed before doing anything
    # Control endpoints and pages are never broken by the knobs.
    assert requests.get(sim.url + "/_sim/stats", timeout=5).status_code == 200
    assert requests.get(sim.url + "/", timeout=5).status_code == 200


def test_reset_sends_no_bytes(sim):
    sim.configure(fail_rate=1.0, seed=1)
    outputs = [raw_get(sim, "/Ticket") for _ in range(12)]
    assert b"" in outputs  # a reset: not a single byte of HTTP
    assert any(o.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") for o in outputs)
    assert sim.stats()["faults"]["reset"] == outputs.count(b"")


def test_html_errors_with_and_without_status_line(sim):
    sim.configure(fail_rate=1.0, html_errors=True)
    outputs = [raw_get(sim, "/Ticket") for _ in range(12)]
    raw_pages = [o for o in outputs if o.startswith(b"<!DOCTYPE HTML PUBLIC")]
    http_pages = [o for o in outputs if o.startswith(b"HTTP/1.1 500 ")]
    assert raw_pages and http_pages and len(raw_pages) + len(http_pages) == 12
    assert raw_pages[0].startswith(b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN">')
    assert 550 < len(raw_pages[0]) < 700 and b"HTTP/" not in raw_pages[0]
    head = http_pages[0].split(b"\r\n\r\n")[0].decode()
    assert "Content-Type: text/html" in head
    stats = sim.stats()["faults"]
    assert (stats["raw_html"], stats["html500"]) == (len(raw_pages), len(http_pages))
    # requests cannot parse the headerless page: a ConnectionError (BadStatusLine).
    errors = []
    for _ in range(12):
        try:
            requests.get(sim.base_url + "/Ticket", timeout=5)
        except requests.ConnectionError as exc:
            errors.append(str(exc))
    assert any("BadStatusLine" in e for e in errors)


def test_drop_after_commit_on_create_and_update(sim):
    sid = login(sim)
    sim.configure(drop_after_commit=1.0)
    with pytest.raises(requests.ConnectionError):
        requests.post(sim.base_url + "/Ticket", json=ticket_body(sid, "token-4711"), timeout=5)
    stats = requests.get(sim.url + "/_sim/stats", timeout=5).json()
    assert stats["tickets"] == 1 and stats["faults"]["dropped_after_commit"] == 1
    # The ticket exists: a client reconciles by searching for its token.
    found = requests.get(
        sim.base_url + "/Ticket", params={"SessionID": sid, "Title": "*4711*"}, timeout=5
    ).json()
    assert found == {"TicketID": ["2"]}
    with pytest.raises(requests.ConnectionError):
        requests.patch(
            sim.base_url + "/Ticket/2",
            json={"SessionID": sid, "Ticket": {"State": "closed successful"}},
            timeout=5,
        )
    assert sim.stats()["tickets_by_state"] == {"closed successful": 1}
    # Errors commit nothing, so they are answered normally.
    error = requests.patch(
        sim.base_url + "/Ticket/2", json={"SessionID": sid, "Ticket": {"State": "x"}}, timeout=5
    )
    assert error.json()["Error"]["ErrorCode"] == "TicketUpdate.InvalidParameter"
    assert sim.stats()["faults"]["dropped_after_commit"] == 2


def test_latency(sim):
    sid = login(sim)
    sim.configure(latency_ms=300)
    started = time.perf_counter()
    requests.get(sim.base_url + "/Ticket", params={"SessionID": sid}, timeout=5)
    slow = time.perf_counter() - started
    started = time.perf_counter()
    requests.get(sim.url + "/_sim/stats", timeout=5)
    control = time.perf_counter() - started
    assert 0.3 <= slow < 1.5
    assert control < 0.2


# ---------------------------------------------------------------- webhooks


class Receiver:
    """A tiny webhook receiver answering from a script of (status, body) pairs."""

    def __init__(self, script):
        self.script = list(script)
        self.received = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.received.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
                )
                status, payload = receiver.script.pop(0) if receiver.script else (200, b"{}")
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(script=()):
        made.append(Receiver(script))
        return made[-1]

    yield make
    for item in made:
        item.close()


def wait_idle(sim, timeout=5.0):
    deadline = time.monotonic() + timeout
    while sim.stats()["webhooks"]["pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return sim.stats()["webhooks"]


def test_webhook_retried_after_500(sim, receiver):
    hook = receiver([(500, b"oops"), (200, b"{}")])
    sim.configure(
        webhook_url=hook.url + "?token=abc", webhook_secret_header="X-Bridge-Token: s3cret"
    )
    sid = login(sim)
    number = create_ticket(sim, sid, "hooked")["TicketNumber"]
    assert hook.received == []  # creating is not a state change
    started = time.monotonic()
    requests.post(sim.url + "/_sim/tickets/2/state", json={"state": "closed successful"}, timeout=5)
    assert time.monotonic() - started < 0.15  # delivery does not slow the trigger down
    deliveries = hook.wait_for(2)
    assert len(deliveries) == 2 and deliveries[0]["json"] == deliveries[1]["json"]
    first = deliveries[0]
    assert first["path"] == "/hook?token=abc"
    assert first["headers"]["Content-Type"] == "application/json; charset=UTF-8"
    assert first["headers"]["X-Bridge-Token"] == "s3cret"
    payload = first["json"]
    assert payload["Event"] == {"TicketID": "2"}
    ticket = payload["Ticket"]
    assert (ticket["TicketID"], ticket["TicketNumber"], ticket["State"], ticket["Title"]) == (
        "2",
        number,
        "closed successful",
        "hooked",
    )
    assert ticket["StateID"] == "2" and ticket["Queue"] == "Raw"
    nested = {"QueueData", "PriorityData", "OwnerData", "Articles"}
    assert nested <= set(ticket)
    assert all(isinstance(v, str) for k, v in ticket.items() if k not in nested)
    assert ticket["QueueData"]["Name"] == "Raw" and ticket["OwnerData"]["UserLogin"] == "bridge"
    assert ticket["Articles"][0]["Subject"] == "s"
    stats = wait_idle(sim)
    assert (stats["sent"], stats["failed"], stats["retried"], stats["pending"]) == (1, 1, 1, 0)


def test_webhook_on_ticket_update_state_only(sim, receiver):
    hook = receiver([(200, b"not json"), (204, b"")])
    sim.configure(webhook_url=hook.url)
    sid = login(sim)
    create_ticket(sim, sid)
    requests.patch(
        sim.base_url + "/Ticket/2",
        json={"SessionID": sid, "Ticket": {"Title": "renamed"}},
        timeout=5,
    )
    requests.patch(
        sim.base_url + "/Ticket/2", json={"SessionID": sid, "Ticket": {"State": "open"}}, timeout=5
    )
    requests.patch(
        sim.base_url + "/Ticket/2", json={"SessionID": sid, "Ticket": {"State": "open"}}, timeout=5
    )  # same state again: no change, no webhook
    deliveries = hook.wait_for(2)
    stats = wait_idle(sim)
    assert len(deliveries) == 2  # one event, delivered twice (non-JSON 200 is a failure)
    assert {d["json"]["Ticket"]["State"] for d in deliveries} == {"open"}
    assert deliveries[0]["json"]["Ticket"]["Title"] == "renamed"
    assert (stats["sent"], stats["failed"]) == (1, 1)


def test_webhook_gives_up_after_ten_attempts(sim_factory):
    with socket.socket() as probe:  # a port that refuses connections
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    quick = sim_factory(webhook_backoff=(0.01,), webhook_url=f"http://127.0.0.1:{dead_port}/hook")
    sid = login(quick)
    create_ticket(quick, sid)
    requests.post(quick.url + "/_sim/tickets/2/state", json={"state": "open"}, timeout=5)
    stats = wait_idle(quick)
    assert (stats["sent"], stats["failed"], stats["retried"], stats["abandoned"]) == (0, 10, 9, 1)


# ---------------------------------------------------------------- concurrency


def test_fifty_concurrent_creates_get_distinct_ids(sim):
    sid = login(sim)
    sim.configure(latency_ms=20)
    barrier = threading.Barrier(50)

    def create(index):
        barrier.wait(timeout=10)
        return requests.post(
            sim.base_url + "/Ticket", json=ticket_body(sid, f"concurrent {index}"), timeout=10
        ).json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(create, range(50)))
    ids = {r["TicketID"] for r in results}
    numbers = {r["TicketNumber"] for r in results}
    articles = {r["ArticleID"] for r in results}
    assert len(ids) == len(numbers) == len(articles) == 50
    assert ids == {str(i) for i in range(2, 52)}
    stats = sim.stats()
    assert stats["tickets"] == 50 and stats["calls"]["TicketCreate"] == 50


def test_access_log_masks_credentials_in_query_strings(sim, capsys):
    sim.configure(log_requests=True)
    sid = login(sim)
    requests.get(f"{sim.base_url}/Ticket?SessionID={sid}&Limit=1", timeout=5)
    err = ""
    deadline = time.monotonic() + 2  # the server writes its log line after answering
    while "/Ticket?" not in err and time.monotonic() < deadline:
        time.sleep(0.02)
        err += capsys.readouterr().err
    assert "SessionID=********" in err
    assert sid not in err
