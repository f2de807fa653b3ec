"""Parse and validate the Saviynt-shaped JSON documents into typed, frozen objects.

The documents (ConnectionJSON, CreateTicketJSON, TicketStatusJSON, ConfigJSON) come from
admins, imports and Saviynt exports, and Saviynt's own OTRS package is broken in several
ways (see shared/reference/saviynt-ticketing-json.md §8). Everything is checked here, once,
when a document is saved, so the call engine can trust what it gets. Every problem is
reported, not just the first, as `<Document>: <json.path>: <problem>`.

Here: how each document is put together from its calls, and `validate_documents`. The
typed objects are in `documents`, the reading of one call (the `${...}` names it may use,
the credential rules) in `spec_calls`, the reading of single fields (and ConfigJSON,
which has no calls) in `spec_fields`; all are below this module, never the other way round.

Nothing in a document is ever evaluated: `${...}` must be a plain variable name, and a
Groovy-style expression is refused with the expression named.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .documents import (
    HEADER_TOKEN_PREFIX,
    AuthSpec,
    BatchSpec,
    CallSpec,
    ChangeSearchSpec,
    ConnectionSpec,
    CreateTicketSpec,
    Documents,
    KeyCheckSpec,
    MergeTargetSpec,
    SearchSpec,
    StatusSpec,
    TestConnectionSpec,
)
from .paths import is_valid_path, iter_references, iter_strings, join_path, split_default
from .spec_calls import (
    AUTH_SCOPE,
    TASK_SCOPE,
    TEST_SCOPE,
    Scope,
    read_call,
    read_one_ticket_call,
    ticket_scope,
)
from .spec_conversation import closing_article_spec, update_spec
from .spec_fields import (
    Report,
    check_placeholders,
    check_state_lists,
    config_spec,
    outcome_map,
    parse_document,
    type_name,
)

DEFAULT_TOKEN_LIFETIME = 3000
# Where a ticket of OTRS TicketGet carries the key when no keyCheckCall says: its title.
DEFAULT_KEY_PATH = "Title"
# Znuny's dynamic field names: letters and digits (AdminDynamicField refuses anything else).
_DYNAMIC_FIELD_NAME = re.compile(r"[A-Za-z0-9]+")


# --- errors ---------------------------------------------------------------------------------


class SpecError(ValueError):
    """One or more documents are invalid; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- ConnectionJSON -------------------------------------------------------------------------


