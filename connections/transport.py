"""Saviynt transport exports (zip files) read into a Package, with Saviynt's defects named.

A transport export holds Connection_<time>(UTC).json (every connection's attributes, the
documents among them as text) and ObjectSummary_<time>(UTC).json (what was exported).
Only REST ticketing connections are taken; what else the export holds becomes a note.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
import re
import zipfile
from typing import Any

from django.conf import settings
from django.utils.text import slugify

from .package_format import (
    DOCUMENTS,
    Package,
    PackageConnection,
    PackageError,
    Variable,
    check_unique_name,
    decode_json,
)
from .paths import find_placeholders, loads_strict
from .problems import Problems

# Variables of a Saviynt export are undeclared; these names are treated as secrets.
_SECRET_VARIABLE_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
# A zip with more members than this is not a transport export; refusing early keeps a
# crafted archive from making us walk millions of entries.
_MAX_ZIP_MEMBERS = 50


def load_saviynt_zip(data: bytes, filename: str) -> Package:
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
    problems = Problems()
    connections: list[PackageConnection] = []
    exported_names: list[str] = []
    for member in connection_files:
        where = f"{filename}/{member}"
        exported = decode_json(members[member], where)
        if not isinstance(exported, dict) or not exported:
            problems.add(where, "must be an object keyed by connection name")
            continue
        exported_names.extend(exported)
        for name, attributes in exported.items():
            connection = _saviynt_connection(name, attributes, f"{where}: {name}", problems)
            if connection:
                connections.append(connection)
    summary = decode_json(members[summary_files[0]], f"{filename}/{summary_files[0]}")
    notes = _check_summary(summary, exported_names, f"{filename}/{summary_files[0]}", problems)
    seen: dict[str, str] = {}
    for connection in connections:
        check_unique_name(connection.name, connection.where, seen, problems)
    if problems:
        raise PackageError(problems.as_lines())
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
    name: str, attributes: Any, where: str, problems: Problems
) -> PackageConnection | None:
    """One entry of Connection_*.json as a PackageConnection, or None with the reason in `problems`."""
    if not isinstance(attributes, dict):
        problems.add(where, "must be an object")
        return None
    kind = attributes.get("externalconnectiontype")
    if kind != "REST":
        problems.add(
            f"{where}.externalconnectiontype",
            f"is {json.dumps(kind)}; only REST connections can open tickets",
        )
        return None
    description = attributes.get("connectiondescription")
    if not isinstance(description, str | None):
        problems.add(f"{where}.connectiondescription", "must be a string")
        return None
    values = _external_attributes(
        attributes.get("EXTERNAL_ATTR"), f"{where}.EXTERNAL_ATTR", problems
    )
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
            problems.add(
                f"{where}.EXTERNAL_ATTR",
                f"{DOCUMENTS[key][0]} is empty; this is not a ticketing connection",
            )
    connection_name = name if re.fullmatch(r"[-\w]+", name, re.ASCII) else slugify(name)
    return PackageConnection(
        name=connection_name,
        where=where,
        description=description or "",
        documents=documents,
    )


def _external_attributes(raw: Any, where: str, problems: Problems) -> dict[str, str] | None:
    """EXTERNAL_ATTR as {attributename: value}. The value field is named 'encrypted…' but is plain text."""
    if not isinstance(raw, list):
        problems.add(where, "must be a list of attributes")
        return None
    values = {}
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("attributename"), str):
            problems.add(f"{where}[{index}]", "must be an object with attributename")
            continue
        value = entry.get("encryptedattributevalue")
        if not isinstance(value, str | None):
            problems.add(f"{where}[{index}].encryptedattributevalue", "must be a string")
            continue
        values[entry["attributename"]] = value or ""
    return values


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(loads_strict(text), dict)
    except ValueError:
        return False


def _pretty(text: str) -> str:
    """Indent a document that parses, for the import form; leave a broken one exactly as it is."""
    try:
        return json.dumps(loads_strict(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def _check_summary(summary: Any, names: list[str], where: str, problems: Problems) -> list[str]:
    """Check ObjectSummary lists the connections found; return notes about objects we skip.

    Every part of it is checked for its shape first: a crafted summary is answered with
    the place that is wrong, never with a crash.
    """
    if not isinstance(summary, dict):
        problems.add(where, "must be an object with Objects and Information")
        return []
    objects = summary.get("Objects")
    if not isinstance(objects, dict):
        problems.add(
            f"{where}: Objects",
            "is required" if objects is None else "must be an object: kind → list of names",
        )
        return []
    information = summary.get("Information")
    if not isinstance(information, dict | None):
        problems.add(f"{where}: Information", "must be an object")
    listed = objects.get("connection") or []
    if not isinstance(listed, list):
        problems.add(f"{where}: Objects.connection", "must be a list of connection names")
        listed = []
    for name in names:
        if name not in listed:
            problems.add(
                f"{where}: Objects.connection",
                f"does not list {name}, which the Connection file holds",
            )
    notes = []
    for kind, items in objects.items():
        if kind == "connection" or not items:
            continue
        if isinstance(items, list):
            notes.append(
                f"{where}: {kind} objects ({', '.join(map(str, items))}) are not imported; only connections are"
            )
        else:
            problems.add(f"{where}: Objects.{kind}", "must be a list of names")
    return notes


def _summary_description(summary: dict) -> str:
    """Checked by _check_summary first: Information is an object or absent."""
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
