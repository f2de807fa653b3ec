"""The console tells what is so now, in the words of the people who read it: in a real
Chromium against a live server and the OTRS simulator.

Failures counted while they are failures, a retried request without its old result, job
summaries and messages in labels and display names, one session state on every page,
bulk retry for every task that can be retried, and the layout at 1280 and 390 px.
"""

from __future__ import annotations

import re

import pytest
import requests

from connections.services import connection_check
from tests import factories
from tests.test_browser import (
    browser,  # noqa: F401  (the Chromium fixture)
    log_in,
    policy_violations,  # noqa: F401  (autouse: no page breaks its policies)
)
from tickets import jobs, services
from tickets.models import JobRun, ProvisioningTask

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

# A state or operation code where a label belongs ("retry_wait", "create_account").
RAW_CODE = re.compile(r"\b[a-z]+_[a-z_]+\b")


def close_ticket(sim, task: ProvisioningTask) -> None:
    """Play the OTRS agent: close the task's ticket on the simulator's page."""
    answer = requests.post(
        f"{sim.url}/_sim/tickets/{task.ticket.ticket_id}/state",
        data={"state": "closed successful", "next": "/"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code in (302, 303), answer.text


def ask(endpoint, username="ada", operation="create_account", entitlements=("crm-read",)):
    return services.request_submit(
        beneficiary={"username": username, "first_name": "Ada", "last_name": "Lovelace"},
        endpoint=endpoint,
        operation=operation,
        requester=factories.user("alice", "requesters"),
        entitlements=list(entitlements),
    )


def test_a_retried_failure_leaves_the_failure_count_and_the_request_result(
    browser,  # noqa: F811
    live_server,
    sim,
):
    from playwright.sync_api import expect

    connection = factories.otrs_connection(sim)
    crm = factories.endpoint(connection, name="crm", tries=1)
    carol = factories.user("carol", "approvers")
    factories.user("olga", "operators")
    request = ask(crm)
    services.request_approve(access_request=request, by=carol)
    sim.configure(fail_rate=1)
    run = jobs.provision_job(trigger="schedule")
    sim.configure(fail_rate=0)
    task = ProvisioningTask.objects.get(request=request)
    assert task.status == "failed"
    # A run whose only task failed is a failed run, and says so in words.
    assert run.status == JobRun.Status.FAILED and run.summary == "1 task: 1 failed"

    olga = log_in(browser, live_server.url, "olga")
    card = olga.locator(".stat", has_text="Failed now")
    expect(card.locator(".stat-value")).to_have_text("1")
    expect(card).to_have_class(re.compile("stat-bad"))
    expect(olga.locator("#failures")).to_contain_text(request.number)
    jobs_table = olga.locator("section", has=olga.get_by_role("heading", name="Jobs"))
    provisioning = jobs_table.locator("tr", has_text="Provisioning")
    expect(provisioning).to_contain_text("Failed")
    expect(provisioning).to_contain_text("1 task: 1 failed")

    olga.goto(live_server.url + request.get_absolute_url())
    expect(olga.locator("#request-status")).to_contain_text("Failed")
    expect(olga.locator(".summary")).to_contain_text("Result1 failed")
    olga.locator(f"#task-{task.pk}").get_by_text("Retry", exact=True).click()
    olga.get_by_role("button", name="Yes, retry task").click()
    expect(olga.locator(".message-success")).to_contain_text("queued again")
    # In progress again: the result of the failed attempt is not its result any more.
    expect(olga.locator("#request-status")).to_contain_text("In progress")
    expect(olga.locator(".summary")).not_to_contain_text("Result")
    expect(olga.locator(".summary")).not_to_contain_text("failed")

    jobs.provision_job(trigger="schedule")
    close_ticket(sim, ProvisioningTask.objects.get(pk=task.pk))
    jobs.poll_job(trigger="schedule")
    olga.reload()
    expect(olga.locator("#request-status")).to_contain_text("Completed")
    expect(olga.locator(".summary")).to_contain_text("Result1 completed")

    olga.goto(live_server.url + "/")
    card = olga.locator(".stat", has_text="Failed now")
    expect(card.locator(".stat-value")).to_have_text("0")
    expect(card).not_to_have_class(re.compile("stat-bad"))
    expect(olga.locator("#failures")).not_to_contain_text(request.number)
    expect(olga.locator("#failures")).to_contain_text("No task is failed.")
    jobs_text = jobs_table.inner_text()
    assert "1 task: 1 ticket open" in jobs_text, jobs_text
    assert not RAW_CODE.findall(jobs_table.locator("tbody").inner_text()), jobs_text
    # What waits for approval is not what waits for a ticket.
    approval = olga.locator(".stat", has_text="Waiting for approval")
    expect(approval).not_to_contain_text("queued")
    expect(olga.locator(".stat", has_text="Open tickets")).to_contain_text("queued for a ticket")


def test_the_board_offers_retry_for_every_task_that_can_be_retried(
    browser,  # noqa: F811
    live_server,
    sim,
):
    from playwright.sync_api import expect

    connection = factories.otrs_connection(sim)
    crm = factories.endpoint(connection, name="crm", tries=5)
    hr = factories.endpoint(connection, name="hr", tries=1, entitlements=("hr-viewer",))
    carol = factories.user("carol", "approvers")
    factories.user("olga", "operators")
    waiting, failed = ask(crm), ask(hr, username="grace", entitlements=("hr-viewer",))
    for r in (waiting, failed):
        services.request_approve(access_request=r, by=carol)

    olga = log_in(browser, live_server.url, "olga")
    olga.goto(live_server.url + "/board/")
    expect(olga.locator(".card")).to_have_count(2)
    # Nothing can be ticked, so nothing offers to retry the ticked ones.
    expect(olga.locator("summary", has_text="Retry selected")).to_have_count(0)
    expect(olga.locator(".card input[type=checkbox]")).to_have_count(0)

    sim.configure(fail_rate=1)
    services.provision_due(limit=2)  # one attempt each: the second one waits to retry
    sim.configure(fail_rate=0)
    assert ProvisioningTask.objects.get(request=waiting).status == "retry_wait"
    assert ProvisioningTask.objects.get(request=failed).status == "failed"

    olga.reload()
    waiting_card = olga.locator(".card", has_text=waiting.number)
    expect(waiting_card).to_contain_text("Waiting to retry")
    expect(waiting_card).to_contain_text("on CRM")
    expect(olga.locator(".card", has_text=failed.number).get_by_role("checkbox")).to_be_visible()
    waiting_card.get_by_role("checkbox").check()
    olga.locator("summary", has_text="Retry selected").click()
    olga.get_by_role("button", name="Yes, retry selected").click()
    expect(olga.locator(".message-success")).to_contain_text("1 task queued again.")
    assert ProvisioningTask.objects.get(request=waiting).status == "new"
    assert ProvisioningTask.objects.get(request=failed).status == "failed"


def test_the_overview_and_the_connection_pages_tell_one_session_state(
    browser,  # noqa: F811
    live_server,
    sim,
):
    from playwright.sync_api import expect

    connection = factories.otrs_connection(sim)
    factories.user("olga", "operators", "admins")
    assert connection_check(connection=connection).ok

    page = log_in(browser, live_server.url, "olga")

    def session_lines() -> dict[str, str]:
        page.goto(live_server.url + "/")
        overview = page.locator(".small", has_text="Session").inner_text()
        page.goto(live_server.url + "/connections/")
        listing = page.locator("td[data-label=Session]").inner_text()
        page.goto(live_server.url + connection.get_absolute_url())
        detail = page.locator(".token").inner_text()
        return {"overview": overview, "list": listing, "detail": detail}

    for where, text in session_lines().items():
        assert re.search(r"Valid\s+obtained .+ · expires in \d+ min", text), (where, text)

    # The password changes in OTRS; the next login fails and drops the session.
    factories.otrs_connection(sim, password="not-the-password")
    connection.refresh_from_db()
    assert not connection_check(connection=connection).ok
    for where, text in session_lines().items():
        assert "Login failed" in text, (where, text)
        assert "No token yet" not in text and "expires" not in text, (where, text)
    expect(page.locator(".token")).to_contain_text("Login failed")


def test_messages_and_pages_use_display_names_and_labels(
    browser,  # noqa: F811
    live_server,
    sim,
):
    from playwright.sync_api import expect

    from connections.models import Connection

    connection = factories.otrs_connection(sim)
    factories.endpoint(connection, name="crm")
    quiet = Connection.objects.create(name="quiet", description="never called")
    factories.user("root", "admins", "approvers", "requesters", "operators", superuser=True)
    page = log_in(browser, live_server.url, "root")

    page.goto(live_server.url + "/requests/new/")
    page.get_by_label("For whom").fill("ada")
    page.get_by_text("New person? Add their name and email").click()
    page.get_by_label("First name").fill("Ada")
    page.get_by_label("Last name").fill("Lovelace")
    page.get_by_label("Endpoint").select_option(label="CRM")
    page.get_by_text("crm-read").click()
    page.get_by_label("Operation").select_option("add_access")
    page.get_by_role("button", name="Submit request").click()
    error = page.locator("#id_operation-errors")
    expect(error).to_have_text(
        "Ada Lovelace has no account on CRM, so there is nothing to change. "
        "Request “Create account” first."
    )

    page.goto(live_server.url + connection.get_absolute_url())
    endpoints = page.locator("section", has=page.get_by_role("heading", name="Endpoints using it"))
    expect(endpoints).to_contain_text("CRM in the application CRM system")
    page.goto(live_server.url + quiet.get_absolute_url())
    expect(page.get_by_role("heading", name="Recent calls")).to_have_text("Recent calls")
    expect(page.locator("main")).to_contain_text("No application uses this connection yet.")
    for path in ("/connections/", connection.get_absolute_url(), "/", "/inbox/"):
        page.goto(live_server.url + path)
        text = page.locator("main").inner_text()
        for wrong in ("until in", "the last 0", "security system", "Passed."):
            assert wrong not in text, (path, wrong)
    # The inbox's empty state is words only: no emoji to show as a box without emoji fonts.
    expect(page.locator("main .empty")).to_have_text("Nothing waits for your decision.")

    admin_index = page.goto(live_server.url + "/admin/")
    assert admin_index is not None and admin_index.ok
    expect(page.locator("#content-main")).to_contain_text("Applications")
    expect(page.locator("#content-main")).not_to_contain_text("Security systems")


def test_layout_at_1280_and_390_px(browser, live_server, sim):  # noqa: F811
    from playwright.sync_api import expect

    connection = factories.otrs_connection(sim)
    crm = factories.endpoint(connection, name="crm", tries=1)
    factories.user("root", "admins", "approvers", "requesters", "operators", superuser=True)
    bob = factories.user("bob", "requesters")
    pending = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=crm,
        operation="create_account",
        requester=bob,
        entitlements=["crm-read", "crm-write"],
    )
    base = live_server.url
    page = log_in(browser, base, "root")

    # The filter bar shows its placeholders and choices whole.
    page.goto(base + "/requests/")
    cut = page.evaluate(
        """() => {
          const ctx = document.createElement("canvas").getContext("2d");
          return [...document.querySelectorAll(".filters input:not([type=date]), .filters select")]
            .map((el) => {
              const cs = getComputedStyle(el);
              ctx.font = cs.font;
              const text = el.tagName === "SELECT" ? el.options[el.selectedIndex].text : el.placeholder;
              const arrow = el.tagName === "SELECT" ? 24 : 0;
              const room = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - arrow;
              return [el.name, text, Math.ceil(ctx.measureText(text).width), Math.floor(room)];
            })
            .filter(([, text, width, room]) => text && width > room);
        }"""
    )
    assert cut == [], cut

    # The open "Approve…" step keeps its button label readable.
    page.goto(base + "/inbox/")
    item = page.locator("article", has_text=pending.number)
    summary = item.locator("summary", has_text="Approve…")
    summary.click()
    ratio = summary.evaluate(
        """(el) => {
          const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
          const lum = (c) => {
            const [r, g, b] = rgb(c).map((v) => {
              v /= 255;
              return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
            });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b;
          };
          const cs = getComputedStyle(el);
          const [a, b] = [lum(cs.color), lum(cs.backgroundColor)].sort((x, y) => y - x);
          return (a + 0.05) / (b + 0.05);
        }"""
    )
    assert ratio >= 4.5, ratio

    # A field's message goes once the field is filled.
    page.goto(base + "/requests/new/")
    page.get_by_label("For whom").fill("")
    page.get_by_role("button", name="Submit request").click()
    beneficiary_errors = page.locator("#id_beneficiary-errors")
    endpoint_errors = page.locator("#id_endpoint-errors")
    expect(beneficiary_errors).to_have_text("This field is required.")
    expect(endpoint_errors).to_have_text("This field is required.")
    page.get_by_label("For whom").fill("grace")
    expect(beneficiary_errors).to_have_count(0)
    expect(page.get_by_label("For whom")).not_to_have_attribute("aria-invalid", "true")
    expect(endpoint_errors).to_be_visible()  # not filled yet: its message stays
    page.get_by_label("Endpoint").select_option(label="CRM")
    expect(endpoint_errors).to_have_count(0)

    # Phone width: the jobs table's summary is on screen, entitlements sit beside a label.
    sim.configure(fail_rate=1)
    services.request_approve(access_request=pending, by=factories.user("carol", "approvers"))
    jobs.provision_job(trigger="schedule")
    sim.configure(fail_rate=0)
    phone = log_in(browser, base, "root", 390, 844)
    summary_cell = phone.locator("td[data-label=Summary]").first
    expect(summary_cell).to_contain_text("1 task: 1 failed")
    box = summary_cell.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390, box
    phone.goto(base + "/requests/")
    change = phone.locator("td[data-label=Change]").first
    operation_box = change.get_by_text("Create account").bounding_box()
    entitlements_box = change.get_by_text("crm-read, crm-write").bounding_box()
    assert operation_box and entitlements_box
    # Under the operation, in the value column, not under the row labels.
    assert abs(entitlements_box["x"] - operation_box["x"]) < 2, (operation_box, entitlements_box)
    assert entitlements_box["y"] > operation_box["y"]
    # On every stacked table, no text falls under the labels and no badge spans the value.
    for url in ("/", "/requests/", connection.get_absolute_url()):
        phone.goto(base + url)
        misplaced = phone.evaluate(STACKED_CELLS_MISPLACED)
        assert misplaced == [], (url, misplaced)
    assert phone.locator("td[data-label=Call]").count()  # the connection page had calls


# For each cell of a stacked table: its label's right edge, then any text or badge that
# starts left of it (under the label) or a badge wider than half the value column.
STACKED_CELLS_MISPLACED = """() => {
  const out = [];
  for (const td of document.querySelectorAll(".table-stack td[data-label]")) {
    if (getComputedStyle(td).display !== "grid") continue;
    const cell = td.getBoundingClientRect();
    const valueX = cell.left + parseFloat(getComputedStyle(td).gridTemplateColumns);
    const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      const box = range.getBoundingClientRect();
      if (box.width && box.left < valueX) out.push([td.dataset.label, node.textContent.trim()]);
    }
    for (const badge of td.querySelectorAll(".badge")) {
      if (badge.getBoundingClientRect().width > (cell.right - valueX) / 2)
        out.push([td.dataset.label, "wide badge " + badge.textContent.trim()]);
    }
  }
  return out;
}"""


def test_the_console_has_a_favicon(browser, live_server):  # noqa: F811
    factories.user("olga", "operators")
    page = log_in(browser, live_server.url, "olga")
    href = page.locator("link[rel=icon]").get_attribute("href")
    icon = page.request.get(live_server.url + href)
    assert icon.ok and icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.body()
    asked = page.request.get(live_server.url + "/favicon.ico")  # what browsers ask on their own
    assert asked.ok and asked.headers["content-type"].startswith("image/svg+xml")
