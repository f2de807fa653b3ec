"""Connection packages: import (dry run, apply, idempotent re-import, rollback), bad packages,
Saviynt transport zips with their defects, export without secrets, and the shipped package
against the simulator over real HTTP."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError

from connections import crypto
from connections.models import Connection, ConnectionToken, Endpoint, SecuritySystem
from connections.package_format import PackageError
from connections.packages import (
    apply_import,
    export_package,
    load_package,
    plan_import,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "packages" / "otrs-genericticketconnector.json"
SAVIYNT_DIR = Path(__file__).resolve().parent / "fixtures" / "packages" / "saviynt"
BASEURL = (
    "http://otrs.example.test/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
)
PASSWORD = "Sh1ny-agent-pa55word"
VALUES = {
    "BASEURL": BASEURL,
    "USERNAME": "bridge",
    "PASSWORD": PASSWORD,
    "CUSTOMERUSER": "iga@example.com",
}

pytestmark = pytest.mark.django_db


def _set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def _counts() -> tuple[int, int, int]:
    return Connection.objects.count(), SecuritySystem.objects.count(), Endpoint.objects.count()


def _import_shipped(**values: str) -> Connection:
    apply_import(
        plan_import(load_package(SHIPPED.read_bytes(), SHIPPED.name), {**VALUES, **values})
    )
    return Connection.objects.get(name=values.get("CONNECTION", "otrs"))


def _package(**changes) -> dict:
    """The shipped package as a dict, with one security system and two endpoints added."""
    document = json.loads(SHIPPED.read_text())
    document["securitySystems"] = [
        {
            "name": "apps",
            "display_name": "Business apps",
            "connection": "@CONNECTION@",
            "provisioning_tries": 3,
        }
    ]
    document["endpoints"] = [
        {
            "name": "app1",
            "security_system": "apps",
            "attributes": {"queue": "Raw"},
            "entitlements": ["read"],
        },
        {"name": "app2", "security_system": "apps", "attributes": {"queue": "Misc"}},
    ]
    document.update(changes)
    return document


def _load(document: dict, filename: str = "package.json"):
    return load_package(json.dumps(document).encode(), filename)


# --- our format: dry run, apply, re-import ------------------------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(capsys):
    call_command("import_package", str(SHIPPED), "--dry-run", *_set_args(VALUES))
    out = capsys.readouterr().out
    assert "create connection otrs" in out
    assert "Dry run: nothing was written." in out
    assert _counts() == (0, 0, 0)


def test_import_creates_the_connection_with_its_secret_encrypted(capsys):
    call_command("import_package", str(SHIPPED), *_set_args(VALUES))
    assert "create connection otrs" in capsys.readouterr().out
    connection = Connection.objects.get(name="otrs")
    auth = connection.connection_json["authentications"]["otrsSession"]
    assert auth["properties"] == {"userName": "bridge", "password": "********"}
    assert auth["url"] == f"{BASEURL}/Session"
    assert (
        connection.connection_document()["authentications"]["otrsSession"]["properties"]["password"]
        == PASSWORD
    )
    stored = Connection.objects.filter(pk=connection.pk).values()[0]
    assert PASSWORD not in json.dumps(stored, default=str)
    create = connection.create_ticket_json["call"][0]["httpParams"]
    # The variable's default, for endpoints without a "queue" attribute.
    assert create["Ticket"]["Queue"] == "${endpoint.queue|Raw}"
    assert create["Ticket"]["CustomerUser"] == "iga@example.com"


def test_reimport_is_idempotent_and_reports_what_changed():
    _import_shipped()
    package = load_package(SHIPPED.read_bytes(), SHIPPED.name)
    again = plan_import(package, VALUES)
    assert again.lines() == ["unchanged connection otrs"]
    apply_import(again)
    assert _counts() == (1, 0, 0)

    changed = plan_import(package, {**VALUES, "PASSWORD": "a-new-password", "QUEUE": "Misc"})
    assert changed.lines() == ["update connection otrs (connectionJSON, createTicketJSON)"]
    apply_import(changed)
    connection = Connection.objects.get(name="otrs")
    assert (
        connection.connection_document()["authentications"]["otrsSession"]["properties"]["password"]
        == "a-new-password"
    )


def test_security_systems_and_endpoints_are_created_then_updated():
    apply_import(plan_import(_load(_package()), VALUES))
    assert SecuritySystem.objects.get(name="apps").service_desk_connection.name == "otrs"
    assert Endpoint.objects.get(name="app2").security_system.name == "apps"

    document = _package()
    document["endpoints"][0]["attributes"] = {"queue": "Junk"}
    plan = plan_import(_load(document), VALUES)
    assert plan.lines() == [
        "unchanged connection otrs",
        "unchanged security system apps",
        "update endpoint app1 (attributes)",
        "unchanged endpoint app2",
    ]
    apply_import(plan)
    assert Endpoint.objects.get(name="app1").attributes == {"queue": "Junk"}


def test_a_failure_midway_rolls_the_whole_import_back():
    plan = plan_import(_load(_package()), VALUES)
    # Someone creates endpoint app2 between the preview and the apply: the connection and the
    # security system are written first, then app2's INSERT fails on the unique name.
    other = SecuritySystem.objects.create(name="other")
    Endpoint.objects.create(name="app2", security_system=other)
    before = _counts()
    with pytest.raises(IntegrityError):
        apply_import(plan)
    assert _counts() == before == (0, 1, 1)


def test_connection_names_can_be_chosen_at_import():
    _import_shipped(CONNECTION="otrs-prod")
    _import_shipped(CONNECTION="otrs-test")
    assert sorted(Connection.objects.values_list("name", flat=True)) == ["otrs-prod", "otrs-test"]


# --- bad packages ---------------------------------------------------------------------------


def _zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _without_name() -> dict:
    document = _package()
    del document["connections"][0]["name"]
    del document["connections"][0]["createTicketJSON"]
    return document


def _duplicate_endpoint() -> dict:
    document = _package()
    document["endpoints"][1]["name"] = "app1"
    return document


def _undeclared_variable() -> dict:
    document = _package()
    document["endpoints"][0]["attributes"] = {"queue": "@SUPPORT_QUEUE@"}
    return document


BAD_PACKAGES = {
    "not json": (
        "package.json",
        b'{"format": "otrs-bridge-package",',
        [
            "package.json: not valid JSON at line 1 column 34 (expecting property name enclosed in double quotes)"
        ],
    ),
    "wrong zip": (
        "package.zip",
        b"PK\x03\x04 this is no zip at all",
        ["package.zip: not a readable zip file"],
    ),
    "zip of something else": (
        "export.zip",
        _zip({"readme.txt": b"hello"}),
        [
            "export.zip: not a Saviynt transport export: it needs Connection_<time>(UTC).json and "
            "ObjectSummary_<time>(UTC).json, and it holds readme.txt"
        ],
    ),
    "unknown format": (
        "package.json",
        json.dumps({"format": "something-else", "version": 1}).encode(),
        [
            'package.json: format: expected "otrs-bridge-package", got "something-else"; not an OTRS Bridge package'
        ],
    ),
    "unknown version": (
        "package.json",
        json.dumps(_package(version=2)).encode(),
        ["package.json: version: unsupported version 2; this bridge reads version 1"],
    ),
    "missing fields": (
        "package.json",
        json.dumps(_without_name()).encode(),
        [
            "package.json: connections[0].name: is required",
            "package.json: connections[0].createTicketJSON: is required",
        ],
    ),
    "wrong types": (
        "package.json",
        json.dumps(
            _package(endpoints=[{"name": "x", "security_system": "apps", "entitlements": "read"}])
        ).encode(),
        ["package.json: endpoints[0].entitlements: must be a list"],
    ),
    "duplicate names": (
        "package.json",
        json.dumps(_duplicate_endpoint()).encode(),
        ['package.json: endpoints[1].name: duplicate name "app1" (also endpoints[0])'],
    ),
    "undeclared variable": (
        "package.json",
        json.dumps(_undeclared_variable()).encode(),
        ["package.json: endpoints[0]: @SUPPORT_QUEUE@ is used but not declared in variables"],
    ),
    "50 MB file": (
        "huge.json",
        b" " * (50 * 1024 * 1024),
        [
            "huge.json: 52,428,800 bytes is larger than the 5,242,880 bytes a package may have (PACKAGE_MAX_BYTES)"
        ],
    ),
    "zip bomb": (
        "bomb.zip",
        _zip({"Connection_x.json": b"0" * (6 * 1024 * 1024), "ObjectSummary_x.json": b"{}"}),
        [
            "bomb.zip: unpacks to 6,291,458 bytes, more than the 5,242,880 bytes allowed (PACKAGE_MAX_BYTES)"
        ],
    ),
}


@pytest.mark.parametrize("case", BAD_PACKAGES)
def test_a_bad_package_is_refused_with_a_clear_error_and_changes_nothing(case, tmp_path):
    _import_shipped()
    before = _counts()
    filename, data, expected = BAD_PACKAGES[case]
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(CommandError) as raised:
        call_command("import_package", str(path), *_set_args(VALUES))
    for message in expected:
        assert message in str(raised.value)
    assert "nothing was written" in str(raised.value)
    assert _counts() == before


def test_an_invalid_document_is_reported_with_connection_document_path_and_problem():
    document = _package()
    body = '{"SessionID":"${access_token}","Ticket":{"Title":"[${correlationKey}]"}}'
    document["connections"][0]["createTicketJSON"]["call"][0]["httpParams"] = body + "}"
    document["connections"][0]["ticketStatusJSON"]["call"][0].pop("ticketStatusPath")
    with pytest.raises(PackageError) as raised:
        plan_import(_load(document), VALUES)
    errors = raised.value.errors
    assert (
        f"otrs: CreateTicketJSON: call[0].httpParams: not valid JSON at line 1 column {len(body) + 1} (extra data)"
        in errors
    )
    assert "otrs: TicketStatusJSON: call[0]: ticketStatusPath is required" in errors
    assert _counts() == (0, 0, 0)


def test_missing_and_unknown_variables_are_named():
    package = load_package(SHIPPED.read_bytes(), SHIPPED.name)
    with pytest.raises(PackageError) as raised:
        plan_import(package, {"BASEURL": BASEURL, "USERNAME": "bridge", "PASWORD": "typo"})
    assert raised.value.errors == [
        "variable PASWORD: this package has no such variable",
        "variable PASSWORD: a value is required (the package uses @PASSWORD@)",
    ]


def test_references_to_unknown_objects_and_model_limits_are_reported():
    document = _package()
    document["securitySystems"][0]["connection"] = "nowhere"
    document["securitySystems"][0]["provisioning_tries"] = 50
    document["endpoints"][1]["security_system"] = "unknown-system"
    with pytest.raises(PackageError) as raised:
        plan_import(_load(document), VALUES)
    assert raised.value.errors == [
        'package.json: securitySystems[0].connection: no connection named "nowhere" in the package or the database',
        "package.json: securitySystems[0].provisioning_tries: Ensure this value is less than or equal to 20.",
        'package.json: endpoints[1].security_system: no security system named "unknown-system" in the package '
        "or the database",
    ]


def test_command_lists_every_problem_and_exits_with_1(tmp_path):
    path = tmp_path / "package.json"
    path.write_text(json.dumps(_without_name()))
    with pytest.raises(CommandError) as raised:
        call_command("import_package", str(path))
    assert raised.value.returncode == 1
    assert "package.json was not imported (2 problems); nothing was written:" in str(raised.value)


# --- Saviynt transport zips -----------------------------------------------------------------

CONNECTION_JSON = {
    "authentications": {
        "userAuth": {
            "authType": "oauth2",
            "url": "https://otrs.tenant.example.invalid/otrs/nph-genericinterface.pl/Webservice/IGATicketConnector/Session",
            "httpMethod": "POST",
            "httpParams": {
                "UserLogin": "${connection.userName}",
                "Password": "${connection.password}",
            },
            "properties": {"userName": "iga-agent", "password": PASSWORD},
            "tokenResponsePath": "SessionID",
            "tokenType": "",
            "errorPath": "Error.ErrorCode",
            "authError": ["TicketCreate.AuthFail", "TicketGet.AuthFail"],
        }
    }
}


def _saviynt_zip() -> bytes:
    return _zip({path.name: path.read_bytes() for path in SAVIYNT_DIR.iterdir()})


def _saviynt_documents() -> dict:
    exported = json.loads(next(SAVIYNT_DIR.glob("Connection_*.json")).read_text())
    attributes = {
        a["attributename"]: a["encryptedattributevalue"]
        for a in exported["OTRS_Tickets"]["EXTERNAL_ATTR"]
    }
    return {key: json.loads(attributes[key]) for key in ("CreateTicketJSON", "TicketStatusJSON")}


def test_a_saviynt_zip_is_read_with_its_documents_as_text():
    package = load_package(_saviynt_zip(), "OTRS.zip")
    assert package.kind == "saviynt-transport"
    assert package.description.startswith(
        "Saviynt transport export from iga.tenant.example.invalid"
    )
    [connection] = package.connections
    assert connection.name == "OTRS_Tickets"
    assert connection.documents["connectionJSON"] is None  # encrypted in the export
    assert "}}}}" in connection.editable_documents()["createTicketJSON"]
    assert sorted(package.variables) == ["HOSTNAME", "USERNAME"]


def test_saviynt_defects_are_reported_precisely_then_fixed_and_imported():
    package = load_package(_saviynt_zip(), "OTRS.zip")
    values = {"HOSTNAME": "otrs.tenant.example.invalid", "USERNAME": "iga-agent"}
    with pytest.raises(PackageError) as raised:
        plan_import(package, values)
    assert raised.value.errors == [
        "OTRS_Tickets: ConnectionJSON: is required (a Saviynt export carries it encrypted; enter it)"
    ]

    overrides = {"OTRS_Tickets": {"connectionJSON": json.dumps(CONNECTION_JSON)}}
    with pytest.raises(PackageError) as raised:
        plan_import(package, values, overrides=overrides)
    errors = raised.value.errors
    assert (
        "OTRS_Tickets: CreateTicketJSON: call[0].httpParams: not valid JSON at line 1 column 386 (extra data)"
        in errors
    )
    assert (
        "OTRS_Tickets: CreateTicketJSON: call[0].url: Password= in the URL: credentials in a URL reach access logs; "
        "put them in the body" in errors
    )
    assert any(
        e.startswith("OTRS_Tickets: TicketStatusJSON: call[0].url: Password= in the URL")
        for e in errors
    )
    assert any("${ticketStatusValue} cannot be used here" in e for e in errors)

    # Fixing only the extra brace brings the next defect to light: Article inside Ticket.
    documents = _saviynt_documents()
    create = documents["CreateTicketJSON"]
    create["call"][0]["httpParams"] = create["call"][0]["httpParams"][:-1]
    overrides["OTRS_Tickets"]["createTicketJSON"] = json.dumps(create)
    with pytest.raises(PackageError) as raised:
        plan_import(package, values, overrides=overrides)
    assert any(
        e.startswith(
            "OTRS_Tickets: CreateTicketJSON: call[0].httpParams.Ticket.Article: Article is nested inside Ticket"
        )
        for e in raised.value.errors
    )

    overrides["OTRS_Tickets"].update(_corrected_saviynt_documents())
    plan = plan_import(package, values, overrides=overrides)
    assert plan.lines() == ["create connection OTRS_Tickets"]
    apply_import(plan)
    connection = Connection.objects.get(name="OTRS_Tickets")
    assert connection.create_ticket_json["call"][0]["httpParams"]["Ticket"]["State"] == "new"
    assert "@HOSTNAME@" not in json.dumps(connection.ticket_status_json)
    assert (
        connection.connection_json["authentications"]["userAuth"]["properties"]["password"]
        == "********"
    )


def _corrected_saviynt_documents() -> dict[str, str]:
    """What an admin types into the import form: the same documents, with the defects fixed."""
    documents = _saviynt_documents()
    create = documents["CreateTicketJSON"]["call"][0]
    create["url"] = create["url"].split("/TicketCreate")[0] + "/Ticket"
    create.pop("httpHeaders")
    article = {
        "Subject": "Application access request",
        "Body": "Task ${task} for ${user.firstname}",
        "ContentType": "text/plain; charset=utf8",
        "CommunicationChannel": "Internal",
    }
    create["httpParams"] = {
        "SessionID": "${access_token}",
        "Ticket": {
            "Title": "Access ticket ${correlationKey}",
            "Queue": "Raw",
            "State": "new",
            "Priority": "3 normal",
            "CustomerUser": "iga-admin",
        },
        "Article": article,
    }
    status = documents["TicketStatusJSON"]["call"][0]
    status.update(
        url="https://@HOSTNAME@/otrs/nph-genericinterface.pl/Webservice/IGATicketConnector/Ticket/${ticketID}"
        "?SessionID=${access_token}",
        httpMethod="GET",
        successResponses={"statusCode": [200]},
    )
    status.pop("httpHeaders")
    return {
        key: json.dumps(document)
        for key, document in (
            ("createTicketJSON", documents["CreateTicketJSON"]),
            ("ticketStatusJSON", documents["TicketStatusJSON"]),
        )
    }


def test_a_placeholder_with_no_stored_secret_behind_it_is_refused():
    package = load_package(_saviynt_zip(), "OTRS.zip")
    document = json.loads(json.dumps(CONNECTION_JSON))
    document["authentications"]["userAuth"]["properties"]["password"] = "********"
    overrides = {
        "OTRS_Tickets": {"connectionJSON": json.dumps(document), **_corrected_saviynt_documents()}
    }
    with pytest.raises(PackageError) as raised:
        plan_import(package, {"HOSTNAME": "otrs.example", "USERNAME": "u"}, overrides=overrides)
    assert raised.value.errors == [
        "OTRS_Tickets: ConnectionJSON: authentications.userAuth.properties.password: ******** keeps a stored "
        "secret, but there is none here; type the value"
    ]


def test_import_command_takes_the_connection_json_of_a_saviynt_zip(tmp_path):
    archive = tmp_path / "OTRS.zip"
    archive.write_bytes(_saviynt_zip())
    connection_json = tmp_path / "connection.json"
    connection_json.write_text(json.dumps(CONNECTION_JSON))
    with pytest.raises(CommandError) as raised:
        call_command(
            "import_package",
            str(archive),
            "--connection-json",
            str(connection_json),
            "--set",
            "HOSTNAME=otrs.tenant.example.invalid",
            "--set",
            "USERNAME=iga-agent",
        )
    assert (
        "OTRS_Tickets: CreateTicketJSON: call[0].httpParams: not valid JSON at line 1 column 386"
        in str(raised.value)
    )
    assert PASSWORD not in str(raised.value)
    assert _counts() == (0, 0, 0)


def test_a_zip_with_a_non_rest_connection_is_refused():
    exported = {
        "AD_Conn": {
            "connectionname": "AD_Conn",
            "externalconnectiontype": "AD",
            "EXTERNAL_ATTR": [],
        }
    }
    data = _zip(
        {
            "Connection_1.json": json.dumps(exported).encode(),
            "ObjectSummary_1.json": json.dumps({"Objects": {"connection": ["AD_Conn"]}}).encode(),
        }
    )
    with pytest.raises(PackageError) as raised:
        load_package(data, "ad.zip")
    assert raised.value.errors == [
        'ad.zip/Connection_1.json: AD_Conn.externalconnectiontype: is "AD"; only REST connections can open tickets'
    ]


# --- export --------------------------------------------------------------------------------


def test_export_holds_no_secret_and_imports_back_unchanged(capsys):
    apply_import(plan_import(_load(_package()), VALUES))
    connection = Connection.objects.get(name="otrs")
    session_id = "Xq7pL2mN9vB4cR8tY1wZ5kD3fG6hJ0sA"
    ConnectionToken.objects.create(
        connection=connection, auth_name="otrsSession", token_encrypted=crypto.encrypt(session_id)
    )
    connection.set_webhook_secret("webhook-secret-value")
    connection.save()

    call_command("export_package", "otrs")
    text = capsys.readouterr().out
    for secret in (PASSWORD, session_id, "webhook-secret-value"):
        assert secret not in text
    exported = json.loads(text)
    assert exported["variables"] == {
        "PASSWORD": {
            "description": "Secret of connection otrs at authentications.otrsSession.properties.password",
            "secret": True,
        }
    }
    assert exported["connections"][0]["connectionJSON"]["authentications"]["otrsSession"][
        "properties"
    ] == {
        "userName": "bridge",
        "password": "@PASSWORD@",
    }
    assert [e["name"] for e in exported["endpoints"]] == ["app1", "app2"]

    plan = plan_import(_load(exported, "otrs.json"), {"PASSWORD": PASSWORD})
    assert plan.has_changes is False


def test_export_names_each_secret_variable_once():
    _import_shipped(CONNECTION="otrs-prod")
    _import_shipped(CONNECTION="otrs-test", PASSWORD="another-password")
    exported = export_package(["otrs-prod", "otrs-test"])
    assert sorted(exported["variables"]) == ["PASSWORD", "PASSWORD_2"]
    text = json.dumps(exported)
    assert PASSWORD not in text and "another-password" not in text
    plan = plan_import(_load(exported), {"PASSWORD": PASSWORD, "PASSWORD_2": "another-password"})
    assert plan.lines() == ["unchanged connection otrs-prod", "unchanged connection otrs-test"]


def test_export_of_a_security_system_brings_its_connection_and_endpoints():
    apply_import(plan_import(_load(_package()), VALUES))
    exported = export_package(["apps"])
    assert [c["name"] for c in exported["connections"]] == ["otrs"]
    assert [s["name"] for s in exported["securitySystems"]] == ["apps"]
    with pytest.raises(PackageError) as raised:
        export_package(["apps", "nothing-here"])
    assert raised.value.errors == ["nothing-here: no connection or security system has this name"]


def test_export_command_writes_a_file(tmp_path):
    _import_shipped()
    target = tmp_path / "out.json"
    call_command("export_package", "otrs", "-o", str(target))
    assert json.loads(target.read_text())["format"] == "otrs-bridge-package"


# --- the shipped package against the simulator --------------------------------------------


def test_shipped_package_passes_connection_check_against_the_simulator(sim):
    from connections.services import connection_check

    connection = _import_shipped(
        BASEURL=sim.base_url, USERNAME="bridge", PASSWORD="bridge-demo-password"
    )
    result = connection_check(connection=connection)
    assert result.ok, result.message
    assert "bridge-demo-password" not in json.dumps(result.exchanges, default=str)


def test_shipped_package_with_a_wrong_password_fails_the_check(sim):
    from connections.services import connection_check

    connection = _import_shipped(BASEURL=sim.base_url, PASSWORD="not-the-password")
    result = connection_check(connection=connection)
    assert not result.ok
    assert "not-the-password" not in result.message + json.dumps(result.exchanges, default=str)


def test_planning_leaves_the_loaded_package_as_it_was():
    """Planning never mutates the loaded package: the same Package can be planned twice."""
    package = load_package(SHIPPED.read_bytes(), SHIPPED.name)
    snapshot = copy.deepcopy(package)
    plan_import(package, VALUES)
    assert package == snapshot


def test_a_secret_variable_outside_the_encrypted_credentials_is_refused():
    document = json.loads(SHIPPED.read_text())
    call = document["connections"][0]["createTicketJSON"]["call"][0]
    call["httpHeaders"] = {"X-Api-Key": "@PASSWORD@"}
    with pytest.raises(PackageError) as caught:
        plan_import(_load(document), VALUES)
    [message] = [e for e in caught.value.errors if "variable PASSWORD" in e]
    assert "CreateTicketJSON.call[0].httpHeaders.X-Api-Key" in message
    assert "plain text" in message and PASSWORD not in message
    assert _counts() == (0, 0, 0)
