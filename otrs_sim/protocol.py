"""The HTTP::REST provider transport of Znuny, reduced to pure functions.

Everything here mirrors Kernel/GenericInterface/Transport/HTTP/REST.pm as described
in the reference (§1-§3): how the route is cut out of the URI, how operations are
matched, how query string, route captures and the JSON body are merged, and how
responses are framed.  The quirks are deliberate - clients must survive them.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote, unquote_to_bytes

# (operation, method, route) of the Znuny GenericTicketConnectorREST.yml.
# Sorted by operation name because REST.pm tries operations alphabetically.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("SessionCreate", "POST", "/Session"),
    ("SessionGet", "GET", "/Session/:SessionID"),
    ("TicketCreate", "POST", "/Ticket"),
    ("TicketGet", "GET", "/Ticket/:TicketID"),
    ("TicketGetList", "GET", "/TicketList"),
    ("TicketHistoryGet", "GET", "/TicketHistory/:TicketID"),
    ("TicketSearch", "GET", "/Ticket"),
    ("TicketUpdate", "PATCH", "/Ticket/:TicketID"),
)

OPERATIONS: tuple[str, ...] = tuple(op for op, _method, _route in ROUTES)


def _route_regex(route: str) -> re.Pattern:
    """``/Ticket/:TicketID`` -> ``^/Ticket/(?P<TicketID>[^/]+)$`` (REST.pm does the same)."""
    pattern = re.sub(r":([^/]+)", lambda m: f"(?P<{m.group(1)}>[^/]+)", route)
    return re.compile(r"\A" + pattern + r"\Z")


_COMPILED = tuple((op, method, _route_regex(route)) for op, method, route in ROUTES)

JSON_CT = "application/json; charset=UTF-8"
TEXT_CT = "text/plain; charset=UTF-8"

# What Apache prints when the nph script produces nothing usable (unknown web
# service, or the backend dies).  Our own wording in Apache's style, ~650 bytes.
APACHE_500_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN">\n'
    "<html><head>\n"
    "<title>500 Internal Server Error</title>\n"
    "</head><body>\n"
    "<h1>Internal Server Error</h1>\n"
    "<p>The server encountered an internal error or\n"
    "misconfiguration and was unable to complete\n"
    "your request.</p>\n"
    "<p>Please contact the server administrator at \n"
    " webmaster@localhost to inform them of the time this error occurred,\n"
    " and the actions you performed just before this error.</p>\n"
    "<p>More information about this error may be available\n"
    "in the server error log.</p>\n"
    "<hr>\n"
    "<address>Apache/2.4.57 (Debian) Server at localhost Port 80</address>\n"
    "</body></html>\n"
).encode("ascii")


def dump_json(data) -> bytes:
    """Compact, key-sorted UTF-8 JSON, as Znuny 6.5 emits it."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(
        "utf-8"
    )


def perl_true(value) -> bool:
    """Perl truthiness, which every ``if (!$Param{Data}->{X})`` check in Znuny uses.

    Strings ``""`` and ``"0"`` and the numbers 0 are false; references (dicts and
    lists, even empty ones) are true.
    """
    if value is None or value is False:
        return False
    if isinstance(value, (dict, list)):
        return True
    if isinstance(value, (int, float)):
        return value != 0
    return str(value) not in ("", "0")


def as_list(value) -> list:
    """A parameter given once, repeated (query string) or as a JSON array, as a list;
    an absent one is the empty list."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _uri_unescape(text: str) -> str:
    """URI::Escape::uri_unescape: %XX only, no ``+`` handling; bytes decoded as UTF-8."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", errors="replace")


