"""Everything under /api/v1/ answers the JSON error shape, Django's own answers included
(no route, a refused request, an unhandled exception, paths with encoded control
characters), and a path with control characters is logged on one line, escaped: by
Django's request log and by gunicorn's access log as the Procfile runs it."""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from django.test import Client

from otrsbridge.access_log import AccessLogger, escape_controls, logged_path
from tickets import openapi

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
# Encoded control characters (and a Unicode line separator) a path may carry.
CONTROLS = ["%0a", "%0d", "%0d%0a", "%00", "%09", "%1b", "%7f", "%c2%85", "%e2%80%a8"]
PREFIXES = ["x", "health", "requests", "requests/1", "requests/1/cancel", "hooks/otrs/otrs"]


def _assert_error_shape(answer, *statuses: int) -> None:
    assert answer.status_code in statuses
    assert answer["Content-Type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error", "detail", "fields"}


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
def test_a_path_with_control_characters_answers_json(client, method, prefix, control):
    answer = getattr(client, method)(f"/api/v1/{prefix}{control}y")
    # 405 where a route takes the rest of the path as a name (the webhook's connection),
    # and 403 when that name is then posted to: an unknown connection answers as a wrong token.
    _assert_error_shape(answer, 404, 405, 403)


@pytest.mark.parametrize("path", ["/api/v1/", "/api/v1/requests/", "/api/v1/nothing/here"])
def test_an_unknown_path_answers_json(client, path):
    _assert_error_shape(client.get(path), 404)


def test_a_wrong_method_answers_json(client):
    answer = client.put("/api/v1/requests")
    _assert_error_shape(answer, 405)
    assert answer["Allow"] == "GET, POST"


def test_an_unhandled_exception_answers_json_under_the_api_only(admin_user):
    client = Client(raise_request_exception=False)
    with mock.patch.object(openapi, "document", side_effect=RuntimeError("boom")):
        answer = client.get("/api/v1/openapi.json")
    _assert_error_shape(answer, 500)
    assert answer.json()["error"] == "server_error"
    assert "boom" not in answer.content.decode()
    client.force_login(admin_user)
    with mock.patch("tickets.selectors.overview", side_effect=RuntimeError("boom")):
        page = client.get("/")
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")


def test_a_refused_request_answers_json_under_the_api_only():
    client = Client(HTTP_HOST="evil.example", raise_request_exception=False)
    _assert_error_shape(client.get("/api/v1/health"), 400)
    assert client.get("/login/")["Content-Type"].startswith("text/html")


def test_an_unknown_console_page_is_still_the_html_404(client):
    answer = client.get("/nowhere%0a")
    assert answer.status_code == 404 and answer["Content-Type"].startswith("text/html")


# --- log lines -------------------------------------------------------------------------------


@pytest.mark.parametrize("control", CONTROLS)
def test_django_logs_a_path_with_control_characters_on_one_escaped_line(client, caplog, control):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        client.get(f"/api/v1/x{control}y")
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    line = record.getMessage()
    assert line.startswith("Not Found: /api/v1/x") and line.endswith("y")
    assert escape_controls(line) == line  # nothing left that breaks or colours a line


def test_the_access_logger_writes_the_path_as_sent_without_the_query():
    environ = {"RAW_URI": "/api/v1/hooks/otrs/x%0ay?token=s3cret", "PATH_INFO": "/x\ny"}
    assert logged_path(environ) == "/api/v1/hooks/otrs/x%0ay"
    assert logged_path({"PATH_INFO": "/x\ny\x1b\xe9"}) == "/x%0Ay%1B%E9"


def test_the_access_logger_escapes_every_text_atom():
    logger = AccessLogger.__new__(AccessLogger)
    response = mock.Mock(status="404 Not Found", headers=[], sent=10)
    request = mock.Mock(headers=[("USER-AGENT", "evil\r\nforged line")])
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/api/v1/x%0ay",
        "PATH_INFO": "/api/v1/x\ny",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_USER_AGENT": "evil\r\nforged line",
    }
    atoms = logger.atoms(response, request, environ, mock.Mock(seconds=0, microseconds=5))
    assert atoms["U"] == "/api/v1/x%0ay"
    assert atoms["a"] == atoms["{user-agent}i"] == "evil\\r\\nforged line"


def _procfile_web_command(port: int, log: Path) -> list[str]:
    """The Procfile's web command, on a free port and logging into `log`."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    command = shlex.split(line.removeprefix("web:"))
    command[0] = str(Path(sys.executable).parent / "gunicorn")
    command[command.index("--bind") + 1] = f"127.0.0.1:{port}"
    command[command.index("--workers") + 1] = "1"
    command[command.index("--access-logfile") + 1] = str(log)
    return command


def _send(port: int, target: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.slow
def test_gunicorn_as_the_procfile_runs_it_logs_one_escaped_line_per_request(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "access.log"
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "otrsbridge.test_settings",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    server = subprocess.Popen(
        _procfile_web_command(port, log),
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _send(port, b"/api/v1/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        targets = [f"/api/v1/x{control}y".encode() for control in CONTROLS]
        targets.append(b"/api/v1/hooks/otrs/x%0ay?token=s3cret-token")
        for target in targets:
            assert b"application/json" in _send(port, target)
        deadline = time.monotonic() + 10
        while log.read_text().count("\n") < len(targets) + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=20)
    lines = log.read_text().splitlines()
    assert len(lines) == len(targets) + 1  # the health probe, then one line per request
    for target, line in zip(targets, lines[1:], strict=True):
        path = target.decode().split("?")[0]
        assert f'"GET {path}" 40' in line, line
    assert "s3cret-token" not in log.read_text()
    assert escape_controls(log.read_text().replace("\n", "")) == log.read_text().replace("\n", "")
