"""Where the bridge may connect: http or https, no credentials in the URL, no refused network.

A connection's documents are written by admins and imported from files, so a URL could
point the bridge at `file://`, at a cloud metadata service (169.254.169.254) or carry
`user:password@` that every log and page would then show. The rules are here, once:

- `url_problem` judges a URL as written: the scheme, the userinfo, a host that is an
  address literal in any of the forms a resolver accepts (`[::ffff:169.254.169.254]`,
  `2852039166`, `0251.0376.0251.0376`). spec.py applies it when a document is saved or
  imported, client.py again to each rendered URL before it is sent.
- `checked_addresses` resolves a host name and refuses it when any address it resolves to
  lies in a refused network; client.py connects only to the addresses it returns, so a
  name cannot resolve one way for the check and another for the connection.

The refused networks are the setting OTRS_REFUSED_NETWORKS (link-local and the metadata
addresses by default). Private ranges and loopback stay allowed: OTRS usually lives there.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings

from .paths import find_placeholders

SCHEMES = ("http", "https")
SETTING = "OTRS_REFUSED_NETWORKS"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What inet_aton reads as an IPv4 address: dotted parts in decimal, octal (0…) or hex (0x…),
# fewer than four parts, or one number (2852039166). Resolvers accept all of them.
_LEGACY_IPV4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


class RefusedAddress(Exception):
    """A host resolves to an address in a refused network. Not an OSError on purpose:
    urllib3 and requests let it through unwrapped, so the client can say exactly why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@functools.cache
def _parse_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value)


def refused_networks() -> tuple[Network, ...]:
    """The networks of OTRS_REFUSED_NETWORKS (settings.py has already checked each entry)."""
    return _parse_networks(tuple(str(value) for value in getattr(settings, SETTING)))


def literal_address(host: str) -> Address | None:
    """The address a host spelled as an address means, in any form a resolver reads; else None."""
    host = host.strip("[]").split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0) is not the address
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def refused_network(address: Address) -> Network | None:
    """The refused network `address` is in; an IPv4-mapped IPv6 address counts as its IPv4."""
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    for network in refused_networks():
        if any(candidate in network for candidate in candidates):
            return network
    return None


def _refusal(host: str, address: Address, network: Network, *, resolved: bool = False) -> str:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None and mapped in network:
        address = mapped
    if host == str(address):
        shown = f"{host} is"
    else:
        shown = f"{host} {'resolves to' if resolved else 'means'} {address},"
    return (
        f"{shown} in the refused network {network}; the bridge does not connect there "
        f"(setting {SETTING}: link-local and cloud metadata addresses unless changed)"
    )


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as a place to connect to, or None. Never quotes the userinfo.

    A URL whose scheme or host is still a template is judged once it is filled in: an
    `@NAME@` package variable by the import (which validates again, and reports one left
    unfilled), a `${…}` by the client, which checks every rendered URL before sending it.
    """
    origin = re.match(r"[^/]*(?://[^/?#]*)?", url)
    if origin and ("${" in origin.group() or find_placeholders(origin.group())):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in SCHEMES:
        return "must start with http:// or https://; the bridge connects to nothing else"
    if "@" in parts.netloc:
        return (
            "holds a user name or password before the host (user:password@host); credentials "
            "in a URL reach access logs and pages: put them in the auth block's properties"
        )
    host = parts.hostname or ""
    if not host:
        return "names no host"
    address = literal_address(host)
    network = refused_network(address) if address is not None else None
    if address is not None and network is not None:
        return _refusal(host, address, network)
    return None


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order (tests point this elsewhere)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses to connect to for `host`; RefusedAddress when any is in a refused network.

    One refused address refuses the name: a name that also points at the metadata service
    is not one to trust with the others. socket.gaierror passes through unchanged.
    """
    found = resolve(host, port)
    for text in found:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        network = refused_network(address)
        if network is not None:
            raise RefusedAddress(_refusal(host, address, network, resolved=True))
    return found
