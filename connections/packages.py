"""Import and export of connection packages: our versioned JSON and Saviynt transport zips.

A package carries connections (their four documents and status-check settings), security
systems and endpoints, plus the `@NAME@` variables its documents use. Importing is three
steps, so every caller (command, admin page, demo loader) gets the same checks:

1. `load_package` reads the bytes and checks the file's shape; nothing is resolved yet.
2. `plan_import` fills in the variables and the user's edited documents, validates every
   document with `spec.validate_documents`, and says what would be created or changed.
3. `apply_import` writes the plan in one transaction: all of it or nothing.

`export_package` writes our format back out, with every secret replaced by a secret
variable, so an export can be shared without leaking a password.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from . import spec
from .documents import Documents
from .models import SECRET_PLACEHOLDER, Connection, Endpoint, SecuritySystem, split_secrets
from .paths import find_placeholders, iter_strings, join_path, loads_strict, resolve_placeholders

FORMAT = "otrs-bridge-package"
VERSION = 1

# Package key → (label used in messages and by spec, keyword of spec.validate_documents).
DOCUMENTS = {
    "connectionJSON": ("ConnectionJSON", "connection_json"),
    "createTicketJSON": ("CreateTicketJSON", "create_ticket_json"),
    "ticketStatusJSON": ("TicketStatusJSON", "ticket_status_json"),
    "configJSON": ("ConfigJSON", "config_json"),
}
CONNECTION_SETTINGS = ("poll_minutes", "batch_size", "max_status_check_days")
# Model field → package key, so a plan line speaks the package's language.
_PACKAGE_KEYS = {keyword: key for key, (_, keyword) in DOCUMENTS.items()}

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

_VARIABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Variables of a Saviynt export are undeclared; these names are treated as secrets.
_SECRET_VARIABLE_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
# A zip with more members than this is not a transport export; refusing early keeps a
# crafted archive from making us walk millions of entries.
_MAX_ZIP_MEMBERS = 50


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


@dataclass
class PlannedChange:
    """One line of a plan: create, update or leave alone one object.

    `instance` is the unsaved object with the package's values; `parent` names the object
    it points at (a security system's connection, an endpoint's security system), which
    may itself be created by the same import.
    """

    verb: str  # "create", "update" or "unchanged"
    kind: str  # "connection", "security system" or "endpoint"
    name: str
    fields: list[str] = field(default_factory=list)
    instance: Any = field(default=None, repr=False, compare=False)
    parent: str | None = None

    def __str__(self) -> str:
        suffix = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.verb} {self.kind} {self.name}{suffix}"


@dataclass
class ImportPlan:
    """Everything `apply_import` will write, already validated, in the order to write it."""

    package: Package
    changes: list[PlannedChange] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [str(change) for change in self.changes]

    @property
    def has_changes(self) -> bool:
        return any(change.verb != "unchanged" for change in self.changes)


@dataclass
class ImportResult:
    """What `apply_import` wrote: the plan's changes, now in the database."""

    changes: list[PlannedChange]

    def lines(self) -> list[str]:
        return [str(change) for change in self.changes]


# --- reading ---------------------------------------------------------------------------------


def load_package(data: bytes, filename: str) -> Package:
    """Read a package file: our JSON format, or a Saviynt transport zip (told apart by content)."""
    check_size(len(data), filename)
    if data.startswith(b"PK") or filename.lower().endswith(".zip"):
        return _load_saviynt_zip(data, filename)
    return _load_bridge_package(_decode_json(data, filename), filename)


def check_size(size: int, where: str) -> None:
    """Refuse a file above PACKAGE_MAX_BYTES before anything reads it."""
    limit = settings.PACKAGE_MAX_BYTES
    if size > limit:
        raise PackageError(
            [
                f"{where}: {size:,} bytes is larger than the {limit:,} bytes a package may have (PACKAGE_MAX_BYTES)"
            ]
        )