def parse_query(query: str) -> dict:
    """Parse a query string exactly like REST.pm.

    Split on ``&`` or ``;``; only the text between the first and second ``=`` is the
    value; ``+`` becomes a space in values (not keys); a first value of ``0`` or
    nothing is stored as ``""``; a repeated key becomes a list (later values are
    kept verbatim).
    """
    params: dict = {}
    if not query:
        return params
    for pair in re.split(r"[&;]", query):
        parts = pair.split("=")
        # Perl's split drops trailing empty fields, so "a=" has no value at all.
        while len(parts) > 1 and parts[-1] == "":
            parts.pop()
        key = _uri_unescape(parts[0])
        value = parts[1] if len(parts) > 1 else None
        if value is not None:
            value = _uri_unescape(value.replace("+", "%20"))
        if key not in params:
            params[key] = value if perl_true(value) else ""
        elif isinstance(params[key], list):
            params[key].append("" if value is None else value)
        else:
            params[key] = [params[key], "" if value is None else value]
    return params


def route_path(path: str) -> str:
    """The route part of a provider URI (path without query string).

    REST.pm strips everything up to and including ``Webservice[ID]/<name>``; if
    nothing follows the name the whole URI stays (and then matches no route).
    """
    match = re.match(r"^.*Webservice(?:ID)?/[^/]+(/.*)$", path, re.S)
    return match.group(1) if match else path


def match_route(method: str, route: str) -> tuple[str | None, dict]:
    """Find the operation for ``method`` + ``route``: first alphabetical match wins.

    Returns (operation or None, route captures URI-unescaped).
    """
    for op, op_method, regex in _COMPILED:
        if op_method != method:
            continue
        found = regex.match(route)
        if found:
            return op, {k: _uri_unescape(v) for k, v in found.groupdict().items()}
    return None, {}


def no_route_message(route: str) -> str:
    return f"HTTP::REST Error while determine Operation for request URI '{route}'."


class BodyError(Exception):
    """A transport-level failure while reading the request body (HTTP status + text)."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


def _charset(content_type: str | None) -> str:
    if content_type:
        found = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", content_type, re.I)
        if found:
            return found.group(1)
    return "utf-8"


def is_form(content_type: str | None) -> bool:
    """A body CGI.pm parses as a form (and so consumes) before the transport reads it:
    one without a Content-Type, or one of the two form types spelled in lower case
    (Znuny 6.5.10 reads "Application/X-WWW-Form-Urlencoded" as JSON)."""
    kind = (content_type or "").strip()
    return not kind or kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def decode_body(raw: bytes, content_type: str | None):
    """Decode a request body as REST.pm does; raise BodyError on failure.

    Perl treats a decoded false value (``null``, ``false``, ``0``, ``""``) as a
    decoding failure; an empty object/array or a scalar is an unsupported structure.
    """
    try:
        text = raw.decode(_charset(content_type))
    except (LookupError, UnicodeDecodeError):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError(500, "Error while decoding request content.") from None
    try:
        decoded = json.loads(text)
    except ValueError:
        raise BodyError(500, "Error while decoding request content.") from None
    if not isinstance(decoded, (dict, list)) and not perl_true(decoded):
        raise BodyError(500, "Error while decoding request content.")
    if isinstance(decoded, (dict, list)) and decoded:
        return decoded
    raise BodyError(500, "Unsupported request content structure.")


def merge_params(url_params: dict, body) -> dict:
    """URL parameters (query + route) win over the body; an array body is wrapped."""
    if isinstance(body, dict):
        merged = dict(body)
        merged.update(url_params)
        return merged
    items = []
    for item in body:
        if isinstance(item, dict) and item:
            item = {**item, **url_params}
        items.append(item)
    return {"Data": items}


def split_alias_path(path: str) -> tuple[str, str] | None:
    """``/otrs/nph-genericinterface.pl/...`` -> (alias, rest) for both aliases."""
    for alias in ("otrs", "znuny"):
        prefix = f"/{alias}/nph-genericinterface.pl"
        if path == prefix or path.startswith(prefix + "/"):
            return alias, path[len(prefix) :]
    return None


def webservice_of(rest: str) -> tuple[str, str] | None:
    """``/Webservice/<Name>/...`` or ``/WebserviceID/<n>/...`` -> (kind, value)."""
    match = re.match(r"^/(Webservice|WebserviceID)/([^/]+)", rest)
    if not match:
        return None
    return match.group(1), unquote(match.group(2))
