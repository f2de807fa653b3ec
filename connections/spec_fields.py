"""The field-level reading that spec builds the typed documents from.

`Report` collects one document's problems and reads its fields, adding a problem for each
wrong value. The functions below read the parts of one call (httpParams, httpHeaders, the
success rules), catch what OTRS itself would refuse, read what each ticket state means,
and read ConfigJSON (flat settings, no calls). Nothing here knows which `${...}` names a
call may use or where credentials may appear: that is spec's, which imports this module.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .documents import OUTCOMES, CallSpec, ConfigSpec, ResponseRule, StatusSpec
from .paths import find_placeholders, is_valid_path, iter_strings, join_path, loads_strict
from .problems import Problems


class Report(Problems):
    """The problems of one document, and readers of its fields that add one for a wrong value.

    Each problem's place is its JSON path ("" for the document itself); spec puts the
    document's name in front when it reports them.
    """

    def string(
        self, obj: dict, key: str, where: str, *, required: bool = False, default: str = ""
    ) -> str:
        value = obj.get(key)
        if value is None or value == "":
            if required:
                self.add(where, f"{key} is required")
            return default
        if not isinstance(value, str):
            self.add(join_path(where, key), f"must be a string, not {type_name(value)}")
            return default
        return value

    def path(self, obj: dict, key: str, where: str, *, required: bool = False) -> str:
        value = self.string(obj, key, where, required=required)
        if value and not is_valid_path(value):
            self.add(
                join_path(where, key),
                f"{value!r} is not a valid path (expected keys like a.b[0].c)",
            )
            return ""
        return value

    def integer(self, obj: dict, key: str, where: str, *, default: int, low: int, high: int) -> int:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(join_path(where, key), f"must be a whole number, not {type_name(value)}")
            return default
        if not low <= value <= high:
            self.add(join_path(where, key), f"must be between {low} and {high}, not {value}")
            return default
        return value

    def number(
        self, obj: dict, key: str, where: str, *, default: float, low: float, high: float
    ) -> float:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(join_path(where, key), f"must be a number, not {type_name(value)}")
            return default
        if not low <= value <= high:
            self.add(join_path(where, key), f"must be between {low:g} and {high:g}, not {value:g}")
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
        self.add(join_path(where, key), "must be a string or a list of strings")
        return ()

    def integers(self, obj: dict, key: str, where: str, *, low: int, high: int) -> tuple[int, ...]:
        value = obj.get(key)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        if not all(
            not isinstance(v, bool) and isinstance(v, int) and low <= v <= high for v in items
        ):
            self.add(
                join_path(where, key), f"must be a list of whole numbers between {low} and {high}"
            )
            return ()
        return tuple(items)

    def mapping(self, obj: dict, key: str, where: str) -> dict:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(join_path(where, key), f"must be an object, not {type_name(value)}")
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


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def parse_document(
    report: Report, value: dict | str | None, *, optional: bool = False
) -> dict | None:
    """A document given as a dict or as JSON text; anything else is reported."""
    if optional and value in (None, "", {}):
        return {}
    if value is None:
        report.add("", "is required")
        return None
    if isinstance(value, str):
        try:
            value = loads_strict(value)
        except ValueError as exc:
            report.add("", str(exc))
            return None
    if not isinstance(value, dict):
        report.add("", f"must be a JSON object, not {type_name(value)}")
        return None
    return value


def check_placeholders(report: Report, obj: Any) -> None:
    """An `@NAME@` left in a stored document is a package variable the import never filled."""
    for path, text in iter_strings(obj):
        for name in sorted(find_placeholders(text)):
            report.add(path, f"@{name}@ was never filled in; set it when importing the package")


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


def check_nested_article(report: Report, call: CallSpec, where: str) -> None:
    """OTRS TicketCreate needs Ticket and Article side by side (Saviynt's package nests them)."""
    path = urlsplit(call.url).path
    params = call.http_params
    is_create = path.endswith(("/Ticket", "/TicketCreate"))
    if call.http_method != "POST" or not is_create or not isinstance(params, dict):
        return
    ticket = params.get("Ticket")
    if isinstance(ticket, dict) and "Article" in ticket and "Article" not in params:
        report.add(
            join_path(where, "httpParams.Ticket.Article"),
            "Article is nested inside Ticket; OTRS TicketCreate needs Ticket and Article side by "
            "side at the top level (it answers TicketCreate.MissingParameter otherwise)",
        )
    state = ticket.get("State") if isinstance(ticket, dict) else None
    if isinstance(state, str) and state != state.lower() and state.lower() in OTRS_DEFAULT_STATES:
        report.add(
            join_path(where, "httpParams.Ticket.State"),
            f"{state!r} is not an OTRS state name; OTRS spells it {state.lower()!r}",
        )


def response_rules(report: Report, value: Any, where: str) -> tuple[ResponseRule, ...]:
    """`{"statusCode":[200]}`, `[{"Ticket[0].State":"x"}]` and mixes of both."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list) else [value]
    rules = []
    for index, item in enumerate(items):
        at = join_path(where, index) if isinstance(value, list) else where
        if not isinstance(item, dict):
            report.add(at, "must be an object of statusCode and/or path → value")
            continue
        codes = report.integers(item, "statusCode", at, low=100, high=599)
        matches = []
        for key, expected in item.items():
            if key == "statusCode":
                continue
            if not is_valid_path(key):
                report.add(join_path(at, key), f"{key!r} is not a valid path")
            elif isinstance(expected, str) and "${" in expected:
                report.add(
                    join_path(at, key), f"{expected} cannot be used here; give the literal value"
                )
            else:
                matches.append((key, expected))
        rules.append(ResponseRule(codes, tuple(matches)))
    return tuple(rules)


def http_params(report: Report, value: Any, where: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return loads_strict(value)
        except ValueError as exc:
            report.add(where, str(exc))
            return None
    if not isinstance(value, dict | list):
        report.add(where, f"must be a JSON object or a JSON string, not {type_name(value)}")
        return None
    return value


def http_headers(report: Report, obj: dict, where: str) -> dict[str, str]:
    headers = report.mapping(obj, "httpHeaders", where)
    clean = {}
    for key, value in headers.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            report.add(join_path(where, f"httpHeaders.{key}"), "a header value must be a string")
        else:
            clean[str(key)] = str(value)
    return clean


# --- what each ticket state means (TicketStatusJSON) ------------------------------------


def outcome_map(report: Report, call_obj: dict, key: str, where: str) -> dict[str, str]:
    raw = report.mapping(call_obj, key, where)
    result = {}
    for state, outcome in raw.items():
        if outcome not in OUTCOMES:
            report.add(
                join_path(join_path(where, key), state),
                f"{outcome!r} is not an outcome; use one of {', '.join(OUTCOMES)}",
            )
        else:
            result[state] = outcome
    return result


def check_state_lists(report: Report, spec: StatusSpec, where: str) -> None:
    for state in set(spec.done_values) & set(spec.discontinue_values):
        report.add(where, f"{state!r} is in both ticketStatusValue and disContinueStatusValue")
    for state, outcome in spec.status_map.items():
        listed = spec.outcome_for(state)
        if listed != outcome:
            report.add(
                join_path(where, f"statusMap.{state}"),
                f"says {outcome!r} but the state lists say {listed!r}",
            )
    outcomes = {spec.outcome_for(s) for s in (*spec.done_values, *spec.status_map)}
    if "completed" not in outcomes | set(spec.state_type_map.values()):
        report.add(
            where, 'no state means completed; set ticketStatusValue (e.g. ["closed successful"])'
        )


# --- ConfigJSON: flat settings, no calls ----------------------------------------------------


def config_spec(report: Report, document: dict) -> ConfigSpec:
    """Our flat keys, or Saviynt's {"connectionTimeoutConfig": {...}} (seconds)."""
    where = ""
    if isinstance(document.get("connectionTimeoutConfig"), dict):
        document = {**document["connectionTimeoutConfig"], **document}
        document.setdefault("connectTimeout", document.get("connectionTimeout", 10))
        where = "connectionTimeoutConfig"
    ca_bundle = report.string(document, "caBundle", where)
    verify = document.get("verifyTLS", True)
    if not isinstance(verify, bool):
        report.add(join_path(where, "verifyTLS"), "must be true or false")
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