def _decode_json(raw: bytes, where: str) -> Any:
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
    obj: Any, expected: dict[str, tuple[type, bool]], where: str, errors: list[str]
) -> bool:
    """Append a message for each missing, mistyped or unknown key; True when `obj` is an object."""
    if not isinstance(obj, dict):
        errors.append(f"{where}: must be an object")
        return False
    for key, (kind, required) in expected.items():
        if key not in obj:
            if required:
                errors.append(f"{join_path(where, key)}: is required")
        elif not _has_type(obj[key], kind):
            errors.append(f"{join_path(where, key)}: must be {_TYPE_NAMES[kind]}")
    for key in obj.keys() - expected.keys():
        errors.append(
            f"{join_path(where, key)}: unknown key (expected one of {', '.join(expected)})"
        )
    return True


def _has_type(value: Any, kind: type) -> bool:
    # bool is an int in Python; a `true` where a number belongs is still a mistake.
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _load_bridge_package(doc: Any, filename: str) -> Package:
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
    errors: list[str] = []
    _check_keys(doc, _TOP_KEYS, "", errors)
    variables = _read_variables(doc.get("variables"), errors)
    sections = {
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
            if not _check_keys(item, keys, path, errors):
                continue
            _check_unique_name(item.get("name"), path, seen, errors)
            for name in sorted(find_placeholders(item) - variables.keys()):
                errors.append(f"{path}: @{name}@ is used but not declared in variables")
    if errors:
        raise PackageError([f"{filename}: {error}" for error in errors])
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


def _read_variables(raw: Any, errors: list[str]) -> dict[str, Variable]:
    if not isinstance(raw, dict):
        return {}
    variables = {}
    for name, declaration in raw.items():
        path = join_path("variables", name)
        if not _VARIABLE_NAME.match(name):
            errors.append(
                f"{path}: a variable name is upper-case letters, digits and _, starting with a letter"
            )
        if _check_keys(declaration, _VARIABLE_KEYS, path, errors):
            variables[name] = Variable(
                name=name,
                description=declaration.get("description", ""),
                default=declaration.get("default"),
                secret=declaration.get("secret", False),
            )
    return variables


def _check_unique_name(name: Any, path: str, seen: dict[str, str], errors: list[str]) -> None:
    if not isinstance(name, str):
        return
    if name in seen:
        errors.append(f'{path}.name: duplicate name "{name}" (also {seen[name]})')
    else:
        seen[name] = path


# --- Saviynt transport zips ------------------------------------------------------------------


def _load_saviynt_zip(data: bytes, filename: str) -> Package:
    """Read a Saviynt transport export: Connection_*.json plus ObjectSummary_*.json.

    Only REST connections that carry a CreateTicketJSON are taken. Their ConnectionJSON is
    encrypted with the exporting tenant's key, so it is left for the importer to enter.
    """
    members = _read_zip_members(data, filename)
    connection_files = _members_named(members, "Connection_*.json")
    summary_files = _members_named(members, "ObjectSummary_*.json")
    if not connection_files or not summary_files:
        raise PackageError(
            [
                f"{filename}: not a Saviynt transport export: it needs Connection_<time>(UTC).json and "
                f"ObjectSummary_<time>(UTC).json, and it holds {', '.join(sorted(members)) or 'no files'}"
            ]
        )
    errors: list[str] = []
    connections: list[PackageConnection] = []
    exported_names: list[str] = []
    for member in connection_files:
        where = f"{filename}/{member}"
        exported = _decode_json(members[member], where)
        if not isinstance(exported, dict) or not exported:
            errors.append(f"{where}: must be an object keyed by connection name")
            continue
        exported_names.extend(exported)
        for name, attributes in exported.items():
            connection = _saviynt_connection(name, attributes, f"{where}: {name}", errors)
            if connection:
                connections.append(connection)
    summary = _decode_json(members[summary_files[0]], f"{filename}/{summary_files[0]}")
    notes = _check_summary(summary, exported_names, f"{filename}/{summary_files[0]}", errors)
    seen: dict[str, str] = {}
    for connection in connections:
        _check_unique_name(connection.name, connection.where, seen, errors)
    if errors:
        raise PackageError(errors)
    return Package(
        filename=filename,
        kind="saviynt-transport",
        name=posixpath.splitext(posixpath.basename(filename))[0],
        description=_summary_description(summary),
        variables=_undeclared_variables(connections),
        connections=connections,
        notes=notes,
    )


def _read_zip_members(data: bytes, filename: str) -> dict[str, bytes]:
    """The zip's files by name, refusing corrupt, encrypted and oversized (zip bomb) archives."""
    limit = settings.PACKAGE_MAX_BYTES
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > _MAX_ZIP_MEMBERS:
            raise PackageError(
                [f"{filename}: {len(infos)} files in the zip; a transport export has two"]
            )
        declared = sum(info.file_size for info in infos)
        if declared > limit:
            raise PackageError(
                [
                    f"{filename}: unpacks to {declared:,} bytes, more than the {limit:,} bytes allowed (PACKAGE_MAX_BYTES)"
                ]
            )
        members: dict[str, bytes] = {}
        budget = limit
        for info in infos:
            if info.flag_bits & 0x1:
                raise PackageError(
                    [f"{filename}/{info.filename}: encrypted zip members are not supported"]
                )
            # The sizes in the zip's directory can lie; never read past the budget.
            with archive.open(info) as stream:
                content = stream.read(budget + 1)
            if len(content) > budget:
                raise PackageError(
                    [
                        f"{filename}/{info.filename}: unpacks to more than the {limit:,} bytes allowed (PACKAGE_MAX_BYTES)"
                    ]
                )
            budget -= len(content)
            members[info.filename] = content
        return members
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        NotImplementedError,
        ValueError,
    ) as exc:
        raise PackageError([f"{filename}: not a readable zip file ({exc})"]) from exc


