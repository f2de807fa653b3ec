"""What a package is once read, and our own package format: its keys, how it is checked.

`Package` (its connections, security systems, endpoints and `@NAME@` variables) is what
both readers produce: ours here, and Saviynt transport zips in `transport`. Importing a
Package is `packages`' business; this module knows nothing of the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .paths import find_placeholders, join_path, loads_strict
from .problems import Problems

FORMAT = "otrs-bridge-package"
VERSION = 1

# Package key → (label used in messages and by spec, keyword of spec.validate_documents).
DOCUMENTS = {
    "connectionJSON": ("ConnectionJSON", "connection_json"),
    "createTicketJSON": ("CreateTicketJSON", "create_ticket_json"),
    "ticketStatusJSON": ("TicketStatusJSON", "ticket_status_json"),
    "configJSON": ("ConfigJSON", "config_json"),
}
CONNECTION_SETTINGS = (
    "poll_minutes",
    "full_sweep_minutes",
    "batch_size",
    "max_status_check_days",
    "reopen_watch_days",
)

# Expected keys of each object in our format: key → (type, required).
_TOP_KEYS = {
    "format": (str, True),
    "version": (int, True),
    "name": (str, True),
    "description": (str, False),
    "variables": (dict, False),
    "connections": (list, False),
    "securitySystems": (list, False),
    "endpoints": (list, False),
}
_VARIABLE_KEYS = {"description": (str, False), "default": (str, False), "secret": (bool, False)}
_CONNECTION_KEYS = {
    "name": (str, True),
    "description": (str, False),
    "connectionJSON": (dict, True),
    "createTicketJSON": (dict, True),
    "ticketStatusJSON": (dict, True),
    "configJSON": (dict, False),
    **{key: (int, False) for key in CONNECTION_SETTINGS},
}
_SECURITY_SYSTEM_KEYS = {
    "name": (str, True),
    "display_name": (str, False),
    "description": (str, False),
    "instant_provisioning": (bool, False),
    "provisioning_tries": (int, False),
    "connection": (str, False),
}
_ENDPOINT_KEYS = {
    "name": (str, True),
    "display_name": (str, False),
    "security_system": (str, True),
    "attributes": (dict, False),
    "entitlements": (list, False),
}
_TYPE_NAMES = {
    str: "a string",
    int: "a whole number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}

# A variable's name in our format (@NAME@).
VARIABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class PackageError(Exception):
    """A package that cannot be read or imported. `errors` lists every problem, each naming where."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Variable:
    """One `@NAME@` placeholder the importer must (or may) fill in."""

    name: str
    description: str = ""
    default: str | None = None
    secret: bool = False


@dataclass
class PackageConnection:
    """A connection as the package describes it, before variables are filled in.

    A document is a parsed object (our format), the text found in a zip (it may not even
    be JSON, and the importer may correct it), or None when the package cannot carry it
    (a Saviynt export's encrypted ConnectionJSON).
    """

    name: str
    where: str
    description: str = ""
    documents: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, int] = field(default_factory=dict)

    def editable_documents(self) -> dict[str, str]:
        """Documents the importer should see and may edit: texts from a zip, and missing ones."""
        return {
            key: value or ""
            for key, value in self.documents.items()
            if value is None or isinstance(value, str)
        }


@dataclass
class Package:
    """A loaded package: its shape is checked, its variables are not yet filled in."""

    filename: str
    kind: str  # "otrs-bridge" or "saviynt-transport"
    name: str
    description: str = ""
    variables: dict[str, Variable] = field(default_factory=dict)
    connections: list[PackageConnection] = field(default_factory=list)
    security_systems: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- reading our format -----------------------------------------------------------------------


