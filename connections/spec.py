"""Parse and validate the Saviynt-shaped JSON documents into typed, frozen objects.

The documents (ConnectionJSON, CreateTicketJSON, TicketStatusJSON, ConfigJSON) come from
admins, imports and Saviynt exports, and Saviynt's own OTRS package is broken in several
ways (see shared/reference/saviynt-ticketing-json.md §8). Everything is checked here, once,
when a document is saved, so the call engine can trust what it gets. Every problem is
reported, not just the first, as `<Document>: <json.path>: <problem>`.

Nothing in a document is ever evaluated: `${...}` must be a plain variable name, and a
Groovy-style expression is refused with the expression named.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import context
from .masking import SECRET_KEY_NAMES

OUTCOMES = ("completed", "discontinued", "failed", "pending", "open")
HEADER_TOKEN_PREFIX = "#HEADERS#"
DEFAULT_TOKEN_LIFETIME = 3000
URL_CREDENTIALS_ERROR = "credentials in a URL reach access logs; put them in the body"

# Query parameters that may never appear in a URL, whatever their value.
_URL_FORBIDDEN_PARAMS = SECRET_KEY_NAMES - {"sessionid", "authorization", "cookie"}

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_NAME = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_PATH_KEY = r"(?:[A-Za-z0-9_\-]|~dot#)+"
_RESPONSE_REF = re.compile(rf"response\.({_NAME})\.message((?:\.{_PATH_KEY}(?:\[-?\d+\])*)*)")
_CALL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_PATH_SEGMENT = re.compile(r"([^\[\]]*)((?:\[-?\d+\])*)")
_INDEX = re.compile(r"\[(-?\d+)\]")


# --- errors and paths ---------------------------------------------------------------------


class SpecError(ValueError):
    """One or more documents are invalid; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class PathNotFound(LookupError):
    """A JSON path does not lead to a value in the given data."""

    def __init__(self, path: str) -> None:
        super().__init__(f"nothing at path {path!r}")
        self.path = path


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[str | int, ...]:
    """Split `Ticket[0].State` or `odata~dot#error.code` into keys and list indexes.

    `~dot#` stands for a literal dot inside a key (Saviynt's convention). Raises ValueError
    for a path that is not of this shape.
    """
    if path == "":
        return ()
    steps: list[str | int] = []
    for raw in path.split("."):
        match = _PATH_SEGMENT.fullmatch(raw)
        if match is None or (match.group(1) == "" and not match.group(2)):
            raise ValueError(f"{path!r} is not a valid path (expected keys like a.b[0].c)")
        if match.group(1):
            steps.append(match.group(1).replace("~dot#", "."))
        steps.extend(int(i) for i in _INDEX.findall(match.group(2)))
    return tuple(steps)


def get_path(data: Any, path: str) -> Any:
    """Return the value at `path` in parsed JSON; raise PathNotFound when there is none."""
    node = data
    for step in parse_path(path):
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                raise PathNotFound(path)
        elif not isinstance(node, dict) or step not in node:
            raise PathNotFound(path)
        node = node[step]
    return node


def _is_valid_path(path: str) -> bool:
    try:
        parse_path(path)
    except ValueError:
        return False
    return True


# --- ${...} references and @NAME@ placeholders ----------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One `${...}` inside a string: where it starts and ends, and the text between the braces."""

    start: int
    end: int
    inner: str


def iter_references(text: str) -> Iterator[Reference]:
    """Yield each `${...}` in `text`, matching nested braces; raise ValueError if one never closes."""
    position = 0
    while (start := text.find("${", position)) != -1:
        depth = 0
        for index in range(start + 1, len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == 0:
                    yield Reference(start, index + 1, text[start + 2 : index])
                    position = index + 1
                    break
        else:
            raise ValueError(f"{text[start : start + 40]!r}: ${{ is never closed")


def iter_strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield (json.path, string) for every string value inside parsed JSON."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from iter_strings(value, join_path(path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from iter_strings(value, join_path(path, index))


def find_placeholders(obj: Any) -> set[str]:
    """The `@NAME@` placeholders (names without the @) left anywhere in a document."""
    return {name for _, text in iter_strings(obj) for name in _PLACEHOLDER.findall(text)}


def resolve_placeholders(obj: Any, values: dict[str, str]) -> Any:
    """Replace `@NAME@` by `values[NAME]` everywhere; unknown names stay for validation to report.

    An `httpParams` JSON string is parsed first and resolved inside, so a value holding a
    quote cannot break it; a string that does not parse is substituted as text, and
    validation then reports why it does not parse.
    """
    if isinstance(obj, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), obj)
    if isinstance(obj, list):
        return [resolve_placeholders(value, values) for value in obj]
    if isinstance(obj, dict):
        resolved = {}
        for key, value in obj.items():
            if key == "httpParams" and isinstance(value, str) and value.strip():
                try:
                    value = loads_strict(value)
                except ValueError:
                    pass
            resolved[key] = resolve_placeholders(value, values)
        return resolved
    return obj


