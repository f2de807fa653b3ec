"""How one call object of a document is read and checked: the `${...}` names it may use,
where credentials may not appear, and the CallSpec it becomes.

spec puts the documents together from these calls; this module knows nothing of any one
document beyond the scopes (which variables a kind of call gets).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import addresses, context
from .documents import CallSpec
from .masking import SECRET_KEY_NAMES
from .paths import iter_references, iter_strings, join_path, split_default
from .spec_fields import (
    Report,
    check_nested_article,
    http_headers,
    http_params,
    response_rules,
    type_name,
)

URL_CREDENTIALS_ERROR = "credentials in a URL reach access logs; put them in the body"

# Query parameters that may never appear in a URL, whatever their value.
_URL_FORBIDDEN_PARAMS = SECRET_KEY_NAMES - {"sessionid", "authorization", "cookie"}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_NAME = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_PATH_KEY = r"(?:[A-Za-z0-9_\-]|~dot#)+"
_RESPONSE_REF = re.compile(rf"response\.({_NAME})\.message((?:\.{_PATH_KEY}(?:\[-?\d+\])*)*)")
_CALL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


# --- variables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which `${...}` names a call may use, besides ${connection.X} from its auth block."""

    roots: frozenset[str]  # bare names, e.g. "requestor", "ticketID"
    # dotted names, e.g. "user.email"; "endpoint.*" admits any key below endpoint
    dotted: frozenset[str] = frozenset()
    earlier_calls: tuple[str, ...] = ()

    def describe(self, properties: frozenset[str]) -> str:
        names = sorted(self.roots | self.dotted)
        names += [f"connection.{p}" for p in sorted(properties)]
        if self.earlier_calls:
            names.append("response.<earlier call>.message.<path>")
        return ", ".join(f"${{{n}}}" for n in names)


# The task variables are declared in context.py, once for validation, preview and tasks.
TASK_SCOPE = Scope(
    roots=frozenset({*(n for n in context.NAMES if "." not in n), "access_token"}),
    dotted=frozenset(
        {*(n for n in context.NAMES if "." in n), *(f"{r}.*" for r in context.OPEN_NAMESPACES)}
    ),
)
AUTH_SCOPE = Scope(frozenset())
TEST_SCOPE = Scope(frozenset({"access_token"}))


def ticket_scope(*, batch: bool) -> Scope:
    return Scope(frozenset({"access_token", "ticketIDs" if batch else "ticketID"}))


def read_one_ticket_call(
    report: Report, obj: Any, where: str, *, auths: dict[str, Any] | None, default_name: str
) -> CallSpec | None:
    """A call about one ticket (its merge target, its closing article): it must name the
    ticket with `${ticketID}`."""
    call = read_call(
        report,
        obj,
        where,
        scope=ticket_scope(batch=False),
        auths=auths,
        default_name=default_name,
    )
    if call is not None and "ticketID" not in call.variables:
        report.add(where, "must use ${ticketID}")
    return call


def _check_reference(
    inner: str, scope: Scope, properties: frozenset[str] | None, auth_name: str
) -> str | None:
    """None when `${inner}` is allowed, else the problem. `properties` None: not checkable."""
    shown = f"${{{inner}}}"
    inner, default = split_default(inner)
    if default is not None:
        if any(c in default for c in "${}"):
            return f"{shown}: a default after | is plain text; it cannot hold $, {{ or }}"
        if inner.startswith("response."):
            return f"{shown}: a response value cannot have a default"
    response = _RESPONSE_REF.fullmatch(inner)
    if response:
        if response.group(1) in scope.earlier_calls:
            return None
        return f"{shown}: {response.group(1)} is not an earlier call of this document"
    if not _DOTTED_NAME.fullmatch(inner):
        return f"{shown} is an expression; only variable names are allowed"
    root, _, rest = inner.partition(".")
    if root == "connection" and rest:
        if properties is None or rest in properties:
            return None
        have = ", ".join(sorted(properties)) or "none"
        return f"{shown}: the auth block {auth_name!r} has no property {rest!r} (it has: {have})"
    if root == "response":
        return f"{shown}: write responses as ${{response.<call>.message.<path>}}"
    if (not rest and root in scope.roots) or (rest and {inner, f"{root}.*"} & scope.dotted):
        return None
    return (
        f"{shown}: unknown variable here; allowed are {scope.describe(properties or frozenset())}"
    )


def check_templates(
    report: Report,
    obj: Any,
    where: str,
    scope: Scope,
    properties: frozenset[str] | None,
    auth: str,
) -> set[str]:
    """Report each bad `${...}` under `obj`; return the names used."""
    used: set[str] = set()
    for path, text in iter_strings(obj, where):
        try:
            references = list(iter_references(text))
        except ValueError as exc:
            report.add(path, str(exc))
            continue
        for reference in references:
            problem = _check_reference(reference.inner, scope, properties, auth)
            if problem:
                report.add(path, problem)
            else:
                used.add(split_default(reference.inner)[0])
    return used


# --- credential and OTRS checks -------------------------------------------------------------


