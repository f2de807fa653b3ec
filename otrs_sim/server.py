"""HTTP front of the simulator: the GenericInterface provider, the fault knobs at work
(declared in config), control endpoints and pages.

Responses under ``/<alias>/nph-genericinterface.pl/...`` are written byte by byte
(status line + exactly Content-Type, Content-Length, Connection: close) because the
stdlib's ``send_response`` would add ``Server`` and ``Date`` headers that Znuny's
nph script does not send.  Every connection is closed after one response.

Request pipeline for a web service call::

    read body (unless > max_length) -> resolve web service (else bare Apache 500)
    -> match route -> count the call in /_sim/stats -> sleep latency_ms
    -> fail_rate fault? -> no route? -> 413 / body decoding -> operation
    -> drop_after_commit? -> response -> webhooks

So ``calls`` counts every request that resolved to an operation, including the ones
a fault knob then broke (``faults`` says how many of those there were) and the
ones rejected for a bad body.  Requests that match no route are counted under
``transport.no_route`` (unless a fault knob hit them first).

Control endpoints (``/_sim/...``) and pages are never slowed down or broken by the
knobs.
"""

from __future__ import annotations

import json
import random
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from . import masterdata as md
from . import operations, page, protocol
from .common import Context
from .config import SimConfig, checked_changes
from .store import Store, article_view, history_view, ticket_view
from .webhook import WebhookSender, build_payload

# faultstrings for fail_rate's HTTP 500 (a core failure inside the operation).
FAULTSTRINGS = {
    "TicketCreate": "Ticket could not be created, please contact the system administrator",
    "TicketUpdate": "Ticket could not be updated, please contact the system administrator",
}
GENERIC_FAULT = "{op}: Could not process the request (simulated failure)"

# The access log masks credentials in query strings (a real Apache would not; the demo
# prints its log to the terminal, and the product's rule is that no secret shows).
_CREDENTIALS_IN_QUERY = re.compile(r"((?:SessionID|Password|token)=)[^&;\s\"]+", re.IGNORECASE)


class SimServer:
    """A running simulator: ``url``, ``base_url``, ``store``, ``config``, ``shutdown()``."""

    def __init__(self, host: str, port: int, config: SimConfig, state_file=None):
        self.config = config
        self.store = Store(
            config.user,
            config.password,
            state_file=state_file,
            welcome_ticket=config.welcome_ticket,
            dynamic_fields=config.dynamic_fields,
        )
        self.rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self.webhooks = WebhookSender(
            self.store, backoff=config.webhook_backoff, timeout=config.webhook_timeout
        )
        self.httpd = _HTTPServer((host, port), _Handler)
        self.httpd.sim = self
        self.host, self.port = self.httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.base_url = f"{self.url}/otrs/nph-genericinterface.pl/Webservice/{config.webservice}"
        self.thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle

    def start(self) -> SimServer:
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name=f"otrs-sim-{self.port}",
        )
        self.thread.start()
        return self

    def shutdown(self):
        self.webhooks.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    # -------------------------------------------------------------- knobs

    def configure(self, **changes) -> dict:
        """Apply knob changes (same keys and validation as POST /_sim/config)."""
        coerced = checked_changes(changes)
        with self.store.lock:
            for name, value in coerced.items():
                setattr(self.config, name, value)
            if "seed" in coerced:
                with self._rng_lock:
                    self.rng.seed(coerced["seed"])
        return self.config.public()

    def stats(self) -> dict:
        return self.store.stats()

    def draw_fault(self) -> str | None:
        """None, or which failure fail_rate injects for this call."""
        with self._rng_lock:
            rate = self.config.fail_rate
            if rate <= 0 or self.rng.random() >= rate:
                return None
            first_half = self.rng.random() < 0.5
        if self.config.html_errors:
            return "html500" if first_half else "raw_html"
        return "http500" if first_half else "reset"

    def draw_drop(self) -> bool:
        with self._rng_lock:
            rate = self.config.drop_after_commit
            return rate > 0 and self.rng.random() < rate

    def fire_webhooks(self, payloads: list[dict]):
        url = self.config.webhook_url
        if not url:
            return
        for payload in payloads:
            self.webhooks.send(url, payload, self.config.webhook_secret_header)

    def payloads_for(self, ticket_ids) -> list[dict]:
        """Build webhook payloads (call with store.lock held)."""
        if not self.config.webhook_url:
            return []
        return [build_payload(self.store, self.store.get(tid)) for tid in ticket_ids]


