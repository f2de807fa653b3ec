"""Where the bridge connects: http(s) only, no user:password@, no refused network.

Checked at three places: when documents are saved (spec, the admin form), when a package is
imported (after its variables are filled in), and at call time for the rendered URL and for
every address its host name resolves to.
"""

from __future__ import annotations

import json
import socket

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from connections import addresses
from connections.client import TicketClient
from connections.errors import OTRSError
from connections.models import ApiCall, Connection
from connections.package_format import PackageError
from connections.packages import load_package, plan_import
from connections.spec import SpecError, validate_documents
from tests.engine_fixtures import documents, make_connection, sample_task_context
from tests.test_admin_setup import _change_url, _form_data
from tests.test_admin_setup import connection as admin_connection  # noqa: F401 (a fixture)
from tests.test_packages import SHIPPED, VALUES, _set_args

REFUSED_LITERALS = [
    ("169.254.169.254", "169.254.0.0/16"),
    ("169.254.1.7", "169.254.0.0/16"),
    ("[fe80::1]", "fe80::/10"),
    ("[fe80::1%25eth0]", "fe80::/10"),
    ("[fd00:ec2::254]", "fd00:ec2::254/128"),
    ("100.100.100.200", "100.100.100.200/32"),
    ("[::ffff:169.254.169.254]", "169.254.0.0/16"),
    ("2852039166", "169.254.0.0/16"),  # one decimal number
    ("0251.0376.0251.0376", "169.254.0.0/16"),  # octal parts
    ("0xa9fea9fe", "169.254.0.0/16"),  # hexadecimal
    ("169.254.43518", "169.254.0.0/16"),  # three parts, the last one 16 bits
]
ALLOWED = [
    "http://127.0.0.1:8089/otrs",
    "http://[::1]:8089/otrs",
    "http://10.1.2.3/otrs",
    "http://192.168.0.10/otrs",
    "http://172.16.5.5/otrs",
    "https://otrs.example.com/otrs/nph-genericinterface.pl",
    "HTTPS://OTRS.EXAMPLE.COM/otrs",
    "http://localhost:8089/otrs",
]
URL_PASSWORD = "Pw-in-the-url-7731"


# --- the rule itself ------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "network"), REFUSED_LITERALS)
def test_a_refused_address_is_refused_in_every_spelling(host, network):
    problem = addresses.url_problem(f"http://{host}/otrs")
    assert problem is not None
    assert f"in the refused network {network}" in problem
    assert "OTRS_REFUSED_NETWORKS" in problem


@pytest.mark.parametrize("url", ALLOWED)
def test_private_loopback_and_names_are_allowed(url):
    assert addresses.url_problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://otrs.example:70/_x",
        "ftp://otrs.example/x",
        "dict://otrs.example:11211/",
        "ldap://otrs.example/",
        "javascript:alert(1)",
        "//otrs.example/otrs",
        "otrs.example/otrs",
    ],
)
def test_only_http_and_https(url):
    assert addresses.url_problem(url) == (
        "must start with http:// or https://; the bridge connects to nothing else"
    )


@pytest.mark.parametrize(
    "authority",
    [
        f"agent:{URL_PASSWORD}@otrs.example",
        f":{URL_PASSWORD}@otrs.example",
        "agent@otrs.example",
        f"agent:{URL_PASSWORD}@127.0.0.1:8089",
        f"otrs.example\\@agent:{URL_PASSWORD}@127.0.0.1",
    ],
)
def test_userinfo_is_refused_without_quoting_it(authority):
    problem = addresses.url_problem(f"https://{authority}/otrs")
    assert problem is not None and "user:password@host" in problem
    assert URL_PASSWORD not in problem and "agent" not in problem


def test_a_url_without_a_host_or_unparseable_is_refused():
    assert addresses.url_problem("http:///otrs") == "names no host"
    assert addresses.url_problem("http://[::1/otrs") == "is not a valid URL"


def test_the_setting_lists_the_refused_networks(settings):
    settings.OTRS_REFUSED_NETWORKS = ["10.0.0.0/8", "2001:db8::/32"]
    assert "10.0.0.0/8" in addresses.url_problem("http://10.9.8.7/x")
    assert "2001:db8::/32" in addresses.url_problem("http://[2001:db8::5]/x")
    assert addresses.url_problem("http://169.254.169.254/x") is None
    settings.OTRS_REFUSED_NETWORKS = []
    assert addresses.url_problem("http://10.9.8.7/x") is None


