"""Sockets that connect only where addresses.py allows, and end at their call's deadline.

The urllib3 connection classes every HTTP exchange of the bridge uses (client.py mounts
them for OTRS and for callback deliveries): a host name is resolved once, refused when any
address is in a refused network, and the socket connects to exactly the checked addresses,
so a second lookup cannot answer differently; deadline.py shuts a late exchange's socket.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError

from . import addresses, deadline


def _connect_checked(
    connection: HTTPConnection, connect: Callable[[], socket.socket]
) -> socket.socket:
    """Resolve the host once, refuse it when an address is in a refused network, and connect
    to the checked addresses in turn: never to an address a second lookup could return."""
    host = connection._dns_host
    try:
        found = addresses.checked_addresses(host, connection.port or 0)
    except socket.gaierror as exc:
        raise NameResolutionError(connection.host, connection, exc) from exc
    failure: NewConnectionError | None = None
    for address in found:
        connection._dns_host = address  # what urllib3 connects to; TLS still checks `host`
        try:
            return connect()
        except NewConnectionError as exc:
            failure = exc
        finally:
            connection._dns_host = host
    assert failure is not None
    raise failure


class _CheckedHTTPConnection(HTTPConnection):
    """Connects only to checked addresses, and its sockets end at the call's deadline."""

    def _new_conn(self) -> socket.socket:
        return _connect_checked(self, super()._new_conn)

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline.watch(self)  # whatever socket it has then: plain, TLS, new or reused
        super().request(*args, **kwargs)

    def getresponse(self) -> Any:
        # An answer with "Connection: close" takes the socket over and leaves self.sock None.
        deadline.watch(self.sock)
        return super().getresponse()


class _CheckedHTTPSConnection(_CheckedHTTPConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


POOLS = {"http": _HTTPPool, "https": _HTTPSPool}
