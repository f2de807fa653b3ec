"""The console in a real browser: Debian's Chromium driven by Playwright against a live
server, the OTRS simulator and the shipped OTRS package.

One story, as the people would live it: a requester asks, an approver approves, the
ticket number appears on the requester's page without a reload, an agent closes the
ticket in "OTRS", the request turns Completed by itself; then a failed task is retried by
an operator and goes through.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django_q.conf import Conf

from tests import factories
from tickets import jobs, services
from tickets.models import AccessRequest, ProvisioningTask

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
PASSWORD = "pw-for-tests-only"
# Every page the tests open reports what its Content-Security-Policy or Permissions-Policy
# refused: Chromium's own console errors, and the page's securitypolicyviolation events.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`));
"""
POLICY_WORDS = ("Content Security Policy", "CSP violation", "Permissions-Policy")

# Transactional: the live server and the simulator run in other threads. A flush removes the
# role groups of the data migration; tests.factories.user makes them again.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: run `make chromium`")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(autouse=True)
def policy_violations():
    """What the console pages' policies refused during the test: nothing, on our pages."""
    seen: list[str] = []
    VIOLATIONS[:] = []
    yield seen
    seen += VIOLATIONS
    assert VIOLATIONS == [], VIOLATIONS


VIOLATIONS: list[str] = []


def watch_policies(page) -> None:
    """Record the policy violations `page` reports in VIOLATIONS."""

    def record(message) -> None:
        if any(word in message.text for word in POLICY_WORDS):
            VIOLATIONS.append(f"{page.url}: {message.text}")

    page.on("console", record)


@pytest.fixture
def inline_jobs(settings, monkeypatch):
    """django-q2 runs queued jobs inline, so an approval provisions at once."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 reads the flag once, at import


def log_in(browser, base: str, username: str, width: int = 1280, height: int = 800):
    """A new browser context (its own cookies), logged in as `username`."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(REPORT_VIOLATIONS)
    page = context.new_page()
    watch_policies(page)
    page.set_default_timeout(15_000)
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    return page