def start_server(
    host: str = "127.0.0.1", port: int = 0, config: SimConfig | None = None, state_file=None
) -> SimServer:
    """Start a simulator in a daemon thread and return it (port 0 = pick a free port)."""
    return SimServer(host, port, config or SimConfig(), state_file).start()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True
    sim: SimServer

    def server_bind(self):
        # HTTPServer.server_bind() calls socket.getfqdn(), a DNS lookup that can
        # stall for seconds in sandboxes; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # clients that hang up are part of the game
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Apache/2.4.57 (Debian)"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request
    server: _HTTPServer

    # -------------------------------------------------------------- plumbing

    def handle(self):
        """Exactly one request per connection (KeepAlive is off in the stock service)."""
        self.close_connection = True
        self._status = 0
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                return
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return
            self.close_connection = True
            self._dispatch()
        except (ConnectionError, TimeoutError):
            pass  # the client went away
        except Exception:
            # A bug in the simulator: log it and answer like Apache when mod_perl dies.
            traceback.print_exc()
            if not self._status:
                try:
                    self._apache_500()
                except OSError:
                    pass
        finally:
            if self.server.sim.config.log_requests and self._status:
                line = _CREDENTIALS_IN_QUERY.sub(r"\1********", self.requestline)
                sys.stderr.write(f'{self.client_address[0]} "{line}" {self._status}\n')

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        if self.server.sim.config.log_requests:
            super().log_message(format, *args)

    def _write(self, status: int, headers: list[tuple[str, str]], body: bytes, reason=None):
        self._status = status
        version = (
            self.request_version if self.request_version in ("HTTP/1.0", "HTTP/1.1") else "HTTP/1.1"
        )
        reason = reason or self.responses.get(status, ("",))[0]
        head = f"{version} {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        payload = head.encode("latin-1") + b"\r\n"
        if self.command != "HEAD":
            payload += body
        self.wfile.write(payload)

    def _gi_response(self, status: int, body: bytes, content_type: str, reason=None):
        """The three headers Znuny's nph script sends, nothing else."""
        self._write(
            status,
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
            body,
            reason,
        )

    def _apache_500(self):
        """Apache's own error page (unknown web service; html_errors faults)."""
        body = protocol.APACHE_500_PAGE
        self._write(
            500,
            [
                ("Date", format_datetime(datetime.now(UTC), usegmt=True)),
                ("Server", self.server_version),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                ("Content-Type", "text/html; charset=iso-8859-1"),
            ],
            body,
        )

    def _reset(self):
        """Drop the connection without a response: SO_LINGER 0 + close sends a RST."""
        self._status = -1
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        for stream in (self.rfile, self.wfile):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.connection.close()
        except OSError:
            pass

    def _json(self, status: int, data, extra_headers=()):
        body = (
            json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
        )
        self._write(
            status,
            [
                ("Content-Type", "application/json; charset=UTF-8"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                *extra_headers,
            ],
            body,
        )

    def _html(self, status: int, html: str):
        body = html.encode("utf-8")
        self._write(
            status,
            [
                ("Content-Type", "text/html; charset=UTF-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Connection", "close"),
            ],
            body,
        )

    def _redirect(self, location: str):
        self._write(
            303, [("Location", location), ("Content-Length", "0"), ("Connection", "close")], b""
        )

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None when Content-Length exceeds ``limit`` (not read)."""
        length = self._content_length()
        if length > limit:
            return None
        return self.rfile.read(length) if length else b""

    # -------------------------------------------------------------- dispatch

    def _dispatch(self):
        path, _, query = self.path.partition("?")
        gi = protocol.split_alias_path(path)
        if gi is not None:
            self._webservice(path, gi[1], query)
        elif path.startswith("/_sim/"):
            self._control(path, query)
        elif path == "/" and self.command in ("GET", "HEAD"):
            sim = self.server.sim
            self._html(200, page.index(sim.store, sim.config.public(), sim.base_url))
        elif path in ("/otrs/index.pl", "/znuny/index.pl") and self.command in ("GET", "HEAD"):
            self._zoom(path, query)
        else:
            self._html(404, page.not_found(f"No page at {path}."))

    def _zoom(self, path: str, query: str):
        params = protocol.parse_query(query)
        alias = path.split("/")[1]
        if params.get("Action") != "AgentTicketZoom":
            self._html(404, page.not_found("Only Action=AgentTicketZoom is simulated."))
            return
        html = page.zoom(self.server.sim.store, params.get("TicketID"), alias)
        if html is None:
            self._html(404, page.not_found(f"No ticket with TicketID {params.get('TicketID')}."))
        else:
            self._html(200, html)

    # -------------------------------------------------------------- GenericInterface

    def _webservice(self, path: str, rest: str, query: str):
        sim = self.server.sim
        config = sim.config
        store = sim.store
        raw = self._read_body(config.max_length)

        service = protocol.webservice_of(rest)
        if (
            service is None
            or (service[0] == "Webservice" and service[1] != config.webservice)
            or (service[0] == "WebserviceID" and service[1] != "1")
        ):
            with store.lock:
                store.transport["unknown_webservice"] += 1
            self._apache_500()
            return

        route = protocol.route_path(path)
        operation, captures = protocol.match_route(self.command, route)
        with store.lock:
            if operation:
                store.calls[operation] += 1
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000.0)

        fault = sim.draw_fault()
        if fault:
            with store.lock:
                store.faults[fault] += 1
            self._inject(fault, operation or "Provider")
            return
        if operation is None:
            with store.lock:
                store.transport["no_route"] += 1
            self._gi_response(
                500, protocol.no_route_message(route).encode("utf-8"), protocol.TEXT_CT
            )
            return

        url_params = protocol.parse_query(query)
        url_params.update(captures)
        if self.command != "GET" and self._content_length() > 0:
            if raw is None:
                self._gi_response(
                    413,
                    b"Request Entity Too Large",
                    protocol.TEXT_CT,
                    reason="Request Entity Too Large",
                )
                return
            if not raw or protocol.is_form(self.headers.get("Content-Type")):
                # Perl's CGI reads a form body itself, so the transport finds none left.
                self._gi_response(500, b"Could not read input data", protocol.TEXT_CT)
                return
            try:
                body = protocol.decode_body(raw, self.headers.get("Content-Type"))
            except protocol.BodyError as exc:
                self._gi_response(exc.status, exc.text.encode("utf-8"), protocol.TEXT_CT)
                return
            data = protocol.merge_params(url_params, body)
        else:
            data = dict(url_params)
            data["RequestMethod"] = self.command

        ctx = Context(
            store=store,
            session_ttl=config.session_ttl,
            session_max_ttl=config.session_max_ttl,
            remote_addr=self.client_address[0],
            user_agent=self.headers.get("User-Agent", ""),
        )
        with store.lock:
            result = operations.run(operation, ctx, data)
            payloads = sim.payloads_for(result.state_changes)

        if result.fault is not None:
            body = protocol.dump_json({"faultcode": "Server", "faultstring": result.fault})
            self._gi_response(500, body, protocol.TEXT_CT)
        elif result.committed and sim.draw_drop():
            with store.lock:
                store.faults["dropped_after_commit"] += 1
            self._reset()
        else:
            self._gi_response(200, protocol.dump_json(result.data), protocol.JSON_CT)
        sim.fire_webhooks(payloads)

    def _inject(self, fault: str, operation: str):
        if fault == "reset":
            self._reset()
        elif fault == "raw_html":
            # A dying nph script: Apache's HTML page, no status line, no headers.
            self._status = -2
            self.wfile.write(protocol.APACHE_500_PAGE)
        elif fault == "html500":
            self._apache_500()
        else:
            text = FAULTSTRINGS.get(operation, GENERIC_FAULT.format(op=operation))
            body = protocol.dump_json({"faultcode": "Server", "faultstring": text})
            self._gi_response(500, body, protocol.TEXT_CT)

    # -------------------------------------------------------------- /_sim control

    def _control_data(self) -> tuple[dict, bool]:
        """Body of a control POST as a dict, plus whether it came from an HTML form."""
        raw = self._read_body(1_000_000) or b""
        content_type = (self.headers.get("Content-Type") or "").lower()
        if "application/x-www-form-urlencoded" in content_type:
            parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            return {k: v[-1] for k, v in parsed.items()}, True
        if not raw.strip():
            return {}, False
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data, False

    def _control(self, path: str, query: str):
        sim = self.server.sim
        parts = [p for p in path.split("/") if p][1:]  # drop "_sim"
        method = self.command
        try:
            data, is_form = self._control_data() if method == "POST" else ({}, False)
        except ValueError as exc:
            self._json(400, {"error": f"bad request body: {exc}"})
            return

        if parts == ["config"] and method == "GET":
            self._json(200, sim.config.public())
        elif parts == ["config"] and method == "POST":
            try:
                self._json(200, sim.configure(**data))
            except ValueError as exc:
                self._json(400, {"error": str(exc)})
        elif parts == ["stats"] and method == "GET":
            self._json(200, sim.stats())
        elif parts == ["reset"] and method == "POST":
            sim.store.reset(reset_ids=bool(data.get("reset_ids")))
            self._json(200, sim.stats())
        elif parts == ["sessions", "expire"] and method == "POST":
            session_id = data.get("SessionID")
            self._json(200, {"expired": sim.store.expire_sessions(session_id)})
        elif parts == ["webhooks"] and method == "GET":
            with sim.store.lock:
                self._json(200, {"deliveries": list(sim.webhooks.log), **sim.store.webhooks})
        elif parts == ["tickets"] and method == "GET":
            self._json(200, {"tickets": self._ticket_dump(None)})
        elif len(parts) == 2 and parts[0] == "tickets" and method == "GET":
            tickets = self._ticket_dump(parts[1])
            if tickets:
                self._json(200, tickets[0])
            else:
                self._json(404, {"error": f"no ticket {parts[1]}"})
        elif (
            len(parts) == 3
            and parts[0] == "tickets"
            and parts[2] in ("state", "merge")
            and method == "POST"
        ):
            self._agent_action(parts[1], parts[2], data, is_form)
        else:
            self._json(404, {"error": f"no control endpoint {method} {path}"})

    def _ticket_dump(self, ticket_id) -> list[dict]:
        """Full ticket views (with articles, dynamic fields and history) for /_sim/tickets."""
        store = self.server.sim.store
        with store.lock:
            if ticket_id is None:
                tickets = sorted(
                    store.tickets.values(),
                    key=lambda t: (t["Created"], t["TicketID"]),
                    reverse=True,
                )
            else:
                found = store.get(ticket_id) if str(ticket_id).isdigit() else None
                tickets = [found] if found else []
            out = []
            for t in tickets:
                view = ticket_view(
                    store,
                    t,
                    dynamic_fields=True,
                    articles=[article_view(store, t, a) for a in t["Articles"]],
                )
                view["History"] = [history_view(h) for h in t["History"]]
                view["MergedInto"] = t.get("MergedInto")
                out.append(view)
            return out

    def _agent_action(self, ticket_id: str, action: str, data: dict, is_form: bool):
        """Play the OTRS agent: change a ticket's state or merge it into another."""
        sim = self.server.sim
        store = sim.store
        with store.lock:
            ticket = store.get(ticket_id) if ticket_id.isdigit() else None
            if ticket is None:
                self._json(404, {"error": f"no ticket {ticket_id}"})
                return
            changed = False
            if action == "state":
                wanted = str(data.get("state", data.get("State", ""))).strip()
                state_id = md.state_id_by_name(wanted)
                if state_id is None and wanted.isdigit() and int(wanted) in md.STATES:
                    state_id = int(wanted)
                if state_id is None:
                    self._json(
                        400,
                        {
                            "error": f"unknown state {wanted!r}",
                            "states": list(md.STATE_NAMES.values()),
                        },
                    )
                    return
                # As an agent's state change in Znuny: a closed state unlocks first, a
                # pending one gets its time before the state is set.
                store.unlock_if_closing(ticket, state_id, md.ROOT_USER_ID)
                pending = md.state_type_name(state_id).startswith("pending")
                if pending and ticket["StateID"] != state_id:
                    minutes = int(data.get("pending_minutes") or 24 * 60)
                    until = int(store.clock()) + minutes * 60
                    store.set_pending_time(ticket, until, md.ROOT_USER_ID)
                changed = store.set_state(ticket, state_id, md.ROOT_USER_ID)
            else:
                target = (
                    store.get(data.get("into")) if str(data.get("into", "")).isdigit() else None
                )
                if target is None or target is ticket:
                    self._json(400, {"error": "merge needs 'into': the TicketID of another ticket"})
                    return
                store.merge(ticket, target, md.ROOT_USER_ID)
                changed = True
            store.save()
            payloads = sim.payloads_for([ticket["TicketID"]]) if changed else []
            view = ticket_view(store, ticket)
        sim.fire_webhooks(payloads)
        if is_form:
            target = str(data.get("next") or "/")
            self._redirect(
                target if target.startswith("/") and not target.startswith("//") else "/"
            )
        else:
            self._json(200, {"changed": changed, "Ticket": view})


__all__ = ["SimServer", "start_server"]
