"""Single sign-on, end to end: real Chromium, the bridge under gunicorn with OpenID Connect
configured, and a real OpenID provider (the certified `oidc-provider` from npm, run by node,
installed by `make node-deps`). The provider's development login form signs anyone in by
name; its accounts carry the groups that map to the console's roles."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth.models import User

from tests import factories
from tests.test_browser import (
    PASSWORD,
    browser,  # noqa: F401  (a fixture, used under its name)
    log_in,
)
from tests.test_reliability import _worker_env

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
CLIENT_ID = "otrs-bridge-test"
CLIENT_SECRET = "sso-client-secret-never-shown-7f3a9"
IDP_NAME = "Test IdP"
ACCOUNTS = {
    "ada": {
        "email": "ada@example.com",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "groups": ["bridge-approvers", "bridge-requesters", "canteen"],
    },
    "otto": {"email": "otto@example.com", "name": "Otto Operator", "groups": ["bridge-ops"]},
    "nobody": {"email": "nobody@example.com", "groups": ["canteen"]},
    "root": {"email": "root@example.com", "groups": ["bridge-admins"]},
}

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Sites:
    bridge: str
    issuer: str
    bridge_log: Path


def start_provider(bridge: str) -> tuple[subprocess.Popen, str]:
    if not (NODE_DIR / "node_modules" / "oidc-provider").exists():
        pytest.fail("the OpenID provider is not installed: run `make node-deps`")
    config = {
        "port": 0,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": f"{bridge}/oidc/callback/",
        "post_logout_redirect_uri": f"{bridge}/login/",
        "accounts": ACCOUNTS,
    }
    proc = subprocess.Popen(
        ["node", "provider.mjs", json.dumps(config)],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("listening "):
            return proc, line.split()[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"the OpenID provider did not start: {proc.stdout.read()}")


@pytest.fixture
def sites(tmp_path) -> Iterator[Sites]:
    port = free_port()
    bridge = f"http://127.0.0.1:{port}"
    provider, issuer = start_provider(bridge)
    env = _worker_env()
    env.update(
        {
            "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "OIDC_PROVIDER_NAME": IDP_NAME,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_ISSUER": issuer,
            "OIDC_AUTHORIZATION_ENDPOINT": f"{issuer}/auth",
            "OIDC_TOKEN_ENDPOINT": f"{issuer}/token",
            "OIDC_USERINFO_ENDPOINT": f"{issuer}/me",
            "OIDC_JWKS_ENDPOINT": f"{issuer}/jwks",
            "OIDC_END_SESSION_ENDPOINT": f"{issuer}/session/end",
            "OIDC_SCOPES": "openid email profile groups",
            "OIDC_REQUESTERS_GROUPS": "bridge-requesters",
            "OIDC_APPROVERS_GROUPS": "bridge-approvers",
            "OIDC_OPERATORS_GROUPS": "bridge-ops,bridge-admins",
            "OIDC_ADMINS_GROUPS": "bridge-admins",
        }
    )
    log = tmp_path / "bridge.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "otrsbridge.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{bridge}/healthz", timeout=5)
                break
            except requests.RequestException:  # not listening yet, or still starting up
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"the bridge did not start: {log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield Sites(bridge=bridge, issuer=issuer, bridge_log=log)
    finally:
        for proc in (server, provider):
            proc.terminate()
        for proc in (server, provider):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def sign_in(chromium, sites: Sites, login: str, pages: list[str]):
    """Press "Sign in with Test IdP", sign in at the provider as `login`, allow the bridge."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("load", lambda p: pages.append(p.content()))
    page.goto(f"{sites.bridge}/login/")
    page.get_by_role("link", name=f"Sign in with {IDP_NAME}").click()
    page.wait_for_url(f"{sites.issuer}/**")
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    consent = page.get_by_role("button", name="Continue")
    page.wait_for_url(lambda url: url.startswith(sites.bridge) or "/interaction/" in url)
    if page.url.startswith(sites.issuer) and consent.count():
        consent.click()
    page.wait_for_url(f"{sites.bridge}/**")
    page.wait_for_load_state()
    return page


def roles(username: str) -> list[str]:
    return sorted(User.objects.get(username=username).groups.values_list("name", flat=True))


