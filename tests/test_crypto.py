"""Secrets at rest: Fernet encryption with key rotation."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from connections import crypto
from connections.models import Connection

pytestmark = pytest.mark.django_db

OLD = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleS0="
NEW = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleS0="


def test_secrets_are_not_stored_in_clear(settings):
    connection = Connection(name="c")
    connection.set_connection_json(
        {
            "authentications": {
                "a": {
                    "authType": "Basic",
                    "properties": {"userName": "u", "password": "Sup3r-Secret!"},
                }
            }
        }
    )
    connection.save()
    raw = Connection.objects.filter(pk=connection.pk).values_list(
        "secrets_encrypted", "connection_json"
    )[0]
    assert "Sup3r-Secret!" not in raw[0] and "Sup3r-Secret!" not in str(raw[1])
    assert (
        connection.connection_document()["authentications"]["a"]["properties"]["password"]
        == "Sup3r-Secret!"
    )


def test_rotation_keeps_old_secrets_readable_then_moves_them_to_the_new_key(settings):
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    connection = Connection(name="c")
    connection.set_webhook_secret("hook-secret")
    connection.save()
    settings.FIELD_ENCRYPTION_KEYS = [NEW, OLD]
    assert Connection.objects.get(pk=connection.pk).webhook_secret == "hook-secret"
    out = io.StringIO()
    call_command("rotate_keys", stdout=out)
    assert "re-encrypted the secrets of 1 row(s)" in out.getvalue()
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    assert Connection.objects.get(pk=connection.pk).webhook_secret == "hook-secret"


def test_a_secret_under_a_lost_key_is_reported_not_garbled(settings):
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    token = crypto.encrypt("value")
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(crypto.SecretUnreadable, match="FIELD_ENCRYPTION_KEY"):
        crypto.decrypt(token)


def test_rotation_names_the_problem_when_a_secret_is_under_a_lost_key(settings):
    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    token = crypto.encrypt("value")
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    with pytest.raises(crypto.SecretUnreadable, match="cannot be re-encrypted"):
        crypto.reencrypt(token)


def test_a_token_under_a_lost_key_means_a_new_login_not_a_failure(settings, client):
    from connections.models import ConnectionToken
    from tests import factories

    settings.FIELD_ENCRYPTION_KEYS = [OLD]
    connection = Connection(name="c")
    connection.set_connection_json({"authentications": {"a": {"authType": "Basic"}}})
    connection.save()
    row = ConnectionToken.objects.create(
        connection=connection, auth_name="a", token_encrypted=crypto.encrypt("old-session")
    )
    settings.FIELD_ENCRYPTION_KEYS = [NEW]
    row.refresh_from_db()
    assert row.token == ""
    assert connection.secret_values() == []
    client.force_login(factories.user("olga", "operators", "admins"))
    assert client.get(f"/connections/{connection.name}/").status_code == 200
