"""Parse and validate the Saviynt-shaped JSON documents into typed, frozen objects.

The documents (ConnectionJSON, CreateTicketJSON, TicketStatusJSON, ConfigJSON) come from
admins, imports and Saviynt exports, and Saviynt's own OTRS package is broken in several
ways (see shared/reference/saviynt-ticketing-json.md §8). Everything is checked here, once,
when a document is saved, so the call engine can trust what it gets. Every problem is
reported, not just the first, as `<Document>: <json.path>: <problem>`.

Here: which `${...}` names each call may use, the credential rules, how a call and each
document are put together, and `validate_documents`. The typed objects are in
`documents`, the reading of single fields (and ConfigJSON, which has no calls) in
`spec_fields`; both are below this module, never the other way round.

Nothing in a document is ever evaluated: `${...}` must be a plain variable name, and a
Groovy-style expression is refused with the expression named.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import addresses, context
from .documents import (
    HEADER_TOKEN_PREFIX,
    AuthSpec,
    BatchSpec,
    CallSpec,
    ConnectionSpec,
    CreateTicketSpec,
    Documents,
    MergeTargetSpec,
    StatusSpec,
    TestConnectionSpec,
)
from .masking import SECRET_KEY_NAMES
from .paths import is_valid_path, iter_references, iter_strings, join_path, split_default
from .spec_fields import (
    Report,
    check_nested_article,
    check_placeholders,
    check_state_lists,
    config_spec,
    http_headers,
    http_params,
    outcome_map,
    parse_document,
    response_rules,
    type_name,
)

DEFAULT_TOKEN_LIFETIME = 3000
URL_CREDENTIALS_ERROR = "credentials in a URL reach access logs; put them in the body"

# Query parameters that may never appear in a URL, whatever their value.
_URL_FORBIDDEN_PARAMS = SECRET_KEY_NAMES - {"sessionid", "authorization", "cookie"}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_NAME = re.compile(rf"{_NAME}(?:\.{_NAME})*")
_PATH_KEY = r"(?:[A-Za-z0-9_\-]|~dot#)+"
_RESPONSE_REF = re.compile(rf"response\.({_NAME})\.message((?:\.{_PATH_KEY}(?:\[-?\d+\])*)*)")
_CALL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


# --- errors ---------------------------------------------------------------------------------


class SpecError(ValueError):
    """One or more documents are invalid; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


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
    report: Report,
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