def test_sign_in_through_the_identity_provider_gives_the_roles_of_its_groups(
    browser,  # noqa: F811  (the fixture of tests.test_browser)
    sites,
    tmp_path,
):
    factories.ensure_roles()
    pages: list[str] = []
    page = sign_in(browser, sites, "ada", pages)
    assert page.url == f"{sites.bridge}/"
    ada = User.objects.get(username="ada")
    assert roles("ada") == ["approvers", "requesters"]
    assert (ada.first_name, ada.last_name, ada.email) == ("Ada", "Lovelace", "ada@example.com")
    assert not ada.has_usable_password() and not ada.is_staff and not ada.is_superuser
    page.screenshot(path=str(tmp_path / "sso-signed-in.png"))

    # roles follow the IdP at every sign-in: one taken away there is taken away here
    ada.groups.add(*factories.Group.objects.filter(name="operators"))
    page = sign_in(browser, sites, "ada", pages)
    assert roles("ada") == ["approvers", "requesters"]

    page = sign_in(browser, sites, "otto", pages)
    assert roles("otto") == ["operators"]
    assert User.objects.get(username="otto").first_name == "Otto"

    # no IdP account can use the local login: it has no password
    context = browser.new_context()
    local = context.new_page()
    local.goto(f"{sites.bridge}/login/")
    local.get_by_label("Username").fill("otto")
    local.get_by_label("Password").fill("any password")
    local.get_by_role("button", name="Log in").click()
    assert local.url.startswith(f"{sites.bridge}/login/")

    everything = "\n".join(pages) + sites.bridge_log.read_text()
    assert CLIENT_SECRET not in everything
    assert "signed in through Test IdP: 'ada' with roles requesters, approvers" in everything


def test_someone_in_no_mapped_group_is_refused_with_the_reason(browser, sites):  # noqa: F811
    factories.ensure_roles()
    pages: list[str] = []
    page = sign_in(browser, sites, "nobody", pages)
    assert page.url.startswith(f"{sites.bridge}/login/")
    assert page.get_by_role("status").inner_text() == (
        "Single sign-on refused: your account at the identity provider is in none of the "
        "groups that give a role in OTRS Bridge; ask an administrator to add you to one."
    )
    assert not User.objects.filter(username="nobody").exists()
    assert CLIENT_SECRET not in "\n".join(pages) + sites.bridge_log.read_text()


def test_a_local_break_glass_admin_is_never_taken_over_and_still_logs_in(browser, sites):  # noqa: F811
    factories.user("root", "admins", superuser=True)
    pages: list[str] = []
    page = sign_in(browser, sites, "root", pages)
    assert page.url.startswith(f"{sites.bridge}/login/")
    assert "root is a local account; sign in with its password below" in (
        page.get_by_role("status").inner_text()
    )
    root = User.objects.get(username="root")
    assert root.is_superuser and root.has_usable_password()

    page = log_in(browser, sites.bridge, "root")  # the local login, as before
    assert page.url == f"{sites.bridge}/"
    assert PASSWORD  # the shared test password of tests.factories.user


def test_the_policy_lets_forms_reach_the_identity_provider_and_nothing_else(sites):
    policy = requests.get(f"{sites.bridge}/login/", timeout=5).headers["Content-Security-Policy"]
    assert f"form-action 'self' {sites.issuer};" in policy


def test_log_out_ends_the_identity_providers_session_too(browser, sites):  # noqa: F811
    from playwright.sync_api import expect

    factories.ensure_roles()
    page = sign_in(browser, sites, "ada", [])
    to_provider: list[str] = []
    bridge_pages: list[str] = []
    page.on("request", lambda r: to_provider.append(r.url) if "/session/end" in r.url else None)
    page.on(
        "load",
        lambda p: bridge_pages.append(p.content()) if p.url.startswith(sites.bridge) else None,
    )
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{sites.issuer}/session/end**")
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{sites.bridge}/login/**")

    # Signing in again asks the IdP's login form: the session there ended too.
    page.get_by_role("link", name=f"Sign in with {IDP_NAME}").click()
    page.wait_for_url(f"{sites.issuer}/**")
    expect(page.locator("input[name=login]")).to_be_visible()

    # The ID token went back to the IdP as the hint, and nowhere else.
    query = parse_qs(urlsplit(to_provider[0]).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["post_logout_redirect_uri"] == [f"{sites.bridge}/login/"]
    [token] = query["id_token_hint"]
    assert token.count(".") == 2  # a JWT
    assert token not in sites.bridge_log.read_text() + "\n".join(bridge_pages)


def test_a_local_account_logs_out_without_visiting_the_identity_provider(browser, sites):  # noqa: F811
    factories.user("root", "admins", superuser=True)
    page = log_in(browser, sites.bridge, "root")
    visited: list[str] = []
    page.on("request", lambda r: visited.append(r.url))
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{sites.bridge}/login/**")
    assert not [url for url in visited if url.startswith(sites.issuer)]
