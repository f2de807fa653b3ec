"""No secret reaches an ApiCall row, a log line, a preview or the command output.

The simulator runs with a distinctive password; the tests do real work (logins, creates,
searches, polls, refused calls, an expired session) and then search every place the
engine writes for the password, every SessionID the simulator issued, and their
URL- and JSON-encoded forms.
"""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import quote, quote_plus

import pytest
import requests
from django.core.management import call_command

from connections.client import TicketClient
from connections.errors import OTRSError
from connections.masking import MASK, mask, mask_json, mask_url
from connections.models import ApiCall, ConnectionToken
from connections.services import connection_check, connection_preview, sample_context
from tests.engine_fixtures import make_connection, sample_task_context
from tests.simfixtures import sim_factory  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

PASSWORD = 'Zq9!"hunter2" & p=w;d/€ +x'


def encoded_forms(secret: str) -> set[str]:
    return {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }


def everything_written(caplog) -> list[str]:
    texts = [caplog.text]
    for row in ApiCall.objects.all():
        texts += [row.url, row.request_excerpt, row.response_excerpt, row.error]
    return texts


def assert_absent(secrets: list[str], texts: list[str]) -> None:
    for secret in secrets:
        for form in encoded_forms(secret):
            leaks = [text for text in texts if form in text]
            assert not leaks, f"{form!r} leaked into {leaks[0][:300]!r}"


@pytest.fixture
def secret_sim(sim_factory):  # noqa: F811
    return sim_factory(password=PASSWORD)


def test_no_password_or_session_id_is_written_anywhere(secret_sim, caplog):
    caplog.set_level(logging.DEBUG)
    connection = make_connection(secret_sim.base_url, password=PASSWORD)
    client = TicketClient(connection)
    issued = []

    created = client.create_ticket(sample_task_context("BR-MASK00001"), ref="task:1")
    issued.append(ConnectionToken.objects.get(connection=connection).token)
    requests.post(f"{secret_sim.url}/_sim/sessions/expire", timeout=5).raise_for_status()
    client.find_ticket(sample_task_context("BR-MASK00001"))
    issued.append(ConnectionToken.objects.get(connection=connection).token)
    client.ticket_statuses([created.ticket_id, 999999])
    context = sample_task_context()
    context["endpoint"]["queue"] = f"no queue {PASSWORD}"
    with pytest.raises(OTRSError) as caught:
        client.create_ticket(context)
    check = connection_check(connection=connection)
    issued.append(ConnectionToken.objects.get(connection=connection).token)

    assert check.ok and len(set(issued)) == 3
    assert ApiCall.objects.filter(call_name="token:otrs").count() == 3
    assert ApiCall.objects.filter(outcome="auth_error").exists()
    texts = [*everything_written(caplog), caught.value.message, json.dumps(check.exchanges)]
    assert_absent([PASSWORD, *issued], texts)
    assert MASK in ApiCall.objects.filter(call_name="TicketSearch").first().url


def test_a_refused_login_does_not_write_the_wrong_password(secret_sim, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + PASSWORD
    connection = make_connection(secret_sim.base_url, password=wrong)

    result = connection_check(connection=connection)

    assert not result.ok
    connection.refresh_from_db()
    assert_absent(
        [wrong, PASSWORD], [*everything_written(caplog), connection.last_error, result.message]
    )


def test_preview_and_command_output_are_masked(secret_sim, caplog):
    connection = make_connection(secret_sim.base_url, password=PASSWORD)
    document = connection.create_ticket_json
    document["call"][0]["httpParams"]["Ticket"]["Title"] = (
        "${correlationKey} ${connection.password} ${access_token}"
    )
    document["call"][0]["httpHeaders"] = {"X-OTRS-Header-Password": "${connection.password}"}
    connection.create_ticket_json = document
    connection.save()
    out = io.StringIO()

    previews = connection_preview(connection=connection, context=sample_context(connection))
    call_command("test_connection", connection.name, stdout=out)

    preview = previews[0]
    assert preview["headers"]["X-OTRS-Header-Password"] == MASK
    assert json.loads(preview["body"])["Ticket"]["Title"] == f"BR-SAMPLE0001 {MASK} {MASK}"
    assert out.getvalue().startswith("OK: logged in as bridge and searched tickets in ")
    issued = ConnectionToken.objects.get(connection=connection).token
    assert_absent(
        [PASSWORD, issued], [json.dumps(previews), out.getvalue(), *everything_written(caplog)]
    )


def test_mask_replaces_every_encoded_form():
    text = f"a {PASSWORD} b {quote(PASSWORD, safe='')} c {quote_plus(PASSWORD)} d {json.dumps(PASSWORD)}"

    masked = mask(text, [PASSWORD])

    assert masked == f'a {MASK} b {MASK} c {MASK} d "{MASK}"'


def test_mask_leaves_short_values_to_the_key_rules():
    assert mask("id=abc", ["abc"]) == "id=abc"
    assert (
        mask_url("https://x/T?SessionID=abc&Limit=1", ["abc"])
        == f"https://x/T?SessionID={MASK}&Limit=1"
    )


def test_mask_json_masks_secret_keys_and_secret_values():
    document = {
        "SessionID": "s",
        "Nested": [{"password": 12345, "note": f"pw is {PASSWORD}"}],
        "Custom": "c",
        "empty": {"token": ""},
    }

    masked = mask_json(document, [PASSWORD], keys={"custom", "sessionid", "password", "token"})

    assert masked == {
        "SessionID": MASK,
        "Nested": [{"password": MASK, "note": f"pw is {MASK}"}],
        "Custom": MASK,
        "empty": {"token": ""},
    }


def test_mask_url_masks_credential_parameters_in_any_spelling():
    url = "https://x/T?UserLogin=bob&Password=p%40ss+word&sessionid=S;access_token=T&Title=t"

    assert (
        mask_url(url, [])
        == f"https://x/T?UserLogin=bob&Password={MASK}&sessionid={MASK};access_token={MASK}&Title=t"
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://agent:Pw-9x@otrs.example/x", f"http://agent:{MASK}@otrs.example/x"),
        ("HTTPS://agent:Pw@9x@otrs.example", f"HTTPS://agent:{MASK}@otrs.example"),
        ('"url": "https://:Pw-9x@h/x"', f'"url": "https://:{MASK}@h/x"'),
        ("https://agent@otrs.example/x", "https://agent@otrs.example/x"),
        ("https://@HOSTNAME@/otrs", "https://@HOSTNAME@/otrs"),
        ("http://otrs.example:8080/x@y", "http://otrs.example:8080/x@y"),
    ],
)
def test_the_password_of_a_url_is_masked(text, shown):
    assert mask_url(text, []) == shown
