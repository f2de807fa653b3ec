"""Single sign-on settings: off unless configured, a partial configuration stops start-up
with the names of what is missing, and the roles it maps are the console's groups."""

from __future__ import annotations

import importlib
import json

import pytest
from django.conf import settings
from django.urls import resolve

from tests import factories
from tests.test_settings import _manage


@pytest.mark.django_db
def test_without_oidc_the_login_page_has_no_sign_in_button(client):
    assert not settings.OIDC_ENABLED
    page = client.get("/login/").content.decode()
    assert "Sign in with" not in page and "/oidc/" not in page
    assert client.get("/oidc/authenticate/").status_code == 404


def test_a_partial_oidc_configuration_stops_start_up_naming_what_is_missing():
    result = _manage(
        "check",
        env={
            "DEBUG": "True",
            "OIDC_CLIENT_ID": "bridge",
            "OIDC_AUTHORIZATION_ENDPOINT": "https://idp.example.com/auth",
        },
    )
    assert result.returncode != 0
    assert (
        "OIDC_CLIENT_ID is set, so single sign-on is on, but OIDC_CLIENT_SECRET, "
        "OIDC_TOKEN_ENDPOINT, OIDC_JWKS_ENDPOINT is not set"
    ) in result.stderr


def test_an_authorization_endpoint_that_is_no_url_stops_start_up():
    result = _manage(
        "check",
        env={
            "DEBUG": "True",
            "OIDC_CLIENT_ID": "bridge",
            "OIDC_CLIENT_SECRET": "s",
            "OIDC_AUTHORIZATION_ENDPOINT": "idp.example.com/auth",
            "OIDC_TOKEN_ENDPOINT": "https://idp.example.com/token",
            "OIDC_JWKS_ENDPOINT": "https://idp.example.com/keys",
        },
    )
    assert result.returncode != 0
    assert "OIDC_AUTHORIZATION_ENDPOINT: 'idp.example.com/auth' is not an http(s) URL." in (
        result.stderr
    )


def test_the_mapped_roles_are_the_consoles_role_groups():
    roles = importlib.import_module("tickets.migrations.0002_roles").ROLES
    assert set(settings.CONSOLE_ROLES) == set(roles)
    assert list(settings.OIDC_ROLE_GROUPS) == list(settings.CONSOLE_ROLES)


def test_an_end_session_endpoint_on_another_host_is_allowed_as_a_form_target_and_checked():
    sso = {
        "DEBUG": "True",
        "OIDC_CLIENT_ID": "bridge",
        "OIDC_CLIENT_SECRET": "s",
        "OIDC_AUTHORIZATION_ENDPOINT": "https://idp.example.com/auth",
        "OIDC_TOKEN_ENDPOINT": "https://idp.example.com/token",
        "OIDC_JWKS_ENDPOINT": "https://idp.example.com/keys",
    }
    show = "import json; from django.conf import settings; print(json.dumps(settings.SECURE_CSP['form-action']))"
    result = _manage(
        "shell",
        "-c",
        show,
        env={**sso, "OIDC_END_SESSION_ENDPOINT": "https://logout.example.com/end?x=1"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [
        "'self'",
        "https://idp.example.com",
        "https://logout.example.com",
    ]

    wrong = _manage("check", env={**sso, "OIDC_END_SESSION_ENDPOINT": "logout.example.com"})
    assert wrong.returncode != 0
    assert "OIDC_END_SESSION_ENDPOINT: 'logout.example.com' is not an http(s) URL." in (
        wrong.stderr
    )


@pytest.mark.django_db
def test_setups_log_out_is_the_consoles(client):
    """Setup's own "Log out" goes through the same view, so with single sign-on it ends the
    identity provider's session too."""
    assert resolve("/admin/logout/").func.view_class is resolve("/logout/").func.view_class
    client.force_login(factories.user("root", "admins"))
    answer = client.post("/admin/logout/")
    assert (answer.status_code, answer["Location"]) == (302, "/login/")
    assert client.get("/admin/").status_code == 302  # signed out: sent to the login


@pytest.mark.django_db
def test_an_id_token_for_another_client_or_issuer_is_refused_as_a_sign_in_not_a_400(settings, rf):
    """The library handles refusals from get_or_create_user (the login page says why);
    one raised in verify_token became a bare 400 page."""
    from django.contrib.messages.storage.fallback import FallbackStorage

    from otrsbridge.sso import RoleMappingBackend, SSORefused

    settings.OIDC_RP_CLIENT_ID, settings.OIDC_ISSUER = "bridge", "https://idp.example.com"
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://idp.example.com/token"
    settings.OIDC_OP_USER_ENDPOINT = ""
    settings.OIDC_OP_JWKS_ENDPOINT = "https://idp.example.com/keys"
    request = rf.get("/oidc/callback/")
    request.session, request._messages = {}, None
    request._messages = FallbackStorage(request)
    backend = RoleMappingBackend()
    backend.request = request
    for payload, why in (
        ({"aud": "other", "iss": "https://idp.example.com"}, "another client"),
        ({"aud": ["bridge"], "iss": "https://evil.example.com"}, "another issuer"),
    ):
        with pytest.raises(SSORefused, match=why):
            backend.get_or_create_user("access", "id", {"sub": "ada", **payload})
    assert [str(m) for m in request._messages] == [
        "Single sign-on refused: the ID token was issued to another client (aud).",
        "Single sign-on refused: the ID token comes from another issuer (iss).",
    ]
