"""Every console page through axe-core, in a real Chromium at 1280 px and at 390 px.

The pages hold a realistic history (the one `make screenshots` photographs: completed,
open, pending, stale, failed and waiting requests), are seen by the people who use them
(operator, approver, requester, admin, and nobody logged in), and are checked also with
their popovers open and with validation messages showing. No serious or critical
violation is allowed; the lesser ones are left to judgement.
"""

from __future__ import annotations

import pytest

from tests import axe
from tests.test_browser import (
    browser,  # noqa: F401  (the Chromium fixture)
    log_in,
    policy_violations,  # noqa: F401  (autouse: no page breaks its policies)
)
from tests.test_screenshots import build_history

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)], ids=["1280px", "390px"])
def test_no_console_page_has_a_serious_accessibility_violation(
    browser,  # noqa: F811
    live_server,
    sim,
    width,
    height,
):
    from playwright.sync_api import expect

    from tests import factories

    made = build_history(sim)
    factories.user("root", "admins", "approvers", "requesters", "operators", superuser=True)
    base = live_server.url
    found: list[str] = []
    seen: list[str] = []

    def check(page, what: str) -> None:
        page.wait_for_load_state("networkidle")
        seen.append(f"{what} ({page.url})")
        found.extend(f"{what}: {line}" for line in axe.serious(page))

    def visit(page, path: str) -> None:
        response = page.goto(base + path)
        assert response is not None and response.status < 500, (path, response)
        check(page, path)

    olga = log_in(browser, base, "olga", width, height)
    for path in (
        "/",
        "/board/",
        "/requests/",
        "/requests/?status=failed",
        made["completed"].get_absolute_url(),
        made["failed"].get_absolute_url(),
        "/identities/",
        "/identities/ada/",
        "/connections/",
        "/connections/otrs-demo/",
        "/no-such-page/",
    ):
        visit(olga, path)
    # A confirm step open on the overview, and a failed task's retry step.
    olga.goto(base + "/")
    olga.locator("summary", has_text="Poll now").click()
    check(olga, "overview, Poll now open")
    olga.goto(base + made["failed"].get_absolute_url())
    olga.locator("summary", has_text="Retry").first.click()
    check(olga, "failed request, Retry open")

    root = log_in(browser, base, "root", width, height)
    visit(root, "/inbox/")
    item = root.locator("article.inbox-item").first
    item.locator("summary", has_text="Approve…").click()
    expect(item.get_by_label("Comment")).to_be_visible()
    check(root, "inbox, Approve open")
    visit(root, "/requests/new/")
    root.get_by_label("For whom").fill("")
    root.get_by_role("button", name="Submit request").click()
    expect(root.locator(".errorlist").first).to_be_visible()
    check(root, "new request with validation messages")
    visit(root, "/board/")

    alice = log_in(browser, base, "alice", width, height)
    visit(alice, "/")
    visit(alice, "/requests/")
    visit(alice, "/board/")  # the 403 page

    anonymous = browser.new_context(viewport={"width": width, "height": height}).new_page()
    visit(anonymous, "/login/")

    assert len(seen) >= 20, seen
    assert found == [], "\n".join(found)


def test_the_check_finds_a_violation(browser, live_server):  # noqa: F811
    """The check is not blind: pale grey text on the page's background is reported."""
    from tests import factories

    factories.user("olga", "operators")
    page = log_in(browser, live_server.url, "olga")
    # A style attribute set through the DOM API is not an inline style the CSP refuses.
    page.evaluate("() => { const h = document.querySelector('h1'); h.style.color = '#c8ccd2'; }")
    found = axe.serious(page)
    assert any("color-contrast" in line for line in found), found