def _members_named(members: dict[str, bytes], pattern: str) -> list[str]:
    return sorted(name for name in members if fnmatch.fnmatch(posixpath.basename(name), pattern))


def _saviynt_connection(
    name: str, attributes: Any, where: str, errors: list[str]
) -> PackageConnection | None:
    """One entry of Connection_*.json as a PackageConnection, or None with the reason in `errors`."""
    if not isinstance(attributes, dict):
        errors.append(f"{where}: must be an object")
        return None
    kind = attributes.get("externalconnectiontype")
    if kind != "REST":
        errors.append(
            f"{where}.externalconnectiontype: is {json.dumps(kind)}; only REST connections can open tickets"
        )
        return None
    values = _external_attributes(attributes.get("EXTERNAL_ATTR"), f"{where}.EXTERNAL_ATTR", errors)
    if values is None:
        return None
    documents: dict[str, Any] = {}
    for key, (label, _) in DOCUMENTS.items():
        text = values.get(label, "").replace("\r\n", "\n").strip()
        if key == "connectionJSON":
            text = text if _is_json_object(text) else ""  # ciphertext: the importer enters it
        if text or key in ("connectionJSON", "createTicketJSON", "ticketStatusJSON"):
            documents[key] = _pretty(text) if text else None
    for key in ("createTicketJSON", "ticketStatusJSON"):
        if documents[key] is None:
            errors.append(
                f"{where}.EXTERNAL_ATTR: {DOCUMENTS[key][0]} is empty; this is not a ticketing connection"
            )
    connection_name = name if re.fullmatch(r"[-\w]+", name, re.ASCII) else slugify(name)
    return PackageConnection(
        name=connection_name,
        where=where,
        description=str(attributes.get("connectiondescription") or ""),
        documents=documents,
    )