# --- at save: the documents and the admin form ----------------------------------------------


def _errors(base_url: str, **test_connection: str) -> list[str]:
    docs = documents(base_url)
    if test_connection:
        docs["connection_json"]["authentications"]["otrs"]["testConnectionParams"] = {
            "http": {"url": test_connection["url"], "httpMethod": "GET"}
        }
    with pytest.raises(SpecError) as caught:
        validate_documents(**docs)
    return caught.value.errors


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("http://169.254.169.254/otrs", "169.254.169.254 is in the refused network"),
        ("http://[fe80::1]/otrs", "fe80::1 is in the refused network"),
        ("http://2852039166/otrs", "2852039166 means 169.254.169.254, in the refused network"),
        ("file:///var/otrs", "must start with http:// or https://"),
        (f"http://agent:{URL_PASSWORD}@otrs.example/otrs", "user:password@host"),
    ],
)
def test_every_url_of_every_document_is_checked_and_named(base_url, problem):
    errors = _errors(base_url, url=f"{base_url}/Ticket?Limit=1")

    where = [e.split(": ")[0] + ": " + e.split(": ")[1] for e in errors if problem in e]
    assert where == [
        "ConnectionJSON: authentications.otrs.url",
        "ConnectionJSON: authentications.otrs.testConnectionParams.http.url",
        "CreateTicketJSON: call[0].url",
        "CreateTicketJSON: searchCall.url",
        "TicketStatusJSON: call[0].url",
        "TicketStatusJSON: mergeTargetCall.url",
    ], errors
    assert not any(URL_PASSWORD in e for e in errors)


def test_the_admin_form_refuses_the_url_and_sends_no_password_back(
    admin_client,
    admin_connection,  # noqa: F811
):
    before = Connection.objects.filter(pk=admin_connection.pk).values()[0]
    create = json.loads(json.dumps(admin_connection.create_ticket_json))
    create["call"][0]["url"] = f"http://agent:{URL_PASSWORD}@otrs.example.test/otrs/Ticket"
    status = json.loads(json.dumps(admin_connection.ticket_status_json))
    status["call"][0]["url"] = "http://169.254.169.254/latest/meta-data/${ticketIDs}"
    data = _form_data(
        admin_connection,
        create_ticket_json=json.dumps(create),
        ticket_status_json=json.dumps(status),
    )

    response = admin_client.post(_change_url(admin_connection), data)

    html = response.content.decode()
    assert response.status_code == 200
    assert "CreateTicketJSON: call[0].url: holds a user name or password" in html
    assert "TicketStatusJSON: call[0].url: 169.254.169.254 is in the refused network" in html
    assert URL_PASSWORD not in html
    assert Connection.objects.filter(pk=admin_connection.pk).values()[0] == before


# --- at import: after the package's variables are filled in ---------------------------------


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("http://169.254.169.254/otrs", "169.254.169.254 is in the refused network"),
        ("http://[::ffff:169.254.169.254]/otrs", "means 169.254.169.254, in the refused network"),
        ("gopher://otrs.example/otrs", "must start with http:// or https://"),
        (f"https://agent:{URL_PASSWORD}@otrs.example/otrs", "user:password@host"),
    ],
)
def test_an_import_refuses_a_base_url_variable_that_points_there(db, base_url, problem):
    package = load_package(SHIPPED.read_bytes(), SHIPPED.name)

    with pytest.raises(PackageError) as caught:
        plan_import(package, {**VALUES, "BASEURL": base_url})

    lines = [line for line in caught.value.errors if problem in line]
    assert lines and all(line.startswith("otrs: ") for line in lines), caught.value.errors
    assert any(
        line.startswith("otrs: ConnectionJSON: authentications.otrsSession.url: ") for line in lines
    )
    assert not any(URL_PASSWORD in line for line in caught.value.errors)
    assert Connection.objects.count() == 0


def test_the_import_command_names_the_problem(db):
    values = {**VALUES, "BASEURL": f"http://agent:{URL_PASSWORD}@169.254.169.254/otrs"}

    with pytest.raises(CommandError) as caught:
        call_command("import_package", str(SHIPPED), *_set_args(values))

    message = str(caught.value)
    assert (
        "ConnectionJSON: authentications.otrsSession.url: holds a user name or password" in message
    )
    assert URL_PASSWORD not in message
    assert Connection.objects.count() == 0