def _test_connection(
    report: Report, block: dict, where: str, name: str, auths: dict | None
) -> TestConnectionSpec | None:
    params = report.mapping(block, "testConnectionParams", where)
    if not params:
        return None
    at = join_path(where, "testConnectionParams")
    call = read_call(
        report,
        params.get("http"),
        join_path(at, "http"),
        scope=TEST_SCOPE,
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
        token_call = read_call(
            report,
            {**block, "httpMethod": block.get("httpMethod") or "POST"},
            where,
            scope=AUTH_SCOPE,
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
        scope = Scope(TASK_SCOPE.roots, TASK_SCOPE.dotted, tuple(c.name for c in calls))
        call = read_call(
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
    key_field, calls = _key_field(report, document, calls, id_call)
    searches = _searches(report, document, auths)
    key_check = _key_check(report, document, auths, key_field)
    if key_field and key_check is None:
        report.add(
            "keyField",
            "needs a keyCheckCall that reads the dynamic fields, or the field proves nothing",
        )
    if searches and calls and not any("correlationKey" in c.variables for c in calls):
        report.add(
            "call", "no call sends ${correlationKey}, so searchCall could never find the ticket"
        )
    return CreateTicketSpec(
        tuple(calls),
        id_call,
        id_path,
        number_call,
        number_path,
        searches=searches,
        key_check=key_check,
        key_field=key_field,
    )


def _key_field(
    report: Report, document: dict, calls: list[CallSpec], id_call: str
) -> tuple[str, list[CallSpec]]:
    """keyField: the ticket dynamic field that keeps the key where agents do not edit it.

    The call that returns the ticket id (OTRS TicketCreate) gets it in its `DynamicField`
    list, so every create sends it and the preview shows it.
    """
    name = report.string(document, "keyField", "")
    if not name:
        return "", calls
    if not _DYNAMIC_FIELD_NAME.fullmatch(name):
        report.add("keyField", f"{name!r} is not a dynamic field name (letters and digits only)")
        return "", calls
    target = next((c for c in calls if c.name == id_call), None)
    if target is None:
        return name, calls  # no ticket id call: reported already
    params = target.http_params
    given = params.get("DynamicField") if isinstance(params, dict) else None
    items = [given] if isinstance(given, dict) else given if given is not None else []
    if not isinstance(params, dict) or not isinstance(items, list):
        report.add(
            "keyField",
            f"the call {id_call} needs a JSON object body with a DynamicField list to carry it",
        )
        return name, calls
    if not any(isinstance(i, dict) and i.get("Name") == name for i in items):
        items = [*items, {"Name": name, "Value": "${correlationKey}"}]
    sent = replace(
        target,
        http_params={**params, "DynamicField": items},
        variables=target.variables | {"correlationKey"},
    )
    return name, [sent if c is target else c for c in calls]


def _searches(report: Report, document: dict, auths: dict | None) -> tuple[SearchSpec, ...]:
    """searchCall: one call object, or a list of them tried in turn (one per place the
    key can be found by)."""
    raw = document.get("searchCall")
    if raw is None:
        return ()
    if isinstance(raw, list):
        items = [(item, f"searchCall[{i}]", f"searchCall{i + 1}") for i, item in enumerate(raw)]
        if not items:
            report.add("searchCall", "is an empty list; leave it out to never search")
    else:
        items = [(raw, "searchCall", "searchCall")]
    searches = []
    for item, where, name in items:
        call = read_call(report, item, where, scope=TASK_SCOPE, auths=auths, default_name=name)
        if call is None:
            continue
        search = SearchSpec(call, report.path(item, "ticketListPath", where))
        _check_search(report, search, where)
        searches.append(search)
    return tuple(searches)


def _check_search(report: Report, search: SearchSpec, where: str) -> None:
    """A search must filter by the key itself, in a place OTRS reads."""
    call = search.call
    if not call.ticket_id_path and not search.ticket_list_path:
        report.add(
            where,
            "ticketListPath (the list of hits, e.g. TicketID) or ticketidPath (one hit, "
            "e.g. TicketID[0]) is required",
        )
    if "correlationKey" not in call.variables:
        report.add(
            where, "must search for ${correlationKey}, or it could adopt another task's ticket"
        )
        return
    for path, text in iter_strings({"url": call.url, "httpParams": call.http_params}, where):
        for reference in iter_references(text):
            name, default = split_default(reference.inner)
            if name == "correlationKey" and default is not None:
                report.add(
                    path,
                    f"${{{reference.inner}}}: a search needs the key itself; with a default it "
                    "would search without one",
                )
    if call.http_method != "GET":
        return
    in_query = [
        key
        for key, value in parse_qsl(urlsplit(call.url).query, keep_blank_values=True)
        if "${correlationKey" in value
    ]
    if not in_query:
        report.add(
            join_path(where, "url"),
            "a GET search must carry ${correlationKey} in the query string (OTRS reads no GET "
            "body and no header as a filter)",
        )
    for key in in_query:
        if key.lower().startswith("dynamicfield"):
            report.add(
                join_path(where, "url"),
                f"{key}=: OTRS ignores a dynamic field filter in a GET query string (its "
                "TicketSearch wants a hash there) and would answer with every ticket; search "
                "by Fulltext (the title and the articles) instead",
            )


def _key_check(
    report: Report, document: dict, auths: dict | None, key_field: str
) -> KeyCheckSpec | None:
    raw = document.get("keyCheckCall")
    if raw is None:
        return None
    where = "keyCheckCall"
    call = read_call(
        report, raw, where, scope=ticket_scope(batch=True), auths=auths, default_name="keyCheck"
    )
    if call is None:
        return None
    if "ticketIDs" not in call.variables:
        report.add(where, "must use ${ticketIDs}: the hits, read in one call")
    key_paths = report.strings(raw, "keyPaths", where)
    if not key_paths:
        report.add(where, "keyPaths is required: where a ticket carries the key (e.g. Title)")
    for index, path in enumerate(key_paths):
        if not is_valid_path(path):
            report.add(
                join_path(join_path(where, "keyPaths"), index), f"{path!r} is not a valid path"
            )
    if key_field and "DynamicFields=1" not in call.url:
        report.add(
            join_path(where, "url"),
            f"add DynamicFields=1: without it OTRS TicketGet leaves out keyField {key_field}, "
            "the one place agents do not edit",
        )
    return KeyCheckSpec(
        call=call,
        ticket_list_path=report.path(raw, "ticketListPath", where, required=True),
        ticket_id_path=report.path(raw, "ticketIdPath", where, required=True),
        key_paths=tuple(p for p in key_paths if is_valid_path(p)),
    )


def _default_key_check(
    report: Report, create: CreateTicketSpec, status: StatusSpec
) -> CreateTicketSpec:
    """Documents written before keyCheckCall: the batched status call reads the hits, and
    a hit is proven by its title, where such documents put the key."""
    if not create.searches or create.key_check is not None:
        return create
    if status.batch is None:
        report.add(
            "searchCall",
            "needs keyCheckCall: a call that reads the tickets found, so a hit is adopted only "
            "when it carries ${correlationKey} (the status call reads one ticket per call, so "
            "it cannot stand in)",
        )
        return create
    check = KeyCheckSpec(
        call=status.call,
        ticket_list_path=status.batch.ticket_list_path,
        ticket_id_path=status.batch.ticket_id_path,
        key_paths=(DEFAULT_KEY_PATH,),
    )
    return replace(create, key_check=check)


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
    call = read_one_ticket_call(report, raw, where, auths=auths, default_name="mergeTarget")
    if call is None:
        return None
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


def _change_search(report: Report, document: dict, auths: dict | None) -> ChangeSearchSpec | None:
    raw = document.get("changeSearchCall")
    if raw is None:
        return None
    where = "changeSearchCall"
    scope = Scope(frozenset({"access_token", "changedSince", "changedMinutes", "limit"}))
    call = read_call(report, raw, where, scope=scope, auths=auths, default_name="changeSearch")
    if call is None:
        return None
    if not {"changedSince", "changedMinutes"} & call.variables:
        report.add(
            where,
            "must use ${changedMinutes} or ${changedSince}, or it answers with every ticket, "
            "changed or not",
        )
    time_zone = report.string(raw, "timeZone", where, default="UTC")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        report.add(
            join_path(where, "timeZone"),
            f"{time_zone!r} is not a time zone name (e.g. UTC or Europe/Berlin): OTRS's "
            "OTRSTimeZone, in which it reads ${changedSince}",
        )
        time_zone = "UTC"
    return ChangeSearchSpec(
        call=call,
        ticket_list_path=report.path(raw, "ticketListPath", where, required=True),
        limit=report.integer(raw, "limit", where, default=500, low=1, high=100_000),
        overlap_seconds=report.integer(raw, "overlapSeconds", where, default=120, low=0, high=3600),
        time_zone=time_zone,
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
    call = read_call(
        report,
        raw,
        where,
        scope=ticket_scope(batch=batch is not None),
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
        change_search=_change_search(report, document, auths),
        update=update_spec(report, document, auths),
        closing_article=closing_article_spec(report, document, auths),
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
    if create is not None and status is not None:
        create = _default_key_check(reports["CreateTicketJSON"], create, status)
    config = config_spec(reports["ConfigJSON"], config_doc or {})
    # Each message starts with its document's name, the documents in this order.
    errors = [line for name, report in reports.items() for line in report.as_lines(name)]
    if errors or connection is None or create is None or status is None:
        raise SpecError(errors)
    return Documents(connection=connection, create=create, status=status, config=config)