def _external_attributes(raw: Any, where: str, errors: list[str]) -> dict[str, str] | None:
    """EXTERNAL_ATTR as {attributename: value}. The value field is named 'encrypted…' but is plain text."""
    if not isinstance(raw, list):
        errors.append(f"{where}: must be a list of attributes")
        return None
    values = {}
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("attributename"), str):
            errors.append(f"{where}[{index}]: must be an object with attributename")
            continue
        values[entry["attributename"]] = str(entry.get("encryptedattributevalue") or "")
    return values


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _pretty(text: str) -> str:
    """Indent a document that parses, for the import form; leave a broken one exactly as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text


def _check_summary(summary: Any, names: list[str], where: str, errors: list[str]) -> list[str]:
    """Check ObjectSummary lists the connections found; return notes about objects we skip."""
    objects = summary.get("Objects") if isinstance(summary, dict) else None
    if not isinstance(objects, dict):
        errors.append(f"{where}: Objects: is required")
        return []
    listed = objects.get("connection") or []
    for name in names:
        if name not in listed:
            errors.append(
                f"{where}: Objects.connection: does not list {name}, which the Connection file holds"
            )
    return [
        f"{where}: {kind} objects ({', '.join(map(str, items))}) are not imported; only connections are"
        for kind, items in objects.items()
        if kind != "connection" and items
    ]


def _summary_description(summary: dict) -> str:
    info = summary.get("Information") or {}
    return (
        f"Saviynt transport export from {info.get('System', 'an unknown system')}, "
        f"by {info.get('Exported By', 'unknown')} on {info.get('Exported On', 'an unknown date')}"
    )


def _undeclared_variables(connections: list[PackageConnection]) -> dict[str, Variable]:
    """A Saviynt export declares no variables: offer each @NAME@ its documents use."""
    names = (
        set().union(*(find_placeholders(c.documents) for c in connections))
        if connections
        else set()
    )
    return {
        name: Variable(
            name=name,
            description="Placeholder in the exported documents",
            secret=bool(_SECRET_VARIABLE_NAME.search(name)),
        )
        for name in sorted(names)
    }


# --- planning ----------------------------------------------------------------------------------


def plan_import(
    package: Package, values: dict[str, str], *, overrides: dict[str, dict[str, Any]] | None = None
) -> ImportPlan:
    """Fill in variables and edited documents, validate everything, and list the changes.

    `values` maps variable names to values (an empty value falls back to the default).
    `overrides` maps a connection name to {document key: text or object} and replaces
    what the package holds, e.g. the ConnectionJSON a Saviynt export cannot carry, or a
    document the importer corrected. Raises PackageError listing every problem found.
    """
    errors: list[str] = []
    resolved = _resolve_variables(package, values, overrides or {}, errors)
    if resolved is None:
        raise PackageError(errors)
    plan = ImportPlan(package=package)
    names = {
        "connection": {c.name for c in resolved.connections},
        "security system": {s.get("name") for s in resolved.security_systems},
    }
    for connection in resolved.connections:
        _plan_connection(plan, connection, errors)
    for index, item in enumerate(resolved.security_systems):
        _plan_security_system(
            plan, item, f"{package.filename}: securitySystems[{index}]", names, errors
        )
    for index, item in enumerate(resolved.endpoints):
        _plan_endpoint(plan, item, f"{package.filename}: endpoints[{index}]", names, errors)
    if errors:
        raise PackageError(errors)
    return plan


def _resolve_variables(
    package: Package,
    values: dict[str, str],
    overrides: dict[str, dict[str, Any]],
    errors: list[str],
) -> Package | None:
    """Apply the overrides, then replace every @NAME@ once; None when a variable is unknown or missing."""
    for name in overrides.keys() - {c.name for c in package.connections}:
        errors.append(f"{name}: an edited document names a connection the package does not hold")
    connections = [
        replace(
            c,
            documents={
                k: _parsed_if_json(v)
                for k, v in {**c.documents, **overrides.get(c.name, {})}.items()
            },
        )
        for c in package.connections
    ]
    content = {
        "connections": [
            {"name": c.name, "description": c.description, "documents": c.documents}
            for c in connections
        ],
        "securitySystems": package.security_systems,
        "endpoints": package.endpoints,
    }
    used = find_placeholders(content)
    for name in sorted(values.keys() - used - package.variables.keys()):
        errors.append(f"variable {name}: this package has no such variable")
    filled: dict[str, str] = {}
    for name in sorted(used):
        declared = package.variables.get(name)
        value = values.get(name) or (declared.default if declared else None)
        if value is None:
            errors.append(f"variable {name}: a value is required (the package uses @{name}@)")
        else:
            filled[name] = value
    for name in sorted(used):
        declared = package.variables.get(name)
        if declared is not None and declared.secret:
            for path in _plain_text_places(content, name):
                errors.append(
                    f"variable {name}: it is secret, but {path} would keep it in plain text "
                    "(and show it on pages and in exports); use it only as a credential of a "
                    "ConnectionJSON authentication, where it is stored encrypted"
                )
    if errors:
        return None
    content = resolve_placeholders(content, filled)
    return replace(
        package,
        connections=[
            replace(c, **fields)
            for c, fields in zip(connections, content["connections"], strict=True)
        ],
        security_systems=content["securitySystems"],
        endpoints=content["endpoints"],
    )


def _plain_text_places(content: dict, name: str) -> list[str]:
    """Where @name@ would be stored as it is: anywhere but the credentials that
    split_secrets takes out of a ConnectionJSON to encrypt."""
    marker = "\x00"
    marked = resolve_placeholders(content, {name: marker})
    places: list[str] = []
    for connection in marked["connections"]:
        for key, document in connection["documents"].items():
            if key == "connectionJSON" and isinstance(document, dict):
                document = split_secrets(document)[0]
            where = f"{connection['name']}: {DOCUMENTS.get(key, (key,))[0]}"
            places += [path for path, text in iter_strings(document, where) if marker in text]
    for key in ("securitySystems", "endpoints"):
        places += [path for path, text in iter_strings(marked[key], key) if marker in text]
    return places


def _parsed_if_json(document: Any) -> Any:
    """Parse a document given as text, so a value with a quote cannot break it when filled in.

    Text that does not parse stays text; validation then says where it is broken.
    """
    if isinstance(document, str):
        try:
            return loads_strict(document)
        except ValueError:
            return document
    return document


def validate_without_secrets(**documents: Any) -> Documents:
    """Validate documents with the ConnectionJSON's secrets replaced by the placeholder.

    A secret's value never decides whether a document is valid, and an error message (shown
    on a page or printed by a command) can then never quote part of one.
    """
    connection_json = _parsed_if_json(documents.get("connection_json"))
    if isinstance(connection_json, dict):
        documents = {**documents, "connection_json": split_secrets(connection_json)[0]}
    return spec.validate_documents(**documents)


def _plan_connection(plan: ImportPlan, source: PackageConnection, errors: list[str]) -> None:
    """Validate one connection's documents and settings, and record its change."""
    documents = {keyword: source.documents.get(key) for key, (_, keyword) in DOCUMENTS.items()}
    if not documents["connection_json"]:
        errors.append(
            f"{source.name}: ConnectionJSON: is required (a Saviynt export carries it encrypted; enter it)"
        )
        return
    try:
        validate_without_secrets(**documents)
    except spec.SpecError as exc:
        errors.extend(f"{source.name}: {error}" for error in exc.errors)
        return
    parsed = {key: _parsed_if_json(value) or {} for key, value in documents.items()}
    existing = Connection.objects.filter(name=source.name).first()
    connection = existing or Connection(name=source.name)
    changed = _assign(
        connection,
        {
            "description": source.description,
            "create_ticket_json": parsed["create_ticket_json"],
            "ticket_status_json": parsed["ticket_status_json"],
            "config_json": parsed["config_json"],
            **source.settings,
        },
    )
    if existing and _connection_json_changes(existing, parsed["connection_json"]):
        changed.insert(0, "connection_json")
    for path in _placeholders_without_secret(parsed["connection_json"], existing):
        errors.append(
            f"{source.name}: ConnectionJSON: {path.replace('/', '.')}: {SECRET_PLACEHOLDER} keeps a stored "
            "secret, but there is none here; type the value"
        )
    connection.set_connection_json(parsed["connection_json"])
    if _clean(connection, source.where, errors, exclude=["connection_json"]):
        fields = [_PACKAGE_KEYS.get(name, name) for name in changed]
        plan.changes.append(_change("connection", connection, existing, fields))


