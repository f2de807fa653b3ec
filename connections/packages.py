"""Import and export of connection packages: our versioned JSON and Saviynt transport zips.

A package carries connections (their four documents and status-check settings), security
systems and endpoints, plus the `@NAME@` variables its documents use. Importing is three
steps, so every caller (command, admin page, demo loader) gets the same checks:

1. `load_package` reads the bytes and checks the file's shape; nothing is resolved yet.
   Our format is read by `package_format`, a Saviynt transport zip by `transport`.
2. `plan_import` fills in the variables and the user's edited documents, validates every
   document with `spec.validate_documents`, and says what would be created or changed.
3. `apply_import` writes the plan in one transaction: all of it or nothing.

`export_package` writes our format back out, with every secret replaced by a secret
variable, so an export can be shared without leaking a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from . import spec
from .documents import Documents
from .models import SECRET_PLACEHOLDER, Connection, Endpoint, SecuritySystem, split_secrets
from .package_format import (
    CONNECTION_SETTINGS,
    DOCUMENTS,
    FORMAT,
    VARIABLE_NAME,
    VERSION,
    Package,
    PackageConnection,
    PackageError,
    decode_json,
    load_bridge_package,
)
from .paths import find_placeholders, iter_strings, loads_strict, resolve_placeholders
from .problems import Problems
from .transport import load_saviynt_zip

# Model field → package key, so a plan line speaks the package's language.
_PACKAGE_KEYS = {keyword: key for key, (_, keyword) in DOCUMENTS.items()}


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


# --- reading ----------------------------------------------------------------------------------


def load_package(data: bytes, filename: str) -> Package:
    """Read a package file: our JSON format, or a Saviynt transport zip (told apart by content)."""
    check_size(len(data), filename)
    if data.startswith(b"PK") or filename.lower().endswith(".zip"):
        return load_saviynt_zip(data, filename)
    return load_bridge_package(decode_json(data, filename), filename)


def check_size(size: int, where: str) -> None:
    """Refuse a file above PACKAGE_MAX_BYTES before anything reads it."""
    limit = settings.PACKAGE_MAX_BYTES
    if size > limit:
        raise PackageError(
            [
                f"{where}: {size:,} bytes is larger than the {limit:,} bytes a package may have (PACKAGE_MAX_BYTES)"
            ]
        )


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
    problems = Problems()
    resolved = _resolve_variables(package, values, overrides or {}, problems)
    if resolved is None:
        raise PackageError(problems.as_lines())
    plan = ImportPlan(package=package)
    names: dict[str, set] = {
        "connection": {c.name for c in resolved.connections},
        "security system": {s.get("name") for s in resolved.security_systems},
    }
    for connection in resolved.connections:
        _plan_connection(plan, connection, problems)
    for index, item in enumerate(resolved.security_systems):
        _plan_security_system(
            plan, item, f"{package.filename}: securitySystems[{index}]", names, problems
        )
    for index, item in enumerate(resolved.endpoints):
        _plan_endpoint(plan, item, f"{package.filename}: endpoints[{index}]", names, problems)
    if problems:
        raise PackageError(problems.as_lines())
    return plan


def _resolve_variables(
    package: Package,
    values: dict[str, str],
    overrides: dict[str, dict[str, Any]],
    problems: Problems,
) -> Package | None:
    """Apply the overrides, then replace every @NAME@ once; None when a variable is unknown or missing."""
    for name in overrides.keys() - {c.name for c in package.connections}:
        problems.add(name, "an edited document names a connection the package does not hold")
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
        problems.add(f"variable {name}", "this package has no such variable")
    filled: dict[str, str] = {}
    for name in sorted(used):
        declared = package.variables.get(name)
        value = values.get(name) or (declared.default if declared else None)
        if value is None:
            problems.add(f"variable {name}", f"a value is required (the package uses @{name}@)")
        else:
            filled[name] = value
    for name in sorted(used):
        declared = package.variables.get(name)
        if declared is not None and declared.secret:
            for path in _plain_text_places(content, name):
                problems.add(
                    f"variable {name}",
                    f"it is secret, but {path} would keep it in plain text "
                    "(and show it on pages and in exports); use it only as a credential of a "
                    "ConnectionJSON authentication, where it is stored encrypted",
                )
    if problems:
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


def _plan_connection(plan: ImportPlan, source: PackageConnection, problems: Problems) -> None:
    """Validate one connection's documents and settings, and record its change."""
    documents = {keyword: source.documents.get(key) for key, (_, keyword) in DOCUMENTS.items()}
    if not documents["connection_json"]:
        problems.add(
            f"{source.name}: ConnectionJSON",
            "is required (a Saviynt export carries it encrypted; enter it)",
        )
        return
    try:
        validate_without_secrets(**documents)
    except spec.SpecError as exc:
        for error in exc.errors:
            problems.add(source.name, error)
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
        problems.add(
            f"{source.name}: ConnectionJSON: {path.replace('/', '.')}",
            f"{SECRET_PLACEHOLDER} keeps a stored secret, but there is none here; type the value",
        )
    connection.set_connection_json(parsed["connection_json"])
    if _clean(connection, source.where, problems, exclude=["connection_json"]):
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
    plan: ImportPlan, item: dict, where: str, names: dict[str, set], problems: Problems
) -> None:
    connection_name = item.get("connection")
    if connection_name and not _will_exist(names["connection"], Connection, connection_name):
        problems.add(
            f"{where}.connection",
            f'no connection named "{connection_name}" in the package or the database',
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
    if _clean(system, where, problems, exclude=["service_desk_connection"]):
        plan.changes.append(_change("security system", system, existing, changed, connection_name))


def _plan_endpoint(
    plan: ImportPlan, item: dict, where: str, names: dict[str, set], problems: Problems
) -> None:
    system_name = item["security_system"]
    if not _will_exist(names["security system"], SecuritySystem, system_name):
        problems.add(
            f"{where}.security_system",
            f'no security system named "{system_name}" in the package or the database',
        )
    existing = Endpoint.objects.filter(name=item["name"]).select_related("security_system").first()
    endpoint = existing or Endpoint(name=item["name"])
    wanted = {
        key: item[key] for key in ("display_name", "attributes", "entitlements") if key in item
    }
    changed = _assign(endpoint, wanted)
    if existing and existing.security_system.name != system_name:
        changed.append("security_system")
    if _clean(endpoint, where, problems, exclude=["security_system"]):
        plan.changes.append(_change("endpoint", endpoint, existing, changed, system_name))


def _will_exist(
    in_package: set[str], model: type[Connection] | type[SecuritySystem], name: str
) -> bool:
    return name in in_package or model.objects.filter(name=name).exists()


def _assign(instance: Any, wanted: dict[str, Any]) -> list[str]:
    """Set the fields on `instance`; return the names of those whose value changes."""
    changed = [name for name, value in wanted.items() if getattr(instance, name) != value]
    for name, value in wanted.items():
        setattr(instance, name, value)
    return changed


def _clean(instance: Any, where: str, problems: Problems, *, exclude: list[str]) -> bool:
    """Run the model's own validation (slug names, ranges) and report it against the package."""
    try:
        instance.full_clean(exclude=exclude, validate_unique=False)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            problems.add(f"{where}.{name}", " ".join(messages))
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
    if not VARIABLE_NAME.match(base):
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