# --- strict JSON ----------------------------------------------------------------------------


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def loads_strict(text: str) -> Any:
    """json.loads that refuses trailing data, duplicate keys and NaN/Infinity.

    Raises ValueError with a message like "not valid JSON at line 1 column 450 (extra data)".
    """
    try:
        return json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as exc:
        reason = exc.msg[:1].lower() + exc.msg[1:]
        raise ValueError(
            f"not valid JSON at line {exc.lineno} column {exc.colno} ({reason})"
        ) from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


# --- the typed documents --------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseRule:
    """One successResponses/unsuccessResponses entry: status codes and/or path → value matches."""

    status_codes: tuple[int, ...] = ()
    path_values: tuple[tuple[str, Any], ...] = ()

    def matches(self, status_code: int, body: Any) -> bool:
        if self.status_codes and status_code not in self.status_codes:
            return False
        for path, expected in self.path_values:
            try:
                actual = get_path(body, path)
            except PathNotFound:
                return False
            if actual != expected and str(actual) != str(expected):
                return False
        return True


@dataclass(frozen=True)
class CallSpec:
    """One HTTP call of a document, with its templates still unrendered."""

    name: str
    connection: str
    url: str
    http_method: str
    http_params: Any
    http_headers: dict[str, str]
    http_content_type: str
    ticket_id_path: str = ""
    ticket_number_path: str = ""
    success: tuple[ResponseRule, ...] = ()
    unsuccess: tuple[ResponseRule, ...] = ()
    variables: frozenset[str] = frozenset()

    def is_success(self, status_code: int, body: Any) -> bool:
        """No rules: any 2xx. Otherwise at least one rule must match."""
        if not self.success:
            return 200 <= status_code < 300
        return any(rule.matches(status_code, body) for rule in self.success)

    def is_unsuccess(self, status_code: int, body: Any) -> bool:
        return any(rule.matches(status_code, body) for rule in self.unsuccess)


@dataclass(frozen=True)
class TestConnectionSpec:
    """Saviynt's testConnectionParams: one call and how to judge its answer."""

    call: CallSpec
    success_values: tuple[str, ...]
    success_path: str
    errors: tuple[str, ...]
    error_path: str


@dataclass(frozen=True)
class AuthSpec:
    """One block of ConnectionJSON `authentications`. Holds credentials: never render it."""

    name: str
    auth_type: str  # "basic" or "oauth2"
    token_call: CallSpec | None
    token_response_path: str
    token_type: str
    auth_header_name: str
    expiry_errors: tuple[str, ...]
    auth_errors: tuple[str, ...]
    error_path: str
    retry_failure_status_codes: tuple[int, ...]
    max_refresh_try_count: int
    mask_in_logs: tuple[str, ...]
    token_lifetime_seconds: int
    test_connection: TestConnectionSpec | None
    properties: dict[str, Any] = field(repr=False, default_factory=dict)
    access_token: str = field(repr=False, default="")

    @property
    def refreshable(self) -> bool:
        """A token call exists, so an auth error can be healed by logging in again."""
        return self.token_call is not None

    @property
    def login_user(self) -> str:
        """The login name in `properties`, for messages ("logged in as bridge")."""
        for key, value in self.properties.items():
            if key.lower() in ("username", "userlogin", "user", "login"):
                return str(value)
        return ""


@dataclass(frozen=True)
class ConnectionSpec:
    auths: dict[str, AuthSpec]


@dataclass(frozen=True)
class CreateTicketSpec:
    """The create calls, where the ticket id (and number) come from, and the reconcile search."""

    calls: tuple[CallSpec, ...]
    ticket_id_call: str
    ticket_id_path: str
    ticket_number_call: str
    ticket_number_path: str
    search_call: CallSpec | None


@dataclass(frozen=True)
class BatchSpec:
    size: int
    ticket_list_path: str
    ticket_id_path: str


@dataclass(frozen=True)
class MergeTargetSpec:
    """How to learn which ticket a merged ticket was merged into.

    The call (with `${ticketID}`) returns e.g. OTRS's TicketHistory. If `entry_list_path` is
    set, the last entry of that list whose keys match `entry_match` is used; the value at
    `target_path` in it is the target id, or, with `target_pattern`, the regex group 1 of it.
    """

    call: CallSpec
    states: tuple[str, ...]
    entry_list_path: str
    entry_match: tuple[tuple[str, Any], ...]
    target_path: str
    target_pattern: str