def _placeholders_without_secret(document: dict, existing: Connection | None) -> list[str]:
    """Paths holding "********" that no stored secret stands behind (it would become empty)."""
    stored = existing.secrets if existing else {}
    _, secrets = split_secrets(document)
    return [
        path
        for path, value in secrets.items()
        if value == SECRET_PLACEHOLDER and path not in stored
    ]


def _connection_json_changes(existing: Connection, document: dict) -> bool:
    """Compare through the model, so a "********" that keeps a secret counts as unchanged."""
    probe = Connection(
        connection_json=existing.connection_json, secrets_encrypted=existing.secrets_encrypted
    )
    probe.set_connection_json(document)
    return probe.connection_json != existing.connection_json or probe.secrets != existing.secrets


def _plan_security_system(
    plan: ImportPlan, item: dict, where: str, names: dict[str, set], errors: list[str]
) -> None:
    connection_name = item.get("connection")
    if connection_name and not _will_exist(names["connection"], Connection, connection_name):
        errors.append(
            f'{where}.connection: no connection named "{connection_name}" in the package or the database'
        )
    existing = (
        SecuritySystem.objects.filter(name=item["name"])
        .select_related("service_desk_connection")
        .first()
    )
    system = existing or SecuritySystem(name=item["name"])
    wanted = {
        key: item[key]
        for key in ("display_name", "description", "instant_provisioning", "provisioning_tries")
        if key in item
    }
    changed = _assign(system, wanted)
    current = (
        existing.service_desk_connection.name
        if existing and existing.service_desk_connection
        else None
    )
    if existing and current != connection_name:
        changed.append("connection")
    if _clean(system, where, errors, exclude=["service_desk_connection"]):
        plan.changes.append(_change("security system", system, existing, changed, connection_name))


