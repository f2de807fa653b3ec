"""List and board pages run the same number of queries for 10 rows as for 500."""

from __future__ import annotations

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.console_data import make_requests

pytestmark = pytest.mark.django_db


def count_queries(client, url: str, params: dict | None = None) -> int:
    with CaptureQueriesContext(db) as ctx:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "name,params",
    [
        ("tickets:request_list", {}),
        ("tickets:request_list", {"status": "failed", "q": "person", "page": "2"}),
        ("tickets:board", {}),
        ("tickets:overview", {}),
        ("tickets:inbox", {}),
        ("tickets:identity_list", {}),
    ],
)
def test_query_count_does_not_grow_with_rows(
    client, offline, people, django_assert_num_queries, name, params
):
    client.force_login(people.olga if name != "tickets:inbox" else people.carol)
    url = reverse(name)
    make_requests(10, endpoint=offline, requester=people.alice)
    small = count_queries(client, url, params)
    make_requests(490, endpoint=offline, requester=people.alice, start=11)
    with django_assert_num_queries(small):
        client.get(url, params)


def test_requester_list_query_count_is_fixed_too(
    client, offline, people, django_assert_num_queries
):
    client.force_login(people.alice)
    url = reverse("tickets:request_list")
    make_requests(10, endpoint=offline, requester=people.alice)
    small = count_queries(client, url)
    make_requests(490, endpoint=offline, requester=people.alice, start=11)
    with django_assert_num_queries(small):
        client.get(url)


def test_request_list_query_count_is_small(client, offline, people):
    """Session, user, permissions, filter choices, count, page, tasks (and the nav badge)."""
    client.force_login(people.olga)
    make_requests(60, endpoint=offline, requester=people.alice)
    assert count_queries(client, reverse("tickets:request_list")) <= 9


@pytest.mark.parametrize("page", ["requester overview", "identity"])
def test_other_request_tables_query_count_is_fixed_too(
    client, offline, people, django_assert_num_queries, page
):
    from tickets.models import AccessRequest, Identity

    def url_after(count: int, start: int) -> str:
        make_requests(count, endpoint=offline, requester=people.alice, start=start)
        ada = Identity.objects.order_by("pk").first()
        AccessRequest.objects.update(beneficiary=ada)
        return (
            reverse("tickets:overview") if page == "requester overview" else ada.get_absolute_url()
        )

    client.force_login(people.alice if page == "requester overview" else people.olga)
    small = count_queries(client, url_after(2, 1))
    url = url_after(8, 3)
    with django_assert_num_queries(small):
        client.get(url)
