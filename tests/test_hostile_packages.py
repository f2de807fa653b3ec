"""Hostile package files: whatever a package or a transport zip holds, the loader, the admin
import pages and `manage.py import_package` answer with a refusal that names the place
(PackageError / SpecError, a message on the page, a CommandError), never with a crash."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connections.package_format import PackageError
from connections.packages import load_package, plan_import
from connections.paths import MAX_JSON_DEPTH, loads_strict
from connections.spec import SpecError
from tests.test_packages import CONNECTION_JSON, SAVIYNT_DIR, VALUES, _package

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written into the worktree; a failure prints its example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Stand-ins that json.dumps writes as strings and _bytes() swaps for raw JSON text: JSON
# nested deeper than any parser should follow, and a string that holds such JSON (the
# documents inside a transport zip are text).
DEEP, DEEP_TEXT = "\ue000deep", "\ue000deep-text"
_DELETE = object()


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _bytes(document: Any, levels: int) -> bytes:
    text = json.dumps(document, ensure_ascii=False)
    text = text.replace(json.dumps(DEEP, ensure_ascii=False), _deep(levels))
    text = text.replace(json.dumps(DEEP_TEXT, ensure_ascii=False), json.dumps(_deep(levels)))
    return text.encode()


SPECIAL_STRINGS = st.sampled_from(
    [
        "",
        "\x00",
        "@BASEURL@",
        "@PASSWORD@",
        "@UNDECLARED@",
        "${task.id}",
        "${",
        "********",
        "REST",
        "connection",
        "OTRS_Tickets",
        "../../etc/passwd",
        "{}",
        "[]",
        '{"a": 1, "a": 2}',
        "not json",
        DEEP,
        DEEP_TEXT,
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | SPECIAL_STRINGS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | SPECIAL_STRINGS, children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in parsed JSON, the whole document included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(document: Any, changes: list[tuple[tuple, Any]]) -> Any:
    """The document with each change applied: a value put at a place, or the place deleted."""
    for path, value in changes:
        if not path:
            document = None if value is _DELETE else value
            continue
        parent = document
        try:
            for step in path[:-1]:
                parent = parent[step]
            if value is _DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced this place
    return document


def _mutations(original: Any) -> st.SearchStrategy:
    places = _paths(original)
    change = st.tuples(st.sampled_from(places), JSON_VALUES | st.just(_DELETE))
    return st.lists(change, min_size=1, max_size=3).map(
        lambda changes: _mutate(copy.deepcopy(original), changes)
    )


def _load_and_plan(data: bytes, filename: str) -> None:
    """What an import does before it writes: any other exception fails the test."""
    try:
        package = load_package(data, filename)
        values = {**VALUES, **{name: "x" for name in package.variables if name not in VALUES}}
        plan_import(package, values)
    except (PackageError, SpecError) as refusal:
        assert str(refusal).strip(), "a refusal must say what is wrong"


# --- our format -------------------------------------------------------------------------------

BRIDGE_PACKAGE = _package()


@FUZZ
@given(document=_mutations(BRIDGE_PACKAGE), levels=st.integers(1, 3000))
def test_a_mutated_package_is_imported_or_refused(document, levels):
    _load_and_plan(_bytes(document, levels), "package.json")


@FUZZ
@given(document=JSON_VALUES, levels=st.integers(1, 3000))
def test_any_json_is_refused_as_a_package_without_a_crash(document, levels):
    _load_and_plan(_bytes(document, levels), "package.json")


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_are_refused_as_a_package_without_a_crash(data):
    _load_and_plan(data, "package.json")


# --- Saviynt transport zips -------------------------------------------------------------------

CONNECTION_FILE = json.loads(next(SAVIYNT_DIR.glob("Connection_*.json")).read_text())
SUMMARY_FILE = json.loads(next(SAVIYNT_DIR.glob("ObjectSummary_*.json")).read_text())
# Generated names keep something before a NUL: zipfile cuts a name there and cannot write
# an empty one.
MEMBER_NAMES = st.sampled_from(
    [
        "Connection_2024-03-05_10-20-30(UTC).json",
        "ObjectSummary_2024-03-05_10-20-30(UTC).json",
        "export/Connection_b.json",
        "ObjectSummary_b.json",
        "readme.txt",
        "../Connection_up.json",
    ]
) | st.text(min_size=1, max_size=20).filter(lambda name: name.split("\x00")[0])


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


@st.composite
def transport_zips(draw) -> bytes:
    levels = draw(st.integers(1, 3000))
    member = st.one_of(
        _mutations(CONNECTION_FILE).map(lambda d: _bytes(d, levels)),
        _mutations(SUMMARY_FILE).map(lambda d: _bytes(d, levels)),
        JSON_VALUES.map(lambda d: _bytes(d, levels)),
        st.binary(max_size=100),
    )
    members = [
        ("Connection_2024-03-05_10-20-30(UTC).json", draw(member)),
        ("ObjectSummary_2024-03-05_10-20-30(UTC).json", draw(member)),
    ]
    members += draw(st.lists(st.tuples(MEMBER_NAMES, member), max_size=3))
    data = _zip(draw(st.permutations(members)))
    if draw(st.integers(0, 3)) == 0:  # now and then a zip cut short
        return data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(data=transport_zips())
def test_a_mutated_transport_zip_is_imported_or_refused(data):
    _load_and_plan(data, "export.zip")


# --- the shapes that crashed, by name --------------------------------------------------------


def _transport(summary: Any = SUMMARY_FILE, connections: Any = CONNECTION_FILE) -> bytes:
    return _zip(
        [
            ("Connection_1(UTC).json", json.dumps(connections).encode()),
            ("ObjectSummary_1(UTC).json", json.dumps(summary).encode()),
        ]
    )


def _with_attribute(name: str, value: Any) -> dict:
    exported = copy.deepcopy(CONNECTION_FILE)
    for attribute in exported["OTRS_Tickets"]["EXTERNAL_ATTR"]:
        if attribute["attributename"] == name:
            attribute["encryptedattributevalue"] = value
    return exported


DEEP_PACKAGE = json.dumps({**_package(), "description": DEEP}).replace(
    json.dumps(DEEP), _deep(5000)
)

HOSTILE = {
    "package nested 5000 deep": (
        "deep.json",
        DEEP_PACKAGE.encode(),
        "deep.json: nested too deeply at line 1 column",
    ),
    "package nested just too deep": (
        "deep.json",
        _bytes({**_package(), "description": DEEP}, MAX_JSON_DEPTH),
        f"deep.json: nested too deeply at description{'[0]' * (MAX_JSON_DEPTH - 1)} "
        f"(more than {MAX_JSON_DEPTH} levels)",
    ),
    "a NUL in a package": (
        "nul.json",
        json.dumps({**_package(), "description": "a\x00b"}).encode(),
        "nul.json: description: contains a NUL character (\\u0000), which cannot be stored",
    ),
    "summary is a string": (
        "export.zip",
        _transport(summary="Objects"),
        "export.zip/ObjectSummary_1(UTC).json: must be an object with Objects and Information",
    ),
    "Objects is a string": (
        "export.zip",
        _transport(summary={"Objects": "connection"}),
        "export.zip/ObjectSummary_1(UTC).json: Objects: must be an object: kind → list of names",
    ),
    "Objects.connection is a number": (
        "export.zip",
        _transport(summary={"Objects": {"connection": 7}}),
        "export.zip/ObjectSummary_1(UTC).json: Objects.connection: must be a list of connection names",
    ),
    "another kind of object is a number": (
        "export.zip",
        _transport(summary={"Objects": {"connection": ["OTRS_Tickets"], "role": 3}}),
        "export.zip/ObjectSummary_1(UTC).json: Objects.role: must be a list of names",
    ),
    "Information is a string": (
        "export.zip",
        _transport(summary={**SUMMARY_FILE, "Information": "exported"}),
        "export.zip/ObjectSummary_1(UTC).json: Information: must be an object",
    ),
    "the Connection file is a list": (
        "export.zip",
        _transport(connections=[CONNECTION_FILE]),
        "export.zip/Connection_1(UTC).json: must be an object keyed by connection name",
    ),
    "an attribute value is an object": (
        "export.zip",
        _transport(connections=_with_attribute("CreateTicketJSON", {"call": []})),
        "OTRS_Tickets.EXTERNAL_ATTR[",
    ),
    "the description is a list": (
        "export.zip",
        _transport(
            connections={
                "OTRS_Tickets": {**CONNECTION_FILE["OTRS_Tickets"], "connectiondescription": []}
            }
        ),
        "OTRS_Tickets.connectiondescription: must be a string",
    ),
    "a zip member nested 5000 deep": (
        "export.zip",
        _zip(
            [
                ("Connection_1(UTC).json", _deep(5000).encode()),
                ("ObjectSummary_1(UTC).json", json.dumps(SUMMARY_FILE).encode()),
            ]
        ),
        "export.zip/Connection_1(UTC).json: nested too deeply at line 1 column 33",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_file_is_refused_by_the_loader_with_its_place(case):
    filename, data, expected = HOSTILE[case]
    with pytest.raises(PackageError) as raised:
        load_package(data, filename)
    assert any(expected in error for error in raised.value.errors), raised.value.errors


# A document nested too deeply inside a zip is text, editable on the configure page: the
# refusal comes when the import is planned, naming the connection and the document.
DEEP_DOCUMENT_ZIP = _transport(connections=_with_attribute("CreateTicketJSON", _deep(5000)))
DEEP_DOCUMENT_ERROR = "OTRS_Tickets: CreateTicketJSON: nested too deeply at line 1 column 33"


def test_a_document_nested_too_deeply_in_a_zip_is_refused_when_planned():
    package = load_package(DEEP_DOCUMENT_ZIP, "export.zip")
    with pytest.raises(PackageError) as raised:
        plan_import(
            package,
            {"HOSTNAME": "otrs.example.test", "USERNAME": "x"},
            overrides={"OTRS_Tickets": {"connectionJSON": json.dumps(CONNECTION_JSON)}},
        )
    assert any(DEEP_DOCUMENT_ERROR in error for error in raised.value.errors)


def _upload(client: Client, filename: str, data: bytes):
    upload = io.BytesIO(data)
    upload.name = filename
    return client.post(reverse("admin:connections_connection_import"), {"package": upload})


@pytest.mark.parametrize("case", HOSTILE)
def test_the_admin_import_page_shows_the_refusal_of_a_hostile_file(admin_user, case):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    filename, data, expected = HOSTILE[case]
    response = _upload(client, filename, data)
    assert response.status_code == 200
    assert expected in response.content.decode()


def test_the_admin_configure_page_shows_the_refusal_of_a_deep_document(admin_user):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    assert _upload(client, "export.zip", DEEP_DOCUMENT_ZIP).status_code == 302
    configure = reverse("admin:connections_connection_import_configure")
    form = client.get(configure).context["form"]
    data = {name: form[name].value() or "" for name in form.fields}
    data.update({"var_HOSTNAME": "otrs.example.test", "var_USERNAME": "x"})
    data["doc_0_connectionJSON"] = json.dumps(CONNECTION_JSON)
    response = client.post(configure, data)
    assert response.status_code == 200
    assert "nested too deeply at line 1 column 33" in response.content.decode()


@pytest.mark.parametrize("case", HOSTILE)
def test_the_import_command_prints_the_refusal_of_a_hostile_file(case, tmp_path):
    filename, data, expected = HOSTILE[case]
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(CommandError) as raised:
        call_command("import_package", str(path), "--dry-run")
    assert expected in str(raised.value)
    assert "nothing was written" in str(raised.value)


def test_the_import_command_refuses_a_connection_json_that_is_not_text(tmp_path):
    package = tmp_path / "export.zip"
    package.write_bytes(_transport())
    document = tmp_path / "connection.json"
    document.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CommandError) as raised:
        call_command("import_package", str(package), "--connection-json", str(document))
    assert f"{document}: not UTF-8 text" in str(raised.value)


# --- the limits themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_deep(MAX_JSON_DEPTH), ""),
        (_deep(MAX_JSON_DEPTH + 1), f"more than {MAX_JSON_DEPTH} levels"),
        ('{"a": "x", "a": "y"}', "duplicate key 'a'"),
        ('{"a\\u0000": 1}', "the key 'a\\x00' contains a NUL character"),
        ('["\\u0000"]', "[0]: contains a NUL character"),
        (" " * (5 * 1024 * 1024 + 1), "more than the 5,242,880 allowed (PACKAGE_MAX_BYTES)"),
    ],
)
def test_loads_strict_bounds_depth_size_and_refuses_duplicates_and_nul(text, message):
    if not message:
        assert loads_strict(text) == json.loads(text)
        return
    with pytest.raises(ValueError) as raised:
        loads_strict(text)
    assert message in str(raised.value)