def _plan_endpoint(
    plan: ImportPlan, item: dict, where: str, names: dict[str, set], errors: list[str]
) -> None:
    system_name = item["security_system"]
    if not _will_exist(names["security system"], SecuritySystem, system_name):
        errors.append(
            f'{where}.security_system: no security system named "{system_name}" in the package or the database'
        )
    existing = Endpoint.objects.filter(name=item["name"]).select_related("security_system").first()
    endpoint = existing or Endpoint(name=item["name"])
    wanted = {
        key: item[key] for key in ("display_name", "attributes", "entitlements") if key in item
    }
    changed = _assign(endpoint, wanted)
    if existing and existing.security_system.name != system_name:
        changed.append("security_system")
    if _clean(endpoint, where, errors, exclude=["security_system"]):
        plan.changes.append(_change("endpoint", endpoint, existing, changed, system_name))


def _will_exist(in_package: set[str], model: type, name: str) -> bool:
    return name in in_package or model.objects.filter(name=name).exists()


def _assign(instance: Any, wanted: dict[str, Any]) -> list[str]:
    """Set the fields on `instance`; return the names of those whose value changes."""
    changed = [name for name, value in wanted.items() if getattr(instance, name) != value]
    for name, value in wanted.items():
        setattr(instance, name, value)
    return changed


def _clean(instance: Any, where: str, errors: list[str], *, exclude: list[str]) -> bool:
    """Run the model's own validation (slug names, ranges) and report it against the package."""
    try:
        instance.full_clean(exclude=exclude, validate_unique=False)
    except ValidationError as exc:
        errors.extend(
            f"{where}.{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items()
        )
        return False
    return True


def _change(
    kind: str, instance: Any, existing: Any, changed: list[str], parent: str | None = None
) -> PlannedChange:
    if existing is None:
        return PlannedChange("create", kind, instance.name, instance=instance, parent=parent)
    verb = "update" if changed else "unchanged"
    return PlannedChange(verb, kind, instance.name, changed, instance=instance, parent=parent)


# --- applying ----------------------------------------------------------------------------------


def apply_import(plan: ImportPlan) -> ImportResult:
    """Write the plan in one transaction: if any object fails, nothing of the package is kept.

    Unchanged objects are not saved again, so a re-import leaves their timestamps alone.
    """
    with transaction.atomic():
        for change in plan.changes:
            if change.verb == "unchanged":
                continue
            instance = change.instance
            if change.kind == "security system":
                instance.service_desk_connection = (
                    Connection.objects.get(name=change.parent) if change.parent else None
                )
            elif change.kind == "endpoint":
                instance.security_system = SecuritySystem.objects.get(name=change.parent)
            instance.save()
    return ImportResult(changes=plan.changes)


# --- exporting ---------------------------------------------------------------------------------