class Poller:
    """Polls OTRS every half second in the background, as the schedule would."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            while not self.stop.wait(0.5):
                jobs.poll_job(trigger="test")
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)
        finally:
            db_connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.errors, self.errors


def test_request_to_ticket_to_completion_and_retry(browser, live_server, sim, inline_jobs):
    from playwright.sync_api import expect

    base = live_server.url
    connection = factories.otrs_connection(sim)
    factories.endpoint(connection, name="crm", instant=True)
    factories.user("alice", "requesters")
    factories.user("carol", "approvers")
    factories.user("olga", "operators")

    # 1. Log in.
    alice = log_in(browser, base, "alice")
    expect(alice.get_by_role("heading", name="Your requests")).to_be_visible()

    # 2. Submit a request as a requester ...
    alice.get_by_role("link", name="New request").first.click()
    alice.get_by_label("For whom").fill("ada")
    alice.get_by_label("Endpoint").select_option(label="CRM")
    alice.get_by_text("crm-write").click()  # the checkboxes came with the htmx swap
    alice.get_by_label("Operation").select_option("create_account")
    alice.get_by_label("Justification").fill("New hire in sales")
    alice.get_by_role("button", name="Submit request").click()
    expect(alice.locator(".message-success")).to_contain_text("waits for an approver")
    number = re.search(r"REQ-\d{6}", alice.locator("h1").inner_text()).group(0)
    expect(alice.locator("#request-status")).to_contain_text("Pending approval")

    # ... and approve it as an approver, in a second browser context.
    carol = log_in(browser, base, "carol")
    carol.get_by_role("link", name=re.compile("Approvals")).click()
    item = carol.locator("article", has_text=number)
    item.get_by_text("Approve…").click()
    item.get_by_label("Comment").fill("Welcome aboard")
    item.get_by_role("button", name=f"Approve {number}").click()
    expect(carol.locator(".message-success")).to_contain_text(f"{number} approved")

    # 3. The requester's page shows the ticket without a reload (the htmx partial polls).
    ticket_link = alice.locator("a.ticket-link")
    expect(ticket_link).to_be_visible(timeout=30_000)
    ticket_number = ticket_link.inner_text().strip()
    assert "AgentTicketZoom;TicketID=" in ticket_link.get_attribute("href")
    expect(alice.locator("#request-status")).to_contain_text("In progress")

    # 4. The agent closes the ticket on the simulator's page.
    with Poller():
        agent = carol.context.new_page()
        agent.goto(sim.url + "/")
        agent.get_by_role("button", name=f"Close successful ticket {ticket_number}").click()

        # 5. The request turns Completed, still without a reload, and stops polling.
        expect(alice.locator("#request-status")).to_contain_text("Completed", timeout=30_000)
        expect(alice.locator("#live")).not_to_have_attribute("hx-get", re.compile("."))
    assert AccessRequest.objects.get(number=number).status == "completed"

    # 6. A task that fails (OTRS answers 500 and the system allows one try) is retried.
    factories.endpoint(connection, name="crm", instant=True, tries=1)
    sim.configure(fail_rate=1)
    second = services.request_submit(
        beneficiary={"username": "grace"},
        endpoint="crm",
        operation="create_account",
        requester=factories.user("alice", "requesters"),
    )
    services.request_approve(access_request=second, by=factories.user("carol", "approvers"))
    task = ProvisioningTask.objects.get(request=second)
    assert task.status == "failed", task.last_error
    sim.configure(fail_rate=0)

    olga = log_in(browser, base, "olga")
    olga.goto(base + second.get_absolute_url())
    expect(olga.locator(f"#task-{task.pk}")).to_contain_text("Failed")
    olga.locator(f"#task-{task.pk}").get_by_text("Retry", exact=True).click()
    olga.get_by_role("button", name="Yes, retry task").click()
    expect(olga.locator(".message-success")).to_contain_text("queued again")
    expect(olga.locator(f"#task-{task.pk}")).to_contain_text("Ticket open", timeout=20_000)
    expect(olga.locator(f"#task-{task.pk} a.ticket-link")).to_be_visible()
    assert ProvisioningTask.objects.get(pk=task.pk).status == "ticket_open"


def test_keyboard_reaches_the_confirm_step(browser, live_server, inline_jobs):
    """Tab to "Poll now", open the confirm step with Enter, confirm with Enter."""
    from playwright.sync_api import expect

    factories.user("olga", "operators")
    page = log_in(browser, live_server.url, "olga")
    summary = page.locator("summary", has_text="Poll now")
    for _ in range(30):
        page.keyboard.press("Tab")
        if summary.evaluate("el => el === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the Poll now button")
    page.keyboard.press("Enter")
    confirm = page.get_by_role("button", name="Yes, poll now")
    expect(confirm).to_be_visible()
    page.keyboard.press("Tab")
    expect(confirm).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".message-success")).to_contain_text("Poll of open tickets queued")


def test_phone_width_menu_opens(browser, live_server):
    factories.user("olga", "operators")
    page = log_in(browser, live_server.url, "olga", 390, 844)
    nav_link = page.get_by_role("link", name="Board")
    assert not nav_link.is_visible()
    page.get_by_role("button", name="Menu").click()
    assert nav_link.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_no_console_or_admin_page_breaks_its_content_security_policy(
    browser, live_server, inline_jobs, policy_violations
):
    """Every console page and the admin pages an admin uses, with the htmx live region
    polling, in a real browser: nothing is refused. A style injected on purpose is, so the
    watch works."""
    from playwright.sync_api import expect

    from connections.models import Connection

    connection = Connection.objects.create(name="offline", description="never called")
    endpoint = factories.endpoint(connection, name="crm")
    factories.user("root", "admins", "approvers", "requesters", superuser=True)
    alice = factories.user("alice", "requesters")
    first = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=endpoint,
        operation="create_account",
        requester=alice,
        entitlements=["crm-read"],
    )
    page = log_in(browser, live_server.url, "root")
    console = [
        "/",
        "/board/",
        "/requests/",
        first.get_absolute_url(),
        "/inbox/",
        "/requests/new/",
        "/identities/",
        first.beneficiary.get_absolute_url(),
        "/connections/",
        connection.get_absolute_url(),
    ]
    setup = [
        "/admin/",
        "/admin/connections/connection/",
        f"/admin/connections/connection/{connection.pk}/change/",
        "/admin/connections/connection/import/",
        "/admin/connections/apicall/",
        "/admin/tickets/accessrequest/",
        "/admin/tickets/provisioningtask/",
        "/admin/auth/user/",
        "/admin/auth/user/add/",
    ]
    for path in console + setup:
        response = page.goto(live_server.url + path)
        assert response.ok, (path, response.status)
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
    # htmx works under the policy: the entitlements of an application arrive by a swap.
    page.goto(live_server.url + "/requests/new/")
    page.get_by_label("Endpoint").select_option(label="CRM")
    expect(page.get_by_text("crm-write")).to_be_visible()
    with page.expect_response(lambda r: "fp=" in r.url, timeout=10_000):  # the live region polls
        page.goto(live_server.url + first.get_absolute_url())
    assert VIOLATIONS == []

    page.evaluate(
        "() => { const s = document.createElement('style');"
        " s.textContent = 'body{}'; document.head.appendChild(s); }"
    )
    page.wait_for_timeout(300)
    refused = list(VIOLATIONS)
    VIOLATIONS[:] = []
    assert refused and any("style-src" in v for v in refused), refused
