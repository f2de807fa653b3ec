"""Separation of duties in a real browser: the inbox offers no button for one's own access,
says why, and its badge counts only what the approver may decide."""

from __future__ import annotations

import re

import pytest

from tests import factories
from tests.test_browser import browser, log_in, policy_violations  # noqa: F401  (fixtures)
from tickets import services
from tickets.models import AccessRequest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_inbox_offers_no_button_for_ones_own_access(browser, live_server, offline):  # noqa: F811
    from playwright.sync_api import expect

    alice = factories.user("alice", "requesters")
    bob = factories.user("bob", "approvers", "requesters")
    factories.user("carol", "approvers")
    for_bob = services.request_submit(
        beneficiary={"username": "bob"},
        endpoint=offline,
        operation="create_account",
        requester=alice,
    )
    by_bob = services.request_submit(
        beneficiary={"username": "bea"}, endpoint=offline, operation="create_account", requester=bob
    )
    other = services.request_submit(
        beneficiary={"username": "cid"},
        endpoint=offline,
        operation="create_account",
        requester=alice,
    )

    page = log_in(browser, live_server.url, "bob")
    expect(page.locator('nav a[href="/inbox/"] .count')).to_have_text("1")
    page.get_by_role("link", name=re.compile("Approvals")).click()
    own = page.locator("article", has_text=for_bob.number)
    expect(own).to_contain_text(
        f"You are the beneficiary of {for_bob.number}; another approver must decide."
    )
    expect(own.get_by_text("Approve…")).to_have_count(0)
    expect(own.get_by_text("Reject…")).to_have_count(0)
    filed = page.locator("article", has_text=by_bob.number)
    expect(filed).to_contain_text(f"You requested {by_bob.number}; another approver must decide.")
    expect(filed.get_by_text("Approve…")).to_have_count(0)

    # The one bob may decide has its buttons, and deciding it empties the badge.
    item = page.locator("article", has_text=other.number)
    item.get_by_text("Approve…").click()
    item.get_by_role("button", name=f"Approve {other.number}").click()
    expect(page.locator(".message-success")).to_contain_text(f"{other.number} approved")
    expect(page.locator('nav a[href="/inbox/"] .count')).to_have_count(0)
    assert AccessRequest.objects.get(pk=other.pk).status == "approved"

    # The request's own page says the same, without buttons.
    page.goto(live_server.url + for_bob.get_absolute_url())
    expect(page.locator("#decision-refusal")).to_have_text(
        f"You are the beneficiary of {for_bob.number}; another approver must decide."
    )
    expect(page.get_by_text("Approve…")).to_have_count(0)