# --- at call time: the rendered URL, and every address a name resolves to --------------------


def _templated_host_connection(host: str, port: int) -> Connection:
    """A connection whose host comes from an auth property: only the rendered URL shows it."""
    connection = make_connection(f"http://${{connection.host}}:{port}/otrs")
    document = connection.connection_document()
    document["authentications"]["otrs"]["properties"]["host"] = host
    connection.set_connection_json(document)
    connection.save()
    return connection


@pytest.mark.parametrize(("host", "network"), REFUSED_LITERALS[:1] + REFUSED_LITERALS[7:9])
def test_a_rendered_url_is_checked_before_anything_is_sent(db, host, network):
    client = TicketClient(_templated_host_connection(host, 80))

    with pytest.raises(OTRSError) as caught:
        client.create_ticket(sample_task_context())

    assert caught.value.permanent
    assert caught.value.message.startswith("token:otrs url: ")
    assert f"in the refused network {network}" in caught.value.message
    assert ApiCall.objects.get().outcome == "transport_error"


def _resolving(monkeypatch, table: dict[str, list[str]]) -> list[str]:
    """Point the product's resolver at `table`; returns the names it was asked for."""
    asked: list[str] = []
    real = addresses.resolve

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return table[host] if host in table else real(host, port)

    monkeypatch.setattr(addresses, "resolve", resolve)
    return asked


@pytest.mark.parametrize(
    ("resolved", "network"),
    [
        (["169.254.169.254"], "169.254.0.0/16"),
        (["fe80::1"], "fe80::/10"),
        (["::ffff:169.254.169.254"], "169.254.0.0/16"),
        (["127.0.0.1", "100.100.100.200"], "100.100.100.200/32"),
    ],
)
def test_a_name_that_resolves_to_a_refused_address_is_refused_at_call_time(
    db, monkeypatch, resolved, network
):
    asked = _resolving(monkeypatch, {"otrs.internal.test": resolved})
    connection = make_connection("http://otrs.internal.test:9/otrs")
    connect = socket.socket.connect
    monkeypatch.setattr(
        socket.socket, "connect", lambda *a: pytest.fail(f"connected to {a[1:]}") or connect(*a)
    )

    with pytest.raises(OTRSError) as caught:
        TicketClient(connection).ticket_statuses([1])

    assert asked == ["otrs.internal.test"]
    assert caught.value.permanent and not caught.value.outcome_unknown
    assert caught.value.message.startswith("otrs.internal.test resolves to ")
    assert f"in the refused network {network}" in caught.value.message
    assert ApiCall.objects.get().error == caught.value.message


def test_the_real_resolver_is_checked_too(db, settings, sim):
    # localhost is resolved by the system; refusing loopback shows the check sees its answer.
    settings.OTRS_REFUSED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    connection = make_connection(sim.base_url.replace("127.0.0.1", "localhost"))

    with pytest.raises(OTRSError) as caught:
        TicketClient(connection).create_ticket(sample_task_context())

    assert caught.value.permanent
    assert caught.value.message.startswith("localhost resolves to ")


def test_the_socket_connects_to_the_address_that_was_checked(db, monkeypatch, sim):
    # The name is known only to the product's resolver: were it looked up a second time for
    # the connection (where DNS could answer differently), the call could not work at all.
    asked = _resolving(monkeypatch, {"otrs.checked.test": ["127.0.0.1"]})
    connection = make_connection(sim.base_url.replace("127.0.0.1", "otrs.checked.test"))

    created = TicketClient(connection).create_ticket(sample_task_context())

    assert created.ticket_id > 0
    assert set(asked) == {"otrs.checked.test"}
    assert len(asked) <= ApiCall.objects.count()  # at most one lookup per connection


def test_the_console_button_reports_the_refusal(admin_client, db, monkeypatch):
    _resolving(monkeypatch, {"otrs.internal.test": ["169.254.169.254"]})
    connection = make_connection("http://otrs.internal.test/otrs")

    response = admin_client.post(reverse("connections:test", args=[connection.name]), follow=True)

    html = response.content.decode()
    assert "Connection test failed: otrs.internal.test resolves to 169.254.169.254" in html
