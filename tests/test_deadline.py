"""Each call has a total deadline, however slowly OTRS drips its answer.

A read timeout bounds each wait for the next bytes: a server that sends one byte at a time,
faster than the read timeout, never trips it. A small socket server here does exactly that,
in the headers, in a body with a Content-Length, and in a body that runs until the
connection closes.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.urls import reverse

from connections import client as client_module
from connections.client import TicketClient
from connections.errors import OTRSError
from connections.models import ApiCall, Connection
from tests.engine_fixtures import make_connection, sample_task_context

DRIP_SECONDS = 0.2  # well below the read timeout: each read gets its byte in time
READ_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5
DEADLINE = CONNECT_TIMEOUT + READ_TIMEOUT
MARGIN = 1.0  # the machine is shared; the point is 1.5 s against 30 s and more

pytestmark = pytest.mark.django_db


@dataclass
class Dripper:
    """Answers /Session at once; every other path as `mode` says, one byte per DRIP_SECONDS."""

    mode: str = "body"  # "body", "headers", "until-close" or "fast"
    port: int = 0
    paths: list[str] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    ca_bundle: str = ""
    _server: socket.socket | None = None

    def serve(self) -> None:
        assert self._server is not None
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            while self._one_request(conn):
                pass
        except OSError:
            pass  # the client gave up: that is the point
        finally:
            conn.close()

    def _one_request(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length:
            body += conn.recv(65536)
        path = head.split(b" ")[1].decode()
        self.paths.append(path)
        if path.split("?")[0].endswith("/Session"):
            self._send(conn, json.dumps({"SessionID": "drip-session"}).encode())
            return True
        answer = json.dumps({"TicketID": "7", "TicketNumber": "2026000007"}).encode()
        if self.mode == "fast":
            self._send(conn, answer)
            return True
        if self.mode == "headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            self._drip(conn, b"X-Slow: " + b"a" * 200)
        elif self.mode == "until-close":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            conn.sendall(b"Connection: close\r\n\r\n")
            self._drip(conn, answer + b" " * 200)
            return False
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            conn.sendall(f"Content-Length: {len(answer) + 200}\r\n\r\n".encode())
            self._drip(conn, answer + b" " * 200)
        return True

    @staticmethod
    def _send(conn: socket.socket, body: bytes) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    @staticmethod
    def _drip(conn: socket.socket, data: bytes) -> None:
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(DRIP_SECONDS)


@pytest.fixture
def dripper() -> Iterator[Dripper]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    drip = Dripper(port=server.getsockname()[1], _server=server)
    threading.Thread(target=drip.serve, daemon=True).start()
    yield drip
    server.close()


def _self_signed(directory: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def _connection(drip: Dripper, **config: float) -> Connection:
    scheme = "https" if drip.tls else "http"
    connection = make_connection(f"{scheme}://127.0.0.1:{drip.port}/otrs")
    connection.config_json = {
        "connectTimeout": CONNECT_TIMEOUT,
        "readTimeout": READ_TIMEOUT,
        "retryCount": 0,
        **({"caBundle": drip.ca_bundle} if drip.tls else {}),
        **config,
    }
    connection.save()
    return connection


def _timed(action) -> tuple[OTRSError, float]:
    started = time.monotonic()
    with pytest.raises(OTRSError) as caught:
        action()
    return caught.value, time.monotonic() - started


CALL_DEADLINE = (
    f"OTRS sent no complete answer within {DEADLINE:g} s "
    "(the call's deadline: connectTimeout + readTimeout)"
)


@pytest.mark.parametrize("mode", ["body", "headers", "until-close"])
def test_a_dripping_create_ends_at_its_deadline_with_an_unknown_outcome(dripper, mode):
    dripper.mode = mode
    client = TicketClient(_connection(dripper))

    error, elapsed = _timed(lambda: client.create_ticket(sample_task_context()))

    assert DEADLINE - 0.1 <= elapsed < DEADLINE + MARGIN
    assert error.message == CALL_DEADLINE
    # The create was sent and may have been committed: the next attempt searches first.
    assert error.outcome_unknown and not error.permanent
    row = ApiCall.objects.get(call_name="TicketCreate")
    assert row.outcome == "timeout" and row.error == CALL_DEADLINE


@pytest.mark.parametrize("mode", ["body", "until-close"])
def test_a_dripping_answer_over_tls_ends_at_its_deadline(dripper, tmp_path, mode):
    dripper.mode, dripper.tls = mode, _self_signed(tmp_path)
    dripper.ca_bundle = str(tmp_path / "cert.pem")  # verified: the call is a real TLS one
    client = TicketClient(_connection(dripper))

    error, elapsed = _timed(lambda: client.create_ticket(sample_task_context()))

    assert DEADLINE - 0.1 <= elapsed < DEADLINE + MARGIN
    assert error.message == CALL_DEADLINE and error.outcome_unknown
    dripper.mode = "fast"
    assert client.create_ticket(sample_task_context()).ticket_id == 7


def test_a_dripping_read_ends_at_its_deadline_and_is_retried_as_a_get(dripper):
    client = TicketClient(_connection(dripper, retryCount=1, retryWait=0))

    error, elapsed = _timed(lambda: client.ticket_statuses([7]))

    assert 2 * DEADLINE - 0.1 <= elapsed < 2 * DEADLINE + MARGIN
    assert error.message == CALL_DEADLINE
    assert not error.outcome_unknown  # a GET changes nothing
    assert ApiCall.objects.filter(call_name="TicketGet", outcome="timeout").count() == 2


def test_the_client_works_again_after_a_call_ran_out_of_time(dripper):
    client = TicketClient(_connection(dripper))
    _timed(lambda: client.create_ticket(sample_task_context()))

    dripper.mode = "fast"
    created = client.create_ticket(sample_task_context())

    assert created.ticket_id == 7


def test_a_slow_login_ends_at_the_deadline_too(dripper):
    connection = _connection(dripper)
    document = connection.connection_document()
    document["authentications"]["otrs"]["url"] = f"http://127.0.0.1:{dripper.port}/otrs/Slow"
    connection.set_connection_json(document)
    connection.save()

    error, elapsed = _timed(lambda: TicketClient(connection).create_ticket(sample_task_context()))

    assert elapsed < DEADLINE + MARGIN
    assert error.message == CALL_DEADLINE
    assert ApiCall.objects.get().call_name == "token:otrs"


def test_a_connection_test_is_bounded_in_all(dripper, monkeypatch):
    # Each call could take 3.5 s, and the search is retried twice: the whole check still
    # ends when its own time is up.
    monkeypatch.setattr(client_module, "CHECK_SECONDS", 1.2)
    connection = _connection(dripper, readTimeout=3, retryCount=2, retryWait=0.5)

    started = time.monotonic()
    result = TicketClient(connection).test_connection()
    elapsed = time.monotonic() - started

    assert not result.ok
    assert result.message == (
        "OTRS sent no complete answer before the connection test's 1.2 s ran out"
    )
    assert 1.1 <= elapsed < 1.2 + MARGIN
    assert [e["call"] for e in result.exchanges] == ["token:otrs", "TicketSearch"]


def test_the_console_button_answers_within_the_check_time(admin_client, dripper, monkeypatch):
    monkeypatch.setattr(client_module, "CHECK_SECONDS", 1.2)
    connection = _connection(dripper, readTimeout=3, retryCount=2)

    started = time.monotonic()
    response = admin_client.post(reverse("connections:test", args=[connection.name]), follow=True)

    assert time.monotonic() - started < 1.2 + MARGIN
    assert (
        "Connection test failed: OTRS sent no complete answer before" in response.content.decode()
    )


def test_the_check_time_stays_below_the_web_servers_worker_timeout():
    # gunicorn's default: a worker that has not answered in 30 s is killed mid-request.
    assert client_module.CHECK_SECONDS < 30


def test_through_a_proxy_the_deadline_holds_and_the_proxy_address_is_checked(
    dripper, monkeypatch, settings
):
    # The dripper plays a forward proxy: it is sent absolute URLs and never resolves them.
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dripper.port}")
    connection = _connection(dripper)
    document = connection.connection_document()
    document["authentications"]["otrs"]["url"] = "http://otrs.behind.proxy/otrs/Session"
    connection.set_connection_json(document)
    connection.create_ticket_json = {
        **connection.create_ticket_json,
        "call": [
            {
                **connection.create_ticket_json["call"][0],
                "url": "http://otrs.behind.proxy/otrs/Ticket",
            }
        ],
    }
    connection.save()

    dripper.mode = "fast"
    assert TicketClient(connection).create_ticket(sample_task_context()).ticket_id == 7
    assert dripper.paths[-1] == "http://otrs.behind.proxy/otrs/Ticket"

    dripper.mode = "body"
    error, elapsed = _timed(lambda: TicketClient(connection).create_ticket(sample_task_context()))
    assert elapsed < DEADLINE + MARGIN and error.message == CALL_DEADLINE

    settings.OTRS_REFUSED_NETWORKS = ["127.0.0.0/8"]
    error, _ = _timed(lambda: TicketClient(connection).create_ticket(sample_task_context()))
    assert error.permanent
    assert error.message.startswith("The proxy for this URL: 127.0.0.1 is in the refused network")