@dataclass(frozen=True)
class StatusSpec:
    """The status call and what each OTRS state means for the task."""

    call: CallSpec
    batch: BatchSpec | None
    status_path: str
    done_values: tuple[str, ...]
    discontinue_values: tuple[str, ...]
    status_map: dict[str, str]
    state_type_map: dict[str, str]
    state_type_path: str
    ticket_number_path: str
    changed_path: str
    merge_target: MergeTargetSpec | None

    def outcome_for(self, state: str, state_type: str | None = None) -> str | None:
        """completed | discontinued | failed | pending | open, or None when the state is unmapped.

        State names are compared exactly (OTRS spells them lower-case). The state type is a
        fallback through `stateTypeMap`, for custom states of a known type.
        """
        if state in self.done_values:
            return "completed"
        if state in self.discontinue_values:
            return "discontinued"
        if state in self.status_map:
            return self.status_map[state]
        if state_type is not None:
            return self.state_type_map.get(state_type)
        return None


@dataclass(frozen=True)
class ConfigSpec:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retry_count: int = 2
    retry_wait: float = 0.5
    verify_tls: bool = True
    ca_bundle: str = ""


@dataclass(frozen=True)
class Documents:
    connection: ConnectionSpec
    create: CreateTicketSpec
    status: StatusSpec
    config: ConfigSpec


# --- reading helpers ------------------------------------------------------------------------


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Report:
    """Collects `<Document>: <path>: <problem>` messages for one document."""

    def __init__(self, document: str, errors: list[str]) -> None:
        self.document = document
        self.errors = errors

    def error(self, path: str, problem: str) -> None:
        self.errors.append(
            f"{self.document}: {path}: {problem}" if path else f"{self.document}: {problem}"
        )

    def string(
        self, obj: dict, key: str, where: str, *, required: bool = False, default: str = ""
    ) -> str:
        value = obj.get(key)
        if value is None or value == "":
            if required:
                self.error(where, f"{key} is required")
            return default
        if not isinstance(value, str):
            self.error(join_path(where, key), f"must be a string, not {_type_name(value)}")
            return default
        return value

    def path(self, obj: dict, key: str, where: str, *, required: bool = False) -> str:
        value = self.string(obj, key, where, required=required)
        if value and not _is_valid_path(value):
            self.error(
                join_path(where, key),
                f"{value!r} is not a valid path (expected keys like a.b[0].c)",
            )
            return ""
        return value

    def integer(self, obj: dict, key: str, where: str, *, default: int, low: int, high: int) -> int:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(join_path(where, key), f"must be a whole number, not {_type_name(value)}")
            return default
        if not low <= value <= high:
            self.error(join_path(where, key), f"must be between {low} and {high}, not {value}")
            return default
        return value

    def number(
        self, obj: dict, key: str, where: str, *, default: float, low: float, high: float
    ) -> float:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(join_path(where, key), f"must be a number, not {_type_name(value)}")
            return default
        if not low <= value <= high:
            self.error(
                join_path(where, key), f"must be between {low:g} and {high:g}, not {value:g}"
            )
            return default
        return float(value)

    def strings(self, obj: dict, key: str, where: str) -> tuple[str, ...]:
        """A string or a list of strings."""
        value = obj.get(key)
        if value is None or value == "":
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.error(join_path(where, key), "must be a string or a list of strings")
        return ()

    def integers(self, obj: dict, key: str, where: str, *, low: int, high: int) -> tuple[int, ...]:
        value = obj.get(key)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        if not all(
            not isinstance(v, bool) and isinstance(v, int) and low <= v <= high for v in items
        ):
            self.error(
                join_path(where, key), f"must be a list of whole numbers between {low} and {high}"
            )
            return ()
        return tuple(items)

    def mapping(self, obj: dict, key: str, where: str) -> dict:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(join_path(where, key), f"must be an object, not {_type_name(value)}")
            return {}
        return value


