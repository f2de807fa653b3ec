"""scim2-tester, a third-party checker of RFC 7643/7644 servers, runs its discovery, CRUD
and PATCH checks on Users and Groups against the SCIM service of an endpoint, served by a
live server over real HTTP. Every check it runs must pass."""

from __future__ import annotations

import collections

import pytest
from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests import factories
from tickets import api
from tickets.models import AccessRequest, ScimChange, ScimUser

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# The statuses that mean "conforms"; the checks that could not run are SKIPPED.
PASSED = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE}


def run_checker(live_server, connection) -> list:
    # An endpoint that offers any entitlement: the checker names its groups at random.
    endpoint = factories.endpoint(connection, name="crm", entitlements=())
    client, token = api.api_client_create(name="checker", trusted=True)
    client.scim_endpoints.set([endpoint])
    http = Client(
        base_url=f"{live_server.url}/scim/v2/crm",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    with http:
        return check_server(SyncSCIMClient(http))


def test_scim2_tester_passes_every_discovery_crud_and_patch_check(live_server, connection):
    results = run_checker(live_server, connection)
    ran = [r for r in results if r.status != Status.SKIPPED]
    failed = [r for r in ran if r.status not in PASSED]
    tags = collections.Counter(t.split(":")[0] for r in ran for t in r.tags)
    print(f"\nscim2-tester: {len(ran)} checks run, {len(ran) - len(failed)} passed; {dict(tags)}")
    assert not failed, "\n".join(f"{r.status.name} {r.title}: {r.reason}" for r in failed)
    # Discovery, CRUD and PATCH all ran, on both resource types.
    assert {"discovery", "crud", "patch"} <= set(tags), tags
    assert {r.resource_type for r in ran} >= {"User", "Group"}
    # What it created became requests of the checker, approved upstream, each linked to
    # the SCIM user it was made for.
    assert ScimUser.objects.exists()
    made = AccessRequest.objects.filter(operation="create_account")
    assert made.count() == ScimChange.objects.filter(request__in=made).count() > 0
    assert set(AccessRequest.objects.values_list("decided_by_label", flat=True)) == {
        "SCIM client checker"
    }
