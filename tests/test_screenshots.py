"""Screenshots of the console for the README: `make screenshots` (pytest --screenshots).

Builds a small, realistic history through the real services against the simulator
(requests approved, tickets opened and closed by an "agent", one failure, one stale
ticket), then photographs each main page at 1280×800 and the overview at phone width.
Without --screenshots the module is skipped.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from connections.models import Endpoint, SecuritySystem
from tests import factories
from tests.test_browser import (
    CHROMIUM,
    browser,  # noqa: F401  (the Chromium fixture)
    log_in,
)
from tickets import jobs, services
from tickets.models import AccessRequest, Ticket

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

PEOPLE = [
    ("ada", "Ada", "Lovelace"),
    ("grace", "Grace", "Hopper"),
    ("alan", "Alan", "Turing"),
    ("margaret", "Margaret", "Hamilton"),
    ("katherine", "Katherine", "Johnson"),
    ("linus", "Linus", "Torvalds"),
    ("barbara", "Barbara", "Liskov"),
    ("edsger", "Edsger", "Dijkstra"),
    ("radia", "Radia", "Perlman"),
    ("ken", "Ken", "Thompson"),
]


@pytest.fixture(autouse=True)
def only_when_asked(request):
    if not request.config.getoption("--screenshots"):
        pytest.skip("screenshots are taken by `make screenshots` (pytest --screenshots)")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: run `make chromium`")


def set_state(sim, ticket: Ticket, state: str) -> None:
    """Play the OTRS agent: press a state button of the simulator's page."""
    response = requests.post(
        f"{sim.url}/_sim/tickets/{ticket.ticket_id}/state",
        data={"state": state, "next": "/"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code in (302, 303), response.text


def display_names() -> None:
    """The names people read: display names, not the test builders' codes."""
    for name, endpoint, application in (
        ("crm", "Sales CRM", "CRM"),
        ("hr-portal", "HR portal", "HR"),
    ):
        Endpoint.objects.filter(name=name).update(display_name=endpoint)
        SecuritySystem.objects.filter(endpoints__name=name).update(display_name=application)


def build_history(sim) -> dict[str, AccessRequest]:
    connection = factories.otrs_connection(sim)
    crm = factories.endpoint(connection, name="crm", instant=False)
    factories.endpoint(
        connection, name="hr-portal", entitlements=("hr-viewer", "hr-editor", "payroll")
    )
    alice = factories.user("alice", "requesters")
    carol = factories.user("carol", "approvers")
    olga = factories.user("olga", "operators")
    for person, first, last in (
        (alice, "Alice", "Archer"),
        (carol, "Carol", "Chen"),
        (olga, "Olga", "Ivanova"),
    ):
        person.first_name, person.last_name = first, last
        person.save()
    display_names()
    made: dict[str, AccessRequest] = {}

    def ask(username, first, last, endpoint, operation, entitlements=(), why=""):
        return services.request_submit(
            beneficiary={
                "username": username,
                "first_name": first,
                "last_name": last,
                "email": f"{username}@example.com",
            },
            endpoint=endpoint,
            operation=operation,
            requester=alice,
            entitlements=list(entitlements),
            justification=why,
        )

    # Completed: Ada's account with two entitlements, then one more entitlement.
    for i, (username, first, last) in enumerate(PEOPLE[:7]):
        endpoint = crm if i % 2 == 0 else "hr-portal"
        offered = ["crm-read", "crm-write"] if endpoint == crm else ["hr-viewer"]
        r = ask(
            username, first, last, endpoint, "create_account", offered, "Joins the team on Monday"
        )
        services.request_approve(access_request=r, by=carol, comment="Approved for onboarding")
        made.setdefault("first", r)
    jobs.provision_job(trigger="schedule")
    tickets = list(Ticket.objects.order_by("id"))
    for ticket in tickets[:3]:
        set_state(sim, ticket, "closed successful")
    set_state(sim, tickets[3], "pending reminder")
    jobs.poll_job(trigger="schedule")
    made["completed"] = AccessRequest.objects.get(tasks__ticket=tickets[0])

    # An access change on a completed account.
    more = ask(
        "ada", "Ada", "Lovelace", crm, "add_access", ["crm-admin"], "Covers for the CRM admin"
    )
    services.request_approve(access_request=more, by=carol)
    jobs.provision_job(trigger="schedule")

    # A stale ticket: the oldest one, still pending after 20 days.
    Ticket.objects.filter(pk=tickets[3].pk).update(created_at=timezone.now() - timedelta(days=20))
    jobs.poll_job(trigger="schedule")

    # A failure: OTRS answers 500 and the system allows one try.
    factories.endpoint(connection, name="crm", tries=1)
    display_names()
    sim.configure(fail_rate=1)
    # By name: the endpoint object above still holds the old number of tries.
    broken = ask(
        "linus", "Linus", "Torvalds", "crm", "create_account", ["crm-read"], "Contractor, 3 months"
    )
    services.request_approve(access_request=broken, by=carol)
    jobs.provision_job(trigger="schedule")
    sim.configure(fail_rate=0)
    made["failed"] = broken

    # Waiting for approval.
    for username, first, last in PEOPLE[7:]:
        ask(username, first, last, "hr-portal", "create_account", ["hr-viewer"], "New in finance")
    return made


def test_take_screenshots(browser, live_server, sim):  # noqa: F811
    made = build_history(sim)
    OUT.mkdir(parents=True, exist_ok=True)
    base = live_server.url

    def login(username: str, width: int = 1280, height: int = 800):
        return log_in(browser, base, username, width, height)

    def shoot(page, path: str, name: str, full_page: bool = False):
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(OUT / f"{name}.png"), full_page=full_page)

    olga = login("olga")
    shoot(olga, "/", "overview")
    shoot(olga, "/board/", "board")
    shoot(olga, "/requests/", "requests")
    shoot(olga, made["completed"].get_absolute_url(), "request-detail")
    shoot(olga, "/identities/ada/", "identity")
    shoot(olga, "/connections/otrs-demo/", "connection")

    carol = login("carol")
    shoot(carol, "/inbox/", "inbox")

    alice = login("alice")
    alice.goto(base + "/requests/new/")
    alice.get_by_label("For whom").fill("grace")
    alice.get_by_label("Endpoint").select_option(label="HR portal")
    alice.get_by_text("hr-editor").click()
    alice.get_by_label("Operation").select_option("remove_access")
    alice.get_by_role("button", name="Submit request").click()
    alice.wait_for_load_state("networkidle")
    alice.screenshot(path=str(OUT / "submit.png"))

    phone = login("olga", 390, 844)
    shoot(phone, "/", "overview-phone")
