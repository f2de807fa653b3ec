"""Outgoing webhook: what Znuny's asynchronous ``Ticket::Generic`` invoker would POST.

On a ticket state change the simulator builds the invoker payload (reference §11)
and delivers it from a background thread, so the request that caused the change is
not slowed down.  Like an asynchronous OTRS invoker (a daemon task) it retries:
anything but a 20x status, a 20x with an empty or non-JSON body (204 excepted) or
a connection error counts as a failed attempt; there are at most 10 attempts with
growing pauses between them (SimConfig.webhook_backoff).

Counters in ``/_sim/stats`` -> ``webhooks``: ``sent`` (deliveries acknowledged),
``failed`` (failed attempts), ``retried`` (attempts after the first),
``abandoned`` (deliveries given up after the last attempt), ``pending`` (in flight).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import deque

from . import masterdata as md
from .store import Store, article_view, ticket_view

MAX_ATTEMPTS = 10


def _stringify(value):
    """The invoker sends ticket data the way the Perl hashes hold it: as strings."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify(v) for v in value]
    return str(value)


def build_payload(store: Store, ticket: dict) -> dict:
    """``{"Event":{"TicketID":"<id>"},"Ticket":{...}}`` - no event name (Znuny adds none)."""
    view = ticket_view(store, ticket)
    for name, value in sorted(ticket["DynamicFields"].items()):
        view[f"DynamicField_{name}"] = value
    owner = store.users.get(ticket["OwnerID"], {})
    data = _stringify(view)
    data["QueueData"] = _stringify(
        {
            "QueueID": ticket["QueueID"],
            "Name": md.QUEUES[ticket["QueueID"]],
            "GroupID": md.QUEUE_GROUP_ID,
            "ValidID": 1,
        }
    )
    data["PriorityData"] = _stringify(
        {"ID": ticket["PriorityID"], "Name": md.PRIORITIES[ticket["PriorityID"]], "ValidID": 1}
    )
    data["OwnerData"] = _stringify(
        {
            k: owner.get(k)
            for k in ("UserID", "UserLogin", "UserFirstname", "UserLastname", "UserEmail")
        }
    )
    data["Articles"] = [_stringify(article_view(store, ticket, a)) for a in ticket["Articles"]]
    return {"Event": {"TicketID": str(ticket["TicketID"])}, "Ticket": data}


def _accepted(status: int, body: bytes) -> bool:
    if not 200 <= status <= 209:
        return False
    if status == 204:
        return True
    if not body.strip():
        return False  # "No content provided"
    try:
        json.loads(body)
    except ValueError:
        return False  # "Error while parsing JSON data"
    return True


class WebhookSender:
    """Delivers payloads in daemon threads, with retries and shared counters."""

    def __init__(self, store: Store, backoff=(0.2, 0.5, 1, 2, 4, 8, 15, 30, 60), timeout=10.0):
        self.store = store
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self.log: deque = deque(maxlen=100)
        self._stop = threading.Event()

    def stop(self):
        self._stop.set()

    def send(self, url: str, payload: dict, secret_header: str = ""):
        with self.store.lock:
            self.store.webhooks["pending"] += 1
        thread = threading.Thread(
            target=self._deliver,
            args=(url, payload, secret_header),
            daemon=True,
            name="otrs-sim-webhook",
        )
        thread.start()
        return thread

    def _headers(self, secret_header: str) -> dict:
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        if secret_header and ":" in secret_header:
            name, value = secret_header.split(":", 1)
            headers[name.strip()] = value.strip()
        return headers

    def _attempt(self, url: str, body: bytes, headers: dict) -> tuple[bool, str]:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, content = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, content = exc.code, exc.read() if exc.fp else b""
        except (OSError, ValueError) as exc:  # connection refused, timeout, bad URL
            return False, f"{type(exc).__name__}: {exc}"
        return _accepted(status, content), f"HTTP {status}"

    def _deliver(self, url: str, payload: dict, secret_header: str):
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")
        headers = self._headers(secret_header)
        ticket_id = payload["Event"]["TicketID"]
        outcome = "abandoned"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if attempt > 1:
                pause = self.backoff[min(attempt - 2, len(self.backoff) - 1)]
                if self._stop.wait(pause):
                    outcome = "stopped"
                    break
            ok, detail = self._attempt(url, body, headers)
            with self.store.lock:
                if attempt > 1:
                    self.store.webhooks["retried"] += 1
                self.store.webhooks["sent" if ok else "failed"] += 1
                self.log.append(
                    {
                        "time": time.time(),
                        "TicketID": ticket_id,
                        "attempt": attempt,
                        "ok": ok,
                        "detail": detail,
                    }
                )
            if ok:
                outcome = "sent"
                break
        with self.store.lock:
            self.store.webhooks["pending"] -= 1
            if outcome == "abandoned":
                self.store.webhooks["abandoned"] += 1