def decode_json(raw: bytes, where: str) -> Any:
    """Strict JSON (no trailing data, no duplicate keys), as the documents inside are parsed."""
    try:
        return loads_strict(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise PackageError(
            [f"{where}: not UTF-8 text (invalid byte at offset {exc.start})"]
        ) from exc
    except ValueError as exc:
        raise PackageError([f"{where}: {exc}"]) from exc


def _check_keys(
    obj: Any, expected: Mapping[str, tuple[type, bool]], where: str, problems: Problems
) -> bool:
    """Add a problem for each missing, mistyped or unknown key; True when `obj` is an object."""
    if not isinstance(obj, dict):
        problems.add(where, "must be an object")
        return False
    for key, (kind, required) in expected.items():
        if key not in obj:
            if required:
                problems.add(join_path(where, key), "is required")
        elif not _has_type(obj[key], kind):
            problems.add(join_path(where, key), f"must be {_TYPE_NAMES[kind]}")
    for key in obj.keys() - expected.keys():
        problems.add(join_path(where, key), f"unknown key (expected one of {', '.join(expected)})")
    return True


def _has_type(value: Any, kind: type) -> bool:
    # bool is an int in Python; a `true` where a number belongs is still a mistake.
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def load_bridge_package(doc: Any, filename: str) -> Package:
    """Check our format completely, collecting every problem, and build the Package."""
    if not isinstance(doc, dict):
        raise PackageError([f"{filename}: the package must be a JSON object"])
    # A wrong format or version makes every other message noise: stop at the first.
    if doc.get("format") != FORMAT:
        got = json.dumps(doc.get("format"))
        raise PackageError(
            [f'{filename}: format: expected "{FORMAT}", got {got}; not an OTRS Bridge package']
        )
    if doc.get("version") != VERSION:
        got = json.dumps(doc.get("version"))
        raise PackageError(
            [f"{filename}: version: unsupported version {got}; this bridge reads version {VERSION}"]
        )
    problems = Problems()
    _check_keys(doc, _TOP_KEYS, "", problems)
    variables = _read_variables(doc.get("variables"), problems)
    sections: dict[str, Mapping[str, tuple[type, bool]]] = {
        "connections": _CONNECTION_KEYS,
        "securitySystems": _SECURITY_SYSTEM_KEYS,
        "endpoints": _ENDPOINT_KEYS,
    }
    for section, keys in sections.items():
        items = doc.get(section)
        if not isinstance(items, list):
            continue
        seen: dict[str, str] = {}
        for index, item in enumerate(items):
            path = join_path(section, index)
            if not _check_keys(item, keys, path, problems):
                continue
            check_unique_name(item.get("name"), path, seen, problems)
            for name in sorted(find_placeholders(item) - variables.keys()):
                problems.add(path, f"@{name}@ is used but not declared in variables")
    if problems:
        raise PackageError(problems.as_lines(filename))
    return Package(
        filename=filename,
        kind="otrs-bridge",
        name=doc["name"],
        description=doc.get("description", ""),
        variables=variables,
        connections=[
            PackageConnection(
                name=item["name"],
                where=f"{filename}: connections[{index}]",
                description=item.get("description", ""),
                documents={key: item[key] for key in DOCUMENTS if key in item},
                settings={key: item[key] for key in CONNECTION_SETTINGS if key in item},
            )
            for index, item in enumerate(doc.get("connections", []))
        ],
        security_systems=doc.get("securitySystems", []),
        endpoints=doc.get("endpoints", []),
    )


def _read_variables(raw: Any, problems: Problems) -> dict[str, Variable]:
    if not isinstance(raw, dict):
        return {}
    variables = {}
    for name, declaration in raw.items():
        path = join_path("variables", name)
        if not VARIABLE_NAME.match(name):
            problems.add(
                path, "a variable name is upper-case letters, digits and _, starting with a letter"
            )
        if _check_keys(declaration, _VARIABLE_KEYS, path, problems):
            variables[name] = Variable(
                name=name,
                description=declaration.get("description", ""),
                default=declaration.get("default"),
                secret=declaration.get("secret", False),
            )
    return variables


def check_unique_name(name: Any, path: str, seen: dict[str, str], problems: Problems) -> None:
    """A second object of the same kind with this name is a problem; `seen` remembers the first."""
    if not isinstance(name, str):
        return
    if name in seen:
        problems.add(f"{path}.name", f'duplicate name "{name}" (also {seen[name]})')
    else:
        seen[name] = path
