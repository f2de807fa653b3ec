"""`manage.py load_demo`, what `make run` shows a newcomer: refused without DEBUG, safe to run
again, and holding what the README says it holds."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from connections.models import Connection, SecuritySystem
from tickets.models import AccessRequest, Account
from tickets.services import governance

pytestmark = pytest.mark.django_db


def test_the_demo_is_refused_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="runs only with DEBUG=True"):
        call_command("load_demo")
    assert not Connection.objects.exists()


def test_the_demo_holds_what_the_readme_says_and_loads_twice_without_doubling(settings, capsys):
    settings.DEBUG = True
    call_command("load_demo")
    # A demo removal of the imported account, and names an older demo did not set, are
    # kept as they are and filled in by the next run.
    Account.objects.filter(name="edijkstra").update(active=False)
    User.objects.filter(username="bob").update(first_name="", last_name="")
    call_command("load_demo")
    Account.objects.filter(name="edijkstra").update(active=True)
    assert "Demo data ready (0 new request(s))." in capsys.readouterr().out

    assert [(u.username, u.get_full_name()) for u in User.objects.order_by("username")] == [
        ("admin", "Avery Admin"),
        ("alice", "Alice Archer"),
        ("bob", "Bob Baker"),
        ("olga", "Olga Ivanova"),
    ]
    assert AccessRequest.objects.count() == 3
    assert sorted(AccessRequest.objects.values_list("status", flat=True)) == [
        "approved",
        "approved",
        "pending_approval",
    ]
    erp = SecuritySystem.objects.get(name="erp-system")
    assert list(erp.owners.values_list("username", flat=True)) == ["bob"]
    [account] = Account.objects.all()
    assert (account.identity.username, account.name, account.origin) == (
        "edsger.dijkstra",
        "edijkstra",
        "import",
    )
    assert sorted(account.entitlements.values_list("entitlement", flat=True)) == [
        "ledger-post",
        "ledger-view",
    ]
    # Only the owner (and the admins) decide ERP's requests.
    bob, olga = User.objects.get(username="bob"), User.objects.get(username="olga")
    assert governance.has_owners(erp)
    assert governance.is_owner(bob, erp) and not governance.is_owner(olga, erp)