_TYPE_NAMES = {
    bool: "true/false",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _parse_document(
    report: _Report, value: dict | str | None, *, optional: bool = False
) -> dict | None:
    """A document given as a dict or as JSON text; anything else is reported."""
    if optional and value in (None, "", {}):
        return {}
    if value is None:
        report.error("", "is required")
        return None
    if isinstance(value, str):
        try:
            value = loads_strict(value)
        except ValueError as exc:
            report.error("", str(exc))
            return None
    if not isinstance(value, dict):
        report.error("", f"must be a JSON object, not {_type_name(value)}")
        return None
    return value


# --- variables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
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
_TASK_SCOPE = _Scope(
    roots=frozenset({*(n for n in context.NAMES if "." not in n), "access_token"}),
    dotted=frozenset(
        {*(n for n in context.NAMES if "." in n), *(f"{r}.*" for r in context.OPEN_NAMESPACES)}
    ),
)
_AUTH_SCOPE = _Scope(frozenset())
_TEST_SCOPE = _Scope(frozenset({"access_token"}))


def _ticket_scope(*, batch: bool) -> _Scope:
    return _Scope(frozenset({"access_token", "ticketIDs" if batch else "ticketID"}))


def split_default(inner: str) -> tuple[str, str | None]:
    """`endpoint.queue|Raw` → ("endpoint.queue", "Raw"): the text after the first `|` is
    used when the variable is missing or empty. No `|`: no default (None)."""
    name, bar, default = inner.partition("|")
    return (name, default) if bar else (inner, None)


def _check_reference(
    inner: str, scope: _Scope, properties: frozenset[str] | None, auth_name: str
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


def _check_templates(
    report: _Report,
    obj: Any,
    where: str,
    scope: _Scope,
    properties: frozenset[str] | None,
    auth: str,
) -> set[str]:
    """Report each bad `${...}` under `obj`; return the names used."""
    used: set[str] = set()
    for path, text in iter_strings(obj, where):
        try:
            references = list(iter_references(text))
        except ValueError as exc:
            report.error(path, str(exc))
            continue
        for reference in references:
            problem = _check_reference(reference.inner, scope, properties, auth)
            if problem:
                report.error(path, problem)
            else:
                used.add(split_default(reference.inner)[0])
    return used


def _check_placeholders(report: _Report, obj: Any) -> None:
    for path, text in iter_strings(obj):
        for name in sorted(set(_PLACEHOLDER.findall(text))):
            report.error(path, f"@{name}@ was never filled in; set it when importing the package")


# --- credential and OTRS checks -------------------------------------------------------------


def _check_url_credentials(report: _Report, url: str, method: str, where: str) -> None:
    """Refuse credentials in a query string.

    One exception: `SessionID=${access_token}` on a GET. OTRS ignores GET bodies (bug#14203),
    so a GET can only authenticate in the query string; the session is short-lived and
    masked in every log of ours.
    """
    query = urlsplit(url.replace("${", "{")).query
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
        report.error(where, f"{what} in the URL: {URL_CREDENTIALS_ERROR}")


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


# The state names of a fresh OTRS/Znuny; all lower-case.
OTRS_DEFAULT_STATES = frozenset(
    {
        "new",
        "open",
        "closed successful",
        "closed unsuccessful",
        "pending reminder",
        "pending auto close+",
        "pending auto close-",
        "removed",
        "merged",
    }
)


def _check_nested_article(report: _Report, call: CallSpec, where: str) -> None:
    """OTRS TicketCreate needs Ticket and Article side by side (Saviynt's package nests them)."""
    path = urlsplit(call.url).path
    params = call.http_params
    is_create = path.endswith(("/Ticket", "/TicketCreate"))
    if call.http_method != "POST" or not is_create or not isinstance(params, dict):
        return
    ticket = params.get("Ticket")
    if isinstance(ticket, dict) and "Article" in ticket and "Article" not in params:
        report.error(
            join_path(where, "httpParams.Ticket.Article"),
            "Article is nested inside Ticket; OTRS TicketCreate needs Ticket and Article side by "
            "side at the top level (it answers TicketCreate.MissingParameter otherwise)",
        )
    state = ticket.get("State") if isinstance(ticket, dict) else None
    if isinstance(state, str) and state != state.lower() and state.lower() in OTRS_DEFAULT_STATES:
        report.error(
            join_path(where, "httpParams.Ticket.State"),
            f"{state!r} is not an OTRS state name; OTRS spells it {state.lower()!r}",
        )


# --- calls ----------------------------------------------------------------------------------


def _response_rules(report: _Report, value: Any, where: str) -> tuple[ResponseRule, ...]:
    """`{"statusCode":[200]}`, `[{"Ticket[0].State":"x"}]` and mixes of both."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list) else [value]
    rules = []
    for index, item in enumerate(items):
        at = join_path(where, index) if isinstance(value, list) else where
        if not isinstance(item, dict):
            report.error(at, "must be an object of statusCode and/or path → value")
            continue
        codes = report.integers(item, "statusCode", at, low=100, high=599)
        matches = []
        for key, expected in item.items():
            if key == "statusCode":
                continue
            if not _is_valid_path(key):
                report.error(join_path(at, key), f"{key!r} is not a valid path")
            elif isinstance(expected, str) and "${" in expected:
                report.error(
                    join_path(at, key), f"{expected} cannot be used here; give the literal value"
                )
            else:
                matches.append((key, expected))
        rules.append(ResponseRule(codes, tuple(matches)))
    return tuple(rules)


def _http_params(report: _Report, value: Any, where: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return loads_strict(value)
        except ValueError as exc:
            report.error(where, str(exc))
            return None
    if not isinstance(value, dict | list):
        report.error(where, f"must be a JSON object or a JSON string, not {_type_name(value)}")
        return None
    return value


def _headers(report: _Report, obj: dict, where: str) -> dict[str, str]:
    headers = report.mapping(obj, "httpHeaders", where)
    clean = {}
    for key, value in headers.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            report.error(join_path(where, f"httpHeaders.{key}"), "a header value must be a string")
        else:
            clean[str(key)] = str(value)
    return clean


def _call(
    report: _Report,
    obj: Any,
    where: str,
    *,
    scope: _Scope,
    auths: dict[str, Any] | None,
    default_name: str = "",
    auth_name: str | None = None,
    stored_encrypted: bool = False,
) -> CallSpec | None:
    """Parse one call object. `auth_name` is given for calls that belong to an auth block."""
    if not isinstance(obj, dict):
        report.error(where, f"must be an object, not {_type_name(obj)}")
        return None
    name = report.string(obj, "name", where) or default_name
    if "name" in obj and not _CALL_NAME.fullmatch(name):
        report.error(join_path(where, "name"), f"{name!r} must be letters, digits, _ or -")
    connection = auth_name or report.string(obj, "connection", where, required=True)
    if auth_name is None and connection and auths is not None and connection not in auths:
        have = ", ".join(sorted(auths)) or "none"
        report.error(
            join_path(where, "connection"),
            f"{connection!r} is not an auth block of ConnectionJSON (it has: {have})",
        )
    url = report.string(obj, "url", where, required=True)
    method = report.string(obj, "httpMethod", where, default="GET").upper()
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        report.error(
            join_path(where, "httpMethod"), f"{method!r} is not an HTTP method this engine sends"
        )
    params = _http_params(report, obj.get("httpParams"), join_path(where, "httpParams"))
    if params is not None and method == "GET":
        report.error(
            join_path(where, "httpParams"),
            "a GET call cannot carry httpParams: OTRS ignores GET bodies; put the parameters in "
            "the URL query string",
        )
    headers = _headers(report, obj, where)
    content_type = report.string(obj, "httpContentType", where, default="application/json")
    # Unknown auth block (reported above) or unreadable ConnectionJSON: any property goes.
    properties = _properties_of(auths[connection]) if auths and connection in auths else None
    used: set[str] = set()
    for key, value in (("url", url), ("httpParams", params), ("httpHeaders", headers)):
        used |= _check_templates(
            report, value, join_path(where, key), scope, properties, connection
        )
    _check_url_credentials(report, url, method, join_path(where, "url"))
    # ConnectionJSON encrypts secret-named keys at rest, except inside a JSON-string httpParams.
    encrypted = (
        SECRET_KEY_NAMES if stored_encrypted and not isinstance(obj.get("httpParams"), str) else ()
    )
    for path, key in _literal_credentials({"httpParams": params, "httpHeaders": headers}, where):
        if key.lower() not in encrypted:
            report.error(
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
        success=_response_rules(
            report, obj.get("successResponses"), join_path(where, "successResponses")
        ),
        unsuccess=_response_rules(
            report, obj.get("unsuccessResponses"), join_path(where, "unsuccessResponses")
        ),
        variables=frozenset(used),
    )
    _check_nested_article(report, call, where)
    return call


def _properties_of(auth: Any) -> frozenset[str]:
    if isinstance(auth, dict) and isinstance(auth.get("properties"), dict):
        return frozenset(str(k) for k in auth["properties"])
    return frozenset()


# --- ConnectionJSON -------------------------------------------------------------------------


def _test_connection(
    report: _Report, block: dict, where: str, name: str, auths: dict | None
) -> TestConnectionSpec | None:
    params = report.mapping(block, "testConnectionParams", where)
    if not params:
        return None
    at = join_path(where, "testConnectionParams")
    call = _call(
        report,
        params.get("http"),
        join_path(at, "http"),
        scope=_TEST_SCOPE,
        auths=auths,
        default_name="testConnection",
        auth_name=name,
        stored_encrypted=True,
    )
    if call is None:
        return None
    return TestConnectionSpec(
        call=call,
        success_values=tuple(str(v) for v in params.get("successResponse") or ()),
        success_path=report.path(params, "successResponsePath", at),
        errors=report.strings(params, "errors", at),
        error_path=report.path(params, "errorPath", at),
    )


def _token_response_path(report: _Report, block: dict, where: str, required: bool) -> str:
    value = report.string(block, "tokenResponsePath", where, required=required)
    if value.startswith(HEADER_TOKEN_PREFIX):
        if not value[len(HEADER_TOKEN_PREFIX) :]:
            report.error(join_path(where, "tokenResponsePath"), "name the header after #HEADERS#")
        return value
    if value and not _is_valid_path(value):
        report.error(join_path(where, "tokenResponsePath"), f"{value!r} is not a valid path")
    return value


def _auth_block(report: _Report, name: str, block: Any, auths: dict | None) -> AuthSpec | None:
    where = f"authentications.{name}"
    if not isinstance(block, dict):
        report.error(where, f"must be an object, not {_type_name(block)}")
        return None
    auth_type = report.string(block, "authType", where, required=True).lower()
    if auth_type and auth_type not in ("basic", "oauth2"):
        report.error(
            join_path(where, "authType"),
            f"{block['authType']!r} is not supported; use Basic or oauth2 (a token call or a static accessToken)",
        )
    properties = report.mapping(block, "properties", where)
    token_call = None
    if auth_type == "oauth2" and block.get("url"):
        token_call = _call(
            report,
            {**block, "httpMethod": block.get("httpMethod") or "POST"},
            where,
            scope=_AUTH_SCOPE,
            auths=auths,
            default_name=f"token:{name}",
            auth_name=name,
            stored_encrypted=True,
        )
    access_token = block.get("accessToken") or ""
    if auth_type == "oauth2" and token_call is None and not access_token:
        report.error(
            where,
            "an oauth2 block needs a token call (url, tokenResponsePath) or a static accessToken",
        )
    return AuthSpec(
        name=name,
        auth_type=auth_type,
        token_call=token_call,
        token_response_path=_token_response_path(report, block, where, token_call is not None),
        token_type=report.string(block, "tokenType", where),
        auth_header_name=report.string(block, "authHeaderName", where),
        expiry_errors=report.strings(block, "expiryError", where),
        auth_errors=report.strings(block, "authError", where),
        error_path=report.path(block, "errorPath", where),
        retry_failure_status_codes=report.integers(
            block, "retryFailureStatusCode", where, low=100, high=599
        ),
        max_refresh_try_count=report.integer(
            block, "maxRefreshTryCount", where, default=3, low=0, high=10
        ),
        mask_in_logs=report.strings(block, "maskInLogs", where),
        token_lifetime_seconds=report.integer(
            block,
            "tokenLifetimeSeconds",
            where,
            default=DEFAULT_TOKEN_LIFETIME,
            low=120,
            high=7 * 86400,
        ),
        test_connection=_test_connection(report, block, where, name, auths),
        properties=properties,
        access_token=str(access_token),
    )


def _connection_spec(report: _Report, document: dict) -> ConnectionSpec:
    raw = document.get("authentications")
    if not isinstance(raw, dict) or not raw:
        report.error("authentications", "is required: an object of named auth blocks")
        return ConnectionSpec({})
    auths = {}
    for name, block in raw.items():
        spec = _auth_block(report, name, block, raw)
        if spec is not None:
            auths[name] = spec
    return ConnectionSpec(auths)


# --- CreateTicketJSON -----------------------------------------------------------------------


def _call_list(report: _Report, document: dict) -> list[Any]:
    calls = document.get("call")
    if not isinstance(calls, list) or not calls:
        report.error("call", "is required: a list of call objects")
        return []
    return calls


def _top_level_path(report: _Report, document: dict, key: str, names: list[str]) -> tuple[str, str]:
    """Saviynt's top-level form `call2.message.result.number` → ("call2", "result.number")."""
    value = report.string(document, key, "")
    if not value:
        return "", ""
    call_name, _, rest = value.partition(".message.")
    if call_name not in names or not rest or not _is_valid_path(rest):
        report.error(
            key,
            f"{value!r} must read <call name>.message.<path>, naming one of: {', '.join(names)}",
        )
        return "", ""
    return call_name, rest


def _create_spec(report: _Report, document: dict, auths: dict | None) -> CreateTicketSpec:
    calls: list[CallSpec] = []
    for index, raw in enumerate(_call_list(report, document)):
        scope = _Scope(_TASK_SCOPE.roots, _TASK_SCOPE.dotted, tuple(c.name for c in calls))
        call = _call(
            report, raw, f"call[{index}]", scope=scope, auths=auths, default_name=f"call{index + 1}"
        )
        if call is None:
            continue
        if call.name in [c.name for c in calls]:
            report.error(f"call[{index}].name", f"{call.name!r} is used by an earlier call")
        calls.append(call)
    names = [c.name for c in calls]
    id_call, id_path = _top_level_path(report, document, "ticketidPath", names)
    if not id_call:
        id_call, id_path = next(
            ((c.name, c.ticket_id_path) for c in reversed(calls) if c.ticket_id_path), ("", "")
        )
    if calls and not id_call:
        report.error(
            "",
            "ticketidPath is required: set it in the call whose response holds the ticket id, "
            "or at the top level as <call>.message.<path>",
        )
    number_call, number_path = _top_level_path(report, document, "ticketNumberPath", names)
    if not number_call:
        number_call, number_path = next(
            ((c.name, c.ticket_number_path) for c in reversed(calls) if c.ticket_number_path),
            ("", ""),
        )
    search = None
    if document.get("searchCall") is not None:
        search = _call(
            report,
            document["searchCall"],
            "searchCall",
            scope=_TASK_SCOPE,
            auths=auths,
            default_name="searchCall",
        )
    if search is not None:
        _check_search(report, search, calls)
    return CreateTicketSpec(tuple(calls), id_call, id_path, number_call, number_path, search)


def _check_search(report: _Report, search: CallSpec, calls: list[CallSpec]) -> None:
    if not search.ticket_id_path:
        report.error("searchCall", "ticketidPath is required (e.g. TicketID[0])")
    if "correlationKey" not in search.variables:
        report.error(
            "searchCall",
            "must search for ${correlationKey}, or it could adopt another task's ticket",
        )
    if calls and not any("correlationKey" in c.variables for c in calls):
        report.error(
            "call", "no call sends ${correlationKey}, so searchCall could never find the ticket"
        )


# --- TicketStatusJSON -----------------------------------------------------------------------


def _batch(report: _Report, call_obj: dict, where: str) -> BatchSpec | None:
    raw = report.mapping(call_obj, "batch", where)
    if not raw:
        return None
    at = join_path(where, "batch")
    return BatchSpec(
        size=report.integer(raw, "size", at, default=50, low=1, high=500),
        ticket_list_path=report.path(raw, "ticketListPath", at, required=True),
        ticket_id_path=report.path(raw, "ticketIdPath", at, required=True),
    )


def _outcome_map(report: _Report, call_obj: dict, key: str, where: str) -> dict[str, str]:
    raw = report.mapping(call_obj, key, where)
    result = {}
    for state, outcome in raw.items():
        if outcome not in OUTCOMES:
            report.error(
                join_path(join_path(where, key), state),
                f"{outcome!r} is not an outcome; use one of {', '.join(OUTCOMES)}",
            )
        else:
            result[state] = outcome
    return result


def _check_state_lists(report: _Report, spec: StatusSpec, where: str) -> None:
    for state in set(spec.done_values) & set(spec.discontinue_values):
        report.error(where, f"{state!r} is in both ticketStatusValue and disContinueStatusValue")
    for state, outcome in spec.status_map.items():
        listed = spec.outcome_for(state)
        if listed != outcome:
            report.error(
                join_path(where, f"statusMap.{state}"),
                f"says {outcome!r} but the state lists say {listed!r}",
            )
    outcomes = {spec.outcome_for(s) for s in (*spec.done_values, *spec.status_map)}
    if "completed" not in outcomes | set(spec.state_type_map.values()):
        report.error(
            where, 'no state means completed; set ticketStatusValue (e.g. ["closed successful"])'
        )


def _merge_target(report: _Report, document: dict, auths: dict | None) -> MergeTargetSpec | None:
    raw = document.get("mergeTargetCall")
    if raw is None:
        return None
    where = "mergeTargetCall"
    call = _call(
        report,
        raw,
        where,
        scope=_ticket_scope(batch=False),
        auths=auths,
        default_name="mergeTarget",
    )
    if call is None:
        return None
    if "ticketID" not in call.variables:
        report.error(where, "must use ${ticketID}")
    pattern = report.string(raw, "targetPattern", where)
    if pattern:
        try:
            if re.compile(pattern).groups < 1:
                report.error(
                    join_path(where, "targetPattern"), "needs one (group) around the ticket id"
                )
        except re.error as exc:
            report.error(
                join_path(where, "targetPattern"), f"not a valid regular expression: {exc}"
            )
    entry_match = report.mapping(raw, "entryMatch", where)
    return MergeTargetSpec(
        call=call,
        states=report.strings(raw, "states", where) or ("merged",),
        entry_list_path=report.path(raw, "entryListPath", where),
        entry_match=tuple(entry_match.items()),
        target_path=report.path(raw, "targetPath", where, required=True),
        target_pattern=pattern,
    )


def _status_spec(report: _Report, document: dict, auths: dict | None) -> StatusSpec | None:
    calls = _call_list(report, document)
    if len(calls) > 1:
        report.error("call", "TicketStatusJSON takes exactly one call")
    if not calls or not isinstance(calls[0], dict):
        if calls:
            report.error("call[0]", "must be an object")
        return None
    raw, where = calls[0], "call[0]"
    batch = _batch(report, raw, where)
    call = _call(
        report,
        raw,
        where,
        scope=_ticket_scope(batch=batch is not None),
        auths=auths,
        default_name="call1",
    )
    if call is None:
        return None
    needed = "ticketIDs" if batch else "ticketID"
    if needed not in call.variables:
        report.error(where, f"the call must use ${{{needed}}}" + (" (batch mode)" if batch else ""))
    spec = StatusSpec(
        call=call,
        batch=batch,
        status_path=report.path(raw, "ticketStatusPath", where, required=True),
        done_values=report.strings(raw, "ticketStatusValue", where),
        discontinue_values=report.strings(raw, "disContinueStatusValue", where),
        status_map=_outcome_map(report, raw, "statusMap", where),
        state_type_map=_outcome_map(report, raw, "stateTypeMap", where),
        state_type_path=report.path(raw, "stateTypePath", where),
        ticket_number_path=report.path(raw, "ticketNumberPath", where),
        changed_path=report.path(raw, "changedPath", where),
        merge_target=_merge_target(report, document, auths),
    )
    _check_state_lists(report, spec, where)
    return spec


# --- ConfigJSON -----------------------------------------------------------------------------


def _config_spec(report: _Report, document: dict) -> ConfigSpec:
    """Our flat keys, or Saviynt's {"connectionTimeoutConfig": {...}} (seconds)."""
    where = ""
    if isinstance(document.get("connectionTimeoutConfig"), dict):
        document = {**document["connectionTimeoutConfig"], **document}
        document.setdefault("connectTimeout", document.get("connectionTimeout", 10))
        where = "connectionTimeoutConfig"
    ca_bundle = report.string(document, "caBundle", where)
    verify = document.get("verifyTLS", True)
    if not isinstance(verify, bool):
        report.error(join_path(where, "verifyTLS"), "must be true or false")
        verify = True
    return ConfigSpec(
        connect_timeout=report.number(
            document, "connectTimeout", where, default=10, low=0.1, high=300
        ),
        read_timeout=report.number(document, "readTimeout", where, default=30, low=0.1, high=600),
        retry_count=report.integer(document, "retryCount", where, default=2, low=0, high=5),
        retry_wait=report.number(document, "retryWait", where, default=0.5, low=0, high=60),
        verify_tls=verify,
        ca_bundle=ca_bundle,
    )


# --- entry point ----------------------------------------------------------------------------


def validate_documents(
    *,
    connection_json: dict | str,
    create_ticket_json: dict | str,
    ticket_status_json: dict | str,
    config_json: dict | str | None = None,
) -> Documents:
    """Parse all four documents and check them against each other.

    Raises SpecError listing every problem found in any of them.
    """
    errors: list[str] = []
    names = ("ConnectionJSON", "CreateTicketJSON", "TicketStatusJSON", "ConfigJSON")
    reports = {name: _Report(name, errors) for name in names}
    connection_doc = _parse_document(reports["ConnectionJSON"], connection_json)
    create_doc = _parse_document(reports["CreateTicketJSON"], create_ticket_json)
    status_doc = _parse_document(reports["TicketStatusJSON"], ticket_status_json)
    config_doc = _parse_document(reports["ConfigJSON"], config_json, optional=True)
    for name, document in zip(
        names, (connection_doc, create_doc, status_doc, config_doc), strict=True
    ):
        if document:
            _check_placeholders(reports[name], document)

    connection = (
        _connection_spec(reports["ConnectionJSON"], connection_doc)
        if connection_doc is not None
        else None
    )
    # Without readable auth blocks (already reported), calls cannot be checked against them.
    raw_auths = (connection_doc or {}).get("authentications")
    auths = raw_auths if isinstance(raw_auths, dict) and raw_auths else None
    create = (
        _create_spec(reports["CreateTicketJSON"], create_doc, auths)
        if create_doc is not None
        else None
    )
    status = (
        _status_spec(reports["TicketStatusJSON"], status_doc, auths)
        if status_doc is not None
        else None
    )
    config = _config_spec(reports["ConfigJSON"], config_doc or {})
    if errors or connection is None or create is None or status is None:
        raise SpecError(sorted(errors, key=lambda e: names.index(e.partition(":")[0])))
    return Documents(connection=connection, create=create, status=status, config=config)
