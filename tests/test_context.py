"""The template variables are declared once (connections/context.py), and validation, the
admin preview and the README's list agree with that declaration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connections import context, spec, templating
from connections.management.commands.template_variables import END, START, with_table
from connections.models import Connection
from connections.packages import apply_import, load_package, plan_import
from connections.services import connection_preview, sample_context
from tests.engine_fixtures import create_ticket_json, documents, make_connection

BASE = "https://otrs.example.com/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "packages" / "otrs-genericticketconnector.json"
# One key below each open root, as an endpoint's attributes or an identity's properties hold.
OPEN_KEYS = {root: f"{root}.custom" for root in context.OPEN_NAMESPACES}
OPEN_VALUES = {root: {"custom": f"{root}-value"} for root in context.OPEN_NAMESPACES}


def every_variable() -> dict[str, str]:
    """A ticket body naming every declared variable, and one open key per open root."""
    names = [*context.NAMES, *OPEN_KEYS.values()]
    return {name: f"${{{name}}}" for name in names}


def create_document(body: dict) -> dict:
    document = create_ticket_json(BASE)
    document["call"][0]["httpParams"]["Variables"] = body
    return document


def errors_of(body: dict) -> list[str]:
    docs = documents(BASE)
    docs["create_ticket_json"] = create_document(body)
    try:
        spec.validate_documents(**docs)
    except spec.SpecError as exc:
        return exc.errors
    return []


def test_every_declared_variable_validates_and_renders_from_the_sample():
    template = every_variable()
    assert errors_of(template) == []

    rendered = templating.render(template, context.sample(open_values=OPEN_VALUES))

    samples = {v.name: v.sample for v in context.VARIABLES}
    expected = {**samples, **{key: OPEN_VALUES[root]["custom"] for root, key in OPEN_KEYS.items()}}
    assert rendered == expected


@pytest.mark.django_db
def test_the_preview_renders_every_declared_variable_with_the_sample_values():
    connection = make_connection(BASE)
    template = {name: f"${{{name}}}" for name in [*context.NAMES, "endpoint.queue"]}
    connection.create_ticket_json = create_document(template)
    connection.save()

    (request,) = connection_preview(connection=connection, context=sample_context(connection))

    samples = {v.name: v.sample for v in context.VARIABLES}
    assert json.loads(request["body"])["Variables"] == {**samples, "endpoint.queue": "Raw"}


@pytest.mark.parametrize(
    "name", ["task.request", "account.name", "entitlement.name", "requestor.username", "users"]
)
def test_an_undeclared_name_is_refused_with_the_declared_ones_listed(name):
    (error,) = errors_of({"Title": f"${{{name}}}"})

    assert error.startswith(
        f"CreateTicketJSON: call[0].httpParams.Variables.Title: ${{{name}}}: unknown variable here; "
        "allowed are "
    )
    for declared in context.NAMES:
        assert f"${{{declared}}}" in error
    for root in context.OPEN_NAMESPACES:
        assert f"${{{root}.*}}" in error


def test_open_namespaces_accept_any_key_and_are_declared_roots():
    assert errors_of({"Queue": "${endpoint.queue}", "Org": "${user.department|none}"}) == []
    assert set(context.OPEN_NAMESPACES) <= set(context.NAMES)


def test_names_are_a_root_or_one_key_below_a_declared_root():
    assert len(set(context.NAMES)) == len(context.NAMES)
    for name in context.NAMES:
        root, dot, key = name.partition(".")
        assert "." not in key
        assert not dot or root in context.NAMES, f"{name}: ${{{root}}} is not declared"


def test_build_refuses_missing_and_undeclared_names():
    values = {v.name: v.sample for v in context.VARIABLES}
    del values["user.email"], values["task.requestNumber"]
    values["task.request"] = "REQ-1"

    with pytest.raises(ValueError) as caught:
        context.build(values)

    assert str(caught.value) == (
        "task context: missing: user.email, task.requestNumber; not declared: task.request"
    )


def test_build_adds_open_values_below_their_root_and_declared_keys_win():
    built = context.sample(
        values={"endpoint": "crm"}, open_values={"endpoint": {"queue": "Sales", "name": "other"}}
    )

    assert built["endpoint"] == {
        "queue": "Sales",
        "_": "crm",
        "name": "payroll",
        "displayName": "Payroll",
    }
    assert templating.lookup(built, "endpoint") == "crm"
    with pytest.raises(ValueError, match="not an open namespace: task"):
        context.sample(open_values={"task": {"x": 1}})


@pytest.mark.django_db
def test_the_shipped_package_validates_and_previews_from_the_sample():
    values = {"BASEURL": BASE, "USERNAME": "bridge", "PASSWORD": "pw-secret", "CUSTOMERUSER": "x@y"}
    apply_import(plan_import(load_package(SHIPPED.read_bytes(), SHIPPED.name), values))
    connection = Connection.objects.get(name="otrs")

    (request,) = connection_preview(connection=connection, context=sample_context(connection))

    assert "BR-SAMPLE0001" in request["body"]


def test_the_readme_lists_the_declared_variables():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert START in readme and END in readme
    assert with_table(readme) == readme, "regenerate: manage.py template_variables --readme"


@pytest.mark.django_db
def test_a_real_task_fills_every_declared_variable_with_the_same_keys_as_the_sample(
    people, offline
):
    """The contract: what validates and previews also renders for a real task."""
    from tickets import services
    from tickets.models import Account, Identity, ProvisioningTask

    ada = Identity.objects.create(
        username="ada",
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.com",
        properties={"custom": "user-value"},
    )
    Account.objects.create(identity=ada, endpoint=offline, name="ada")
    offline.attributes = {"queue": "Raw", "custom": "endpoint-value"}
    offline.save()
    access_request = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=offline,
        operation="add_access",
        entitlements=["crm-read"],
        requester=people.alice,
        justification="Quarterly audit",
    )
    services.request_approve(access_request=access_request, by=people.carol)
    task = ProvisioningTask.objects.get(request=access_request)
    template = every_variable()

    real = templating.render(template, services.task_context(task.pk))
    sampled = templating.render(template, context.sample(open_values=OPEN_VALUES))

    assert set(real) == set(sampled) == set(template)
    access_request.refresh_from_db()
    assert real["user.displayname"] == "Ada Lovelace"
    assert real["requestor"] == "alice" and real["requestor.email"] == "alice@example.com"
    assert real["task.requestNumber"] == access_request.number
    assert real["task.id"] == task.pk and real["task"] == str(task.pk)
    assert real["entitlement"] == "crm-read" and real["entitlements"] == ["crm-read"]
    assert real["user.custom"] == "user-value" and real["endpoint.custom"] == "endpoint-value"
    assert real["correlationKey"] == task.correlation_key


@pytest.mark.django_db
def test_an_api_request_has_an_empty_requester_email(offline):
    from tickets import services
    from tickets.api import api_client_create
    from tickets.models import ProvisioningTask

    client, _ = api_client_create(name="iga", trusted=True)
    access_request = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=offline,
        operation="create_account",
        api_client=client,
    )
    task = ProvisioningTask.objects.get(request=access_request)

    real = templating.render(
        {"r": "${requestor}", "e": "${requestor.email}"}, services.task_context(task)
    )

    assert real == {"r": "api:iga", "e": ""}