def _call(
    report: Report,
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
    properties = _properties_of(auths[connection]) if auths and connection in auths else None
    used: set[str] = set()
    for key, value in (("url", url), ("httpParams", params), ("httpHeaders", headers)):
        used |= _check_templates(
            report, value, join_path(where, key), scope, properties, connection
        )
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


def _properties_of(auth: Any) -> frozenset[str]:
    if isinstance(auth, dict) and isinstance(auth.get("properties"), dict):
        return frozenset(str(k) for k in auth["properties"])
    return frozenset()


# --- ConnectionJSON -------------------------------------------------------------------------


def _test_connection(
    report: Report, block: dict, where: str, name: str, auths: dict | None
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


def _token_response_path(report: Report, block: dict, where: str, required: bool) -> str:
    value = report.string(block, "tokenResponsePath", where, required=required)
    if value.startswith(HEADER_TOKEN_PREFIX):
        if not value[len(HEADER_TOKEN_PREFIX) :]:
            report.add(join_path(where, "tokenResponsePath"), "name the header after #HEADERS#")
        return value
    if value and not is_valid_path(value):
        report.add(join_path(where, "tokenResponsePath"), f"{value!r} is not a valid path")
    return value


def _auth_block(report: Report, name: str, block: Any, auths: dict | None) -> AuthSpec | None:
    where = f"authentications.{name}"
    if not isinstance(block, dict):
        report.add(where, f"must be an object, not {type_name(block)}")
        return None
    auth_type = report.string(block, "authType", where, required=True).lower()
    if auth_type and auth_type not in ("basic", "oauth2"):
        report.add(
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
        report.add(
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


def _connection_spec(report: Report, document: dict) -> ConnectionSpec:
    raw = document.get("authentications")
    if not isinstance(raw, dict) or not raw:
        report.add("authentications", "is required: an object of named auth blocks")
        return ConnectionSpec({})
    auths = {}
    for name, block in raw.items():
        spec = _auth_block(report, name, block, raw)
        if spec is not None:
            auths[name] = spec
    return ConnectionSpec(auths)


# --- CreateTicketJSON -----------------------------------------------------------------------


def _call_list(report: Report, document: dict) -> list[Any]:
    calls = document.get("call")
    if not isinstance(calls, list) or not calls:
        report.add("call", "is required: a list of call objects")
        return []
    return calls


def _top_level_path(report: Report, document: dict, key: str, names: list[str]) -> tuple[str, str]:
    """Saviynt's top-level form `call2.message.result.number` → ("call2", "result.number")."""
    value = report.string(document, key, "")
    if not value:
        return "", ""
    call_name, _, rest = value.partition(".message.")
    if call_name not in names or not rest or not is_valid_path(rest):
        report.add(
            key,
            f"{value!r} must read <call name>.message.<path>, naming one of: {', '.join(names)}",
        )
        return "", ""
    return call_name, rest


def _create_spec(report: Report, document: dict, auths: dict | None) -> CreateTicketSpec:
    calls: list[CallSpec] = []
    for index, raw in enumerate(_call_list(report, document)):
        scope = _Scope(_TASK_SCOPE.roots, _TASK_SCOPE.dotted, tuple(c.name for c in calls))
        call = _call(
            report, raw, f"call[{index}]", scope=scope, auths=auths, default_name=f"call{index + 1}"
        )
        if call is None:
            continue
        if call.name in [c.name for c in calls]:
            report.add(f"call[{index}].name", f"{call.name!r} is used by an earlier call")
        calls.append(call)
    names = [c.name for c in calls]
    id_call, id_path = _top_level_path(report, document, "ticketidPath", names)
    if not id_call:
        id_call, id_path = next(
            ((c.name, c.ticket_id_path) for c in reversed(calls) if c.ticket_id_path), ("", "")
        )
    if calls and not id_call:
        report.add(
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


def _check_search(report: Report, search: CallSpec, calls: list[CallSpec]) -> None:
    if not search.ticket_id_path:
        report.add("searchCall", "ticketidPath is required (e.g. TicketID[0])")
    if "correlationKey" not in search.variables:
        report.add(
            "searchCall",
            "must search for ${correlationKey}, or it could adopt another task's ticket",
        )
    if calls and not any("correlationKey" in c.variables for c in calls):
        report.add(
            "call", "no call sends ${correlationKey}, so searchCall could never find the ticket"
        )


# --- TicketStatusJSON -----------------------------------------------------------------------


def _batch(report: Report, call_obj: dict, where: str) -> BatchSpec | None:
    raw = report.mapping(call_obj, "batch", where)
    if not raw:
        return None
    at = join_path(where, "batch")
    return BatchSpec(
        size=report.integer(raw, "size", at, default=50, low=1, high=500),
        ticket_list_path=report.path(raw, "ticketListPath", at, required=True),
        ticket_id_path=report.path(raw, "ticketIdPath", at, required=True),
    )


def _merge_target(report: Report, document: dict, auths: dict | None) -> MergeTargetSpec | None:
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
        report.add(where, "must use ${ticketID}")
    pattern = report.string(raw, "targetPattern", where)
    if pattern:
        try:
            if re.compile(pattern).groups < 1:
                report.add(
                    join_path(where, "targetPattern"), "needs one (group) around the ticket id"
                )
        except re.error as exc:
            report.add(join_path(where, "targetPattern"), f"not a valid regular expression: {exc}")
    entry_match = report.mapping(raw, "entryMatch", where)
    return MergeTargetSpec(
        call=call,
        states=report.strings(raw, "states", where) or ("merged",),
        entry_list_path=report.path(raw, "entryListPath", where),
        entry_match=tuple(entry_match.items()),
        target_path=report.path(raw, "targetPath", where, required=True),
        target_pattern=pattern,
    )


def _status_spec(report: Report, document: dict, auths: dict | None) -> StatusSpec | None:
    calls = _call_list(report, document)
    if len(calls) > 1:
        report.add("call", "TicketStatusJSON takes exactly one call")
    if not calls or not isinstance(calls[0], dict):
        if calls:
            report.add("call[0]", "must be an object")
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
        report.add(where, f"the call must use ${{{needed}}}" + (" (batch mode)" if batch else ""))
    spec = StatusSpec(
        call=call,
        batch=batch,
        status_path=report.path(raw, "ticketStatusPath", where, required=True),
        done_values=report.strings(raw, "ticketStatusValue", where),
        discontinue_values=report.strings(raw, "disContinueStatusValue", where),
        status_map=outcome_map(report, raw, "statusMap", where),
        state_type_map=outcome_map(report, raw, "stateTypeMap", where),
        state_type_path=report.path(raw, "stateTypePath", where),
        ticket_number_path=report.path(raw, "ticketNumberPath", where),
        changed_path=report.path(raw, "changedPath", where),
        merge_target=_merge_target(report, document, auths),
    )
    check_state_lists(report, spec, where)
    return spec


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
    names = ("ConnectionJSON", "CreateTicketJSON", "TicketStatusJSON", "ConfigJSON")
    reports = {name: Report() for name in names}
    connection_doc = parse_document(reports["ConnectionJSON"], connection_json)
    create_doc = parse_document(reports["CreateTicketJSON"], create_ticket_json)
    status_doc = parse_document(reports["TicketStatusJSON"], ticket_status_json)
    config_doc = parse_document(reports["ConfigJSON"], config_json, optional=True)
    for name, document in zip(
        names, (connection_doc, create_doc, status_doc, config_doc), strict=True
    ):
        if document:
            check_placeholders(reports[name], document)

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
    config = config_spec(reports["ConfigJSON"], config_doc or {})
    # Each message starts with its document's name, the documents in this order.
    errors = [line for name, report in reports.items() for line in report.as_lines(name)]
    if errors or connection is None or create is None or status is None:
        raise SpecError(errors)
    return Documents(connection=connection, create=create, status=status, config=config)