def export_package(names: Iterable[str]) -> dict:
    """Our package format for the named connections and/or security systems, without secrets.

    A connection brings its security systems and their endpoints; a security system brings
    its endpoints and its connection. Every secret becomes a `@NAME@` secret variable: the
    value itself is never written.
    """
    connections: dict[str, Connection] = {}
    systems: dict[str, SecuritySystem] = {}
    missing = []
    for name in names:
        connection = Connection.objects.filter(name=name).first()
        system = (
            SecuritySystem.objects.filter(name=name)
            .select_related("service_desk_connection")
            .first()
        )
        if connection:
            connections[name] = connection
            systems.update(
                (s.name, s)
                for s in connection.security_systems.select_related("service_desk_connection")
            )
        elif system:
            systems[name] = system
            if system.service_desk_connection:
                connections[system.service_desk_connection.name] = system.service_desk_connection
        else:
            missing.append(name)
    if missing:
        raise PackageError(
            [f"{name}: no connection or security system has this name" for name in missing]
        )
    variables: dict[str, dict] = {}
    exported_connections = [
        _export_connection(c, variables) for c in sorted(connections.values(), key=lambda c: c.name)
    ]
    endpoints = Endpoint.objects.filter(security_system__in=systems.values()).select_related(
        "security_system"
    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": "-".join(sorted(connections) or sorted(systems)),
        "description": f"Exported from OTRS Bridge on {timezone.now():%Y-%m-%d %H:%M} UTC",
        "variables": variables,
        "connections": exported_connections,
        "securitySystems": [
            _export_security_system(s) for s in sorted(systems.values(), key=lambda s: s.name)
        ],
        "endpoints": [_export_endpoint(e) for e in endpoints],
    }


def _export_connection(connection: Connection, variables: dict[str, dict]) -> dict:
    """A connection entry whose ConnectionJSON holds secret variables where the secrets were."""
    item = {
        "name": connection.name,
        "description": connection.description,
        "connectionJSON": _secrets_as_variables(
            connection.connection_json, connection.name, variables, ()
        ),
        "createTicketJSON": connection.create_ticket_json,
        "ticketStatusJSON": connection.ticket_status_json,
    }
    if connection.config_json:
        item["configJSON"] = connection.config_json
    item.update({key: getattr(connection, key) for key in CONNECTION_SETTINGS})
    return item


def _secrets_as_variables(
    node: Any, connection: str, variables: dict[str, dict], path: tuple[str, ...]
) -> Any:
    """Replace each secret placeholder of a stored (public) ConnectionJSON with a new variable."""
    if isinstance(node, dict):
        return {
            k: _secrets_as_variables(v, connection, variables, (*path, str(k)))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            _secrets_as_variables(v, connection, variables, (*path, str(i)))
            for i, v in enumerate(node)
        ]
    if node != SECRET_PLACEHOLDER:
        return node
    name = _variable_name(path[-1], variables)
    variables[name] = {
        "description": f"Secret of connection {connection} at {'.'.join(path)}",
        "secret": True,
    }
    return f"@{name}@"


def _variable_name(key: str, taken: dict[str, dict]) -> str:
    """PASSWORD for a `password` key, then PASSWORD_2 for the next one; always a valid name."""
    base = re.sub(r"[^A-Z0-9]+", "_", key.upper()).strip("_")
    if not _VARIABLE_NAME.match(base):
        base = f"SECRET_{base}".rstrip("_")
    name, counter = base, 1
    while name in taken:
        counter += 1
        name = f"{base}_{counter}"
    return name


def _export_security_system(system: SecuritySystem) -> dict:
    connection = system.service_desk_connection
    return {
        "name": system.name,
        "display_name": system.display_name,
        "description": system.description,
        "instant_provisioning": system.instant_provisioning,
        "provisioning_tries": system.provisioning_tries,
        **({"connection": connection.name} if connection else {}),
    }


def _export_endpoint(endpoint: Endpoint) -> dict:
    return {
        "name": endpoint.name,
        "display_name": endpoint.display_name,
        "security_system": endpoint.security_system.name,
        "attributes": endpoint.attributes,
        "entitlements": endpoint.entitlements,
    }
