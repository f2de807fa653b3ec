"""A total deadline for each HTTP exchange, on top of the per-read timeouts.

A read timeout bounds each wait for the next bytes, not the answer: an OTRS that sends one
byte every 1.2 s never trips a 5 s read timeout, and held one call for 38 s. So each exchange
runs `with limit(seconds)`, and the connections and sockets it uses are `watch`ed
(client.py's connection classes do it as they send and as they read). At the deadline the watchdog shuts their sockets
down, which ends a read blocked on them at once; `expired` then tells the client why.

One watchdog thread for the process keeps every deadline, not a timer thread per call:
starting a thread costs about as much as a call to a fast OTRS (0.5 ms measured here), and
a provisioning run makes hundreds of calls a second. Finished deadlines leave the heap when
they reach its top, so it holds about calls per second times the deadline.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Deadline:
    """One exchange's deadline: `seconds` from when it was entered."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self.finished = False
        self._watched: list[Any] = []  # sockets, and connections whose .sock to shut


def _shut(watched: Any) -> None:
    # A connection's socket of the moment: TLS swaps the plain socket for a wrapped one.
    # socket.socket.shutdown, not SSLSocket's own: that would drop the TLS state under the
    # thread that is reading; a shut-down descriptor makes its read return at once.
    sock = watched if isinstance(watched, socket.socket) else getattr(watched, "sock", None)
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


class _Watchdog:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="otrs-call-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:
                self.lock.notify()

    def _run(self) -> None:
        with self.lock:
            while True:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self.lock.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self.lock.wait(wait)
                    continue
                deadline = heapq.heappop(self._heap)[2]
                deadline.expired = True
                for watched in deadline._watched:
                    _shut(watched)


_watchdog = _Watchdog()
_current = threading.local()


def _after_fork() -> None:
    # A forked worker (django-q2) has no watchdog thread, and the lock may have been held by
    # a thread that does not exist in the child.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def limit(seconds: float) -> Iterator[Deadline]:
    """Bound what this thread sends and receives inside the block to `seconds` in all."""
    deadline = Deadline(seconds)
    outer = getattr(_current, "deadline", None)
    _current.deadline = deadline
    _watchdog.add(deadline)
    try:
        yield deadline
    finally:
        with _watchdog.lock:
            # Under the lock: a connection handed back to its pool is never shut afterwards.
            deadline.finished = True
        _current.deadline = outer


def watch(watched: Any) -> None:
    """Put a socket, or a connection's socket of the moment, under this thread's deadline,
    if any; shut it at once if that has passed."""
    deadline: Deadline | None = getattr(_current, "deadline", None)
    if deadline is None or watched is None:
        return
    with _watchdog.lock:
        deadline._watched.append(watched)
        if deadline.expired:
            _shut(watched)