def _check_url(report: Report, url: str, method: str, where: str) -> None:
    """Refuse a URL the bridge must not connect to (addresses.url_problem: the scheme, a
    user:password@ part, a refused address), and credentials in its query string.

    One exception to the latter: `SessionID=${access_token}` on a GET. OTRS ignores GET
    bodies (bug#14203), so a GET can only authenticate in the query string; the session is
    short-lived and masked in every log of ours.
    """
    problem = addresses.url_problem(url)
    if problem:
        report.add(where, problem)
    try:
        query = urlsplit(url.replace("${", "{")).query
    except ValueError:
        if not problem:
            report.add(where, "is not a valid URL")
        return
    found = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        lower = key.lower()
        if lower == "sessionid" and method == "GET" and value.strip() == "{access_token}":
            continue
        if lower in _URL_FORBIDDEN_PARAMS or lower == "sessionid":
            found.append(f"{key}=")
    if not found:
        found = [
            f"${{connection.{prop}}}"
            for prop in re.findall(r"\$\{connection\.([^}]*)\}", url)
            if prop.lower() in SECRET_KEY_NAMES
        ]
    for what in found:
        report.add(where, f"{what} in the URL: {URL_CREDENTIALS_ERROR}")


def _literal_credentials(obj: Any, where: str) -> Iterator[tuple[str, str]]:
    """Yield (path, key) for each credential-like key whose value is a literal, not ${...}."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = join_path(where, key)
            literal = isinstance(value, str | int | float) and not isinstance(value, bool)
            if (
                str(key).lower() in SECRET_KEY_NAMES
                and literal
                and value != ""
                and "${" not in str(value)
            ):
                yield path, str(key)
            else:
                yield from _literal_credentials(value, path)
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _literal_credentials(value, join_path(where, index))


# --- calls ----------------------------------------------------------------------------------


def read_call(
    report: Report,
    obj: Any,
    where: str,
    *,
    scope: Scope,
    auths: dict[str, Any] | None,
    default_name: str = "",
    auth_name: str | None = None,
    stored_encrypted: bool = False,
) -> CallSpec | None:
    """Parse one call object. `auth_name` is given for calls that belong to an auth block."""
    if not isinstance(obj, dict):
        report.add(where, f"must be an object, not {type_name(obj)}")
        return None
    name = report.string(obj, "name", where) or default_name
    if "name" in obj and not _CALL_NAME.fullmatch(name):
        report.add(join_path(where, "name"), f"{name!r} must be letters, digits, _ or -")
    connection = auth_name or report.string(obj, "connection", where, required=True)
    if auth_name is None and connection and auths is not None and connection not in auths:
        have = ", ".join(sorted(auths)) or "none"
        report.add(
            join_path(where, "connection"),
            f"{connection!r} is not an auth block of ConnectionJSON (it has: {have})",
        )
    url = report.string(obj, "url", where, required=True)
    method = report.string(obj, "httpMethod", where, default="GET").upper()
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        report.add(
            join_path(where, "httpMethod"), f"{method!r} is not an HTTP method this engine sends"
        )
    params = http_params(report, obj.get("httpParams"), join_path(where, "httpParams"))
    if params is not None and method == "GET":
        report.add(
            join_path(where, "httpParams"),
            "a GET call cannot carry httpParams: OTRS ignores GET bodies; put the parameters in "
            "the URL query string",
        )
    headers = http_headers(report, obj, where)
    content_type = report.string(obj, "httpContentType", where, default="application/json")
    # Unknown auth block (reported above) or unreadable ConnectionJSON: any property goes.
    properties = properties_of(auths[connection]) if auths and connection in auths else None
    used: set[str] = set()
    for key, value in (("url", url), ("httpParams", params), ("httpHeaders", headers)):
        used |= check_templates(report, value, join_path(where, key), scope, properties, connection)
    _check_url(report, url, method, join_path(where, "url"))
    # ConnectionJSON encrypts secret-named keys at rest, except inside a JSON-string httpParams.
    encrypted = (
        SECRET_KEY_NAMES if stored_encrypted and not isinstance(obj.get("httpParams"), str) else ()
    )
    for path, key in _literal_credentials({"httpParams": params, "httpHeaders": headers}, where):
        if key.lower() not in encrypted:
            report.add(
                path,
                f"a literal {key} would be stored unencrypted; refer to it as "
                "${connection.<property>} or ${access_token}",
            )
    call = CallSpec(
        name=name,
        connection=connection,
        url=url,
        http_method=method,
        http_params=params,
        http_headers=headers,
        http_content_type=content_type,
        ticket_id_path=report.path(obj, "ticketidPath", where),
        ticket_number_path=report.path(obj, "ticketNumberPath", where),
        success=response_rules(
            report, obj.get("successResponses"), join_path(where, "successResponses")
        ),
        unsuccess=response_rules(
            report, obj.get("unsuccessResponses"), join_path(where, "unsuccessResponses")
        ),
        variables=frozenset(used),
    )
    check_nested_article(report, call, where)
    return call


def properties_of(auth: Any) -> frozenset[str]:
    if isinstance(auth, dict) and isinstance(auth.get("properties"), dict):
        return frozenset(str(k) for k in auth["properties"])
    return frozenset()
