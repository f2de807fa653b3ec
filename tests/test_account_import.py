"""Accounts that existed before the bridge: the CSV import (service, command, admin page),
hostile files, requests on imported accounts, and endpoints that accept unknown accounts."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from tests import factories
from tickets import limits, services
from tickets.models import AccessRequest, Account, AccountEntitlement, Identity
from tickets.services import accounts

pytestmark = pytest.mark.django_db

HEADER = "username,email,first_name,last_name,account_name,entitlements\n"
GOOD = (
    HEADER
    + "ada,ada@example.com,Ada,Lovelace,ada.l,crm-read;crm-write\n"
    + "bea,bea@example.com,Bea,Smith,,crm-read\n"
    + "cid,,,,cid-old,\n"
)


def inventory() -> list[tuple]:
    return sorted(
        (
            a.identity.username,
            a.name,
            a.origin,
            tuple(a.entitlements.values_list("entitlement", flat=True)),
        )
        for a in Account.objects.filter(active=True).select_related("identity")
    )


def run(endpoint, text: str | bytes, **kw) -> accounts.ImportReport:
    data = text.encode() if isinstance(text, str) else text
    return accounts.import_rows(
        endpoint=endpoint, rows=accounts.parse_csv(data), actor="test", **kw
    )


def test_a_good_file_creates_people_accounts_and_entitlements(offline):
    Identity.objects.create(username="bea", first_name="Beatrice")
    report = run(offline, GOOD)
    assert report.written and not report.problems
    assert report.identities_created == ["ada", "cid"]
    assert report.accounts_created == ["ada.l", "bea", "cid-old"]
    assert report.entitlements_added == 3
    assert inventory() == [
        ("ada", "ada.l", "import", ("crm-read", "crm-write")),
        ("bea", "bea", "import", ("crm-read",)),
        ("cid", "cid-old", "import", ()),
    ]
    # An existing person is not changed by an import.
    assert Identity.objects.get(username="bea").first_name == "Beatrice"
    assert Identity.objects.get(username="ada").last_name == "Lovelace"


def test_importing_the_same_file_again_changes_nothing(offline):
    run(offline, GOOD)
    before = (inventory(), Identity.objects.count(), AccountEntitlement.objects.count())
    report = run(offline, GOOD)
    assert report.written and report.unchanged == 3
    assert not report.accounts_created and not report.identities_created
    assert report.entitlements_added == 0
    assert (inventory(), Identity.objects.count(), AccountEntitlement.objects.count()) == before


def test_a_new_entitlement_on_a_known_account_is_added_without_a_second_account(offline):
    run(offline, GOOD)
    report = run(offline, HEADER + "ada,ada@example.com,Ada,Lovelace,ada.l,crm-admin\n")
    assert report.entitlements_added == 1 and not report.accounts_created
    assert ("ada", "ada.l", "import", ("crm-admin", "crm-read", "crm-write")) in inventory()
    assert Account.objects.filter(name="ada.l").count() == 1


def test_a_file_with_bad_rows_writes_nothing_and_names_every_line(offline):
    bob = Identity.objects.create(username="bob")
    Account.objects.create(identity=bob, endpoint=offline, name="taken")
    text = (
        HEADER
        + "ada,ada@example.com,Ada,Lovelace,ada,crm-read\n"  # line 2: good
        + "b c,,,,,\n"  # 3: bad username
        + 'eve,"eve@example.com\r\nBcc: x@evil.test",,,,\n'  # 4-5: header injection
        + "fay,fay@example.com,,,fay,crm-everything\n"  # 6: not offered
        + "gus,,,,taken,\n"  # 7: bob's account
        + "ada,ada@example.com,Ada,Lovelace,ada,crm-read\n"  # 8: duplicate row
        + "bob,,,,bob2,\n"  # 9: bob already has "taken"
        + "hal,hal@,,,,\n"  # 10: not an address
        + "ida,,,\n"  # 11: too few values
        + "j k,jk@,,,,\n"  # 12: two problems, one message
    )
    report = run(offline, text)
    assert not report.written
    lines = {p.line: p.message for p in report.problems}
    assert sorted(lines) == [3, 4, 6, 7, 8, 9, 10, 11, 12]
    assert "is not a username" in lines[3]
    assert "line break" in lines[4]
    assert "does not offer: crm-everything" in lines[6]
    assert "'taken' on CRM belongs to bob, not gus" in lines[7]
    assert "already appears on line 2" in lines[8]
    assert "bob already has the account 'taken'" in lines[9]
    assert "is not an email address" in lines[10]
    assert "it has 4 values, the header names 6" in lines[11]
    assert "is not a username" in lines[12] and "is not an email address" in lines[12]
    assert ".;" not in lines[12] and "; " in lines[12]
    assert Identity.objects.filter(username="ada").count() == 0
    assert Account.objects.count() == 1


def test_partial_writes_the_good_rows_and_lists_the_rest(offline):
    report = run(offline, HEADER + "ada,,,,,crm-read\nb c,,,,,\n", partial=True)
    assert report.written
    assert [str(p) for p in report.problems][0].startswith("line 3: ")
    assert inventory() == [("ada", "ada", "import", ("crm-read",))]


def test_a_dry_run_reports_and_writes_nothing(offline):
    report = run(offline, GOOD, dry_run=True)
    assert not report.written and len(report.accounts_created) == 3
    assert Account.objects.count() == 0 and Identity.objects.count() == 0


def test_rows_from_another_source_import_without_a_file(offline):
    """The service takes rows (mappings), so other ways in can reuse it."""
    report = accounts.import_rows(
        endpoint=offline,
        rows=[{"username": "ada", "account_name": "ada", "entitlements": ["crm-read"]}],
        actor="scim",
    )
    assert report.written and inventory() == [("ada", "ada", "import", ("crm-read",))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"username,email\nad\xe9le,\n", "not UTF-8 text (line 2, byte 18 cannot be read)"),
        (b"user,mail\nada,\n", "unknown column(s): 'user', 'mail'; missing column(s): username"),
        (b"username,username\nada,ada\n", "column(s) named twice: username"),
        (b"x" * (limits.IMPORT_MAX_BYTES + 1), "an import takes at most"),
    ],
)
def test_a_hostile_file_is_refused_as_a_whole_with_its_reason(data, message):
    with pytest.raises(accounts.ImportFileError) as refused:
        accounts.parse_csv(data)
    assert message in str(refused.value)


def test_a_byte_order_mark_and_spelled_out_headers_are_read(offline):
    data = "\ufeffUsername,Email,First name,Last name,Account name,Entitlements\r\nada,ada@example.com,Ada,L,ada,crm-read\r\n"
    report = run(offline, data.encode())
    assert report.written and inventory() == [("ada", "ada", "import", ("crm-read",))]


def test_too_many_rows_are_refused(offline, settings, monkeypatch):
    monkeypatch.setattr(limits, "IMPORT_MAX_ROWS", 2)
    with pytest.raises(accounts.ImportFileError, match="more than 2 rows"):
        accounts.parse_csv((HEADER + "a,,,,,\nb,,,,,\nc,,,,,\n").encode())


def test_a_formula_in_a_cell_is_stored_as_text_never_evaluated(offline):
    report = run(offline, HEADER + 'ada,,"=HYPERLINK(""http://evil.test"")",,ada,\n')
    assert report.written
    assert Identity.objects.get(username="ada").first_name == '=HYPERLINK("http://evil.test")'


# --- the command ---------------------------------------------------------------------------------


def test_the_command_imports_and_refuses_a_bad_file_with_its_lines(offline, tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    call_command("import_accounts", "crm", str(good), "--dry-run")
    assert "Dry run: nothing was written." in capsys.readouterr().out
    assert Account.objects.count() == 0
    call_command("import_accounts", "crm", str(good))
    assert "imported 3 new account(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "zed,,,,,\nb c,,,,,\n")
    with pytest.raises(CommandError, match="1 row"):
        call_command("import_accounts", "crm", str(bad))
    assert "bad.csv line 3:" in capsys.readouterr().err
    assert not Identity.objects.filter(username="zed").exists()
    call_command("import_accounts", "crm", str(bad), "--partial")
    assert Identity.objects.filter(username="zed").exists()
    with pytest.raises(CommandError, match="no endpoint named 'nope'"):
        call_command("import_accounts", "nope", str(good))


# --- the admin page ------------------------------------------------------------------------------


def test_the_admin_page_uploads_previews_and_applies(client, offline):
    admin = factories.user("root", superuser=True)
    client.force_login(admin)
    url = reverse("admin:tickets_account_import")
    upload = SimpleUploadedFile("accounts.csv", GOOD.encode(), content_type="text/csv")
    preview = client.post(url, {"endpoint": offline.pk, "file": upload})
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "New accounts: 3" in html and "nothing has been written yet" in html
    assert Account.objects.count() == 0
    applied = client.post(reverse("admin:tickets_account_import_apply"), follow=True)
    assert applied.redirect_chain[-1][0] == reverse("admin:tickets_account_changelist")
    assert applied.status_code == 200
    assert len(inventory()) == 3
    account = Account.objects.order_by("pk").first()
    page = client.get(reverse("admin:tickets_account_change", args=[account.pk]))
    assert page.status_code == 200 and account.name in page.content.decode()
    upload = SimpleUploadedFile("bad.csv", b"username,colour\nada,red\n")
    refused = client.post(url, {"endpoint": offline.pk, "file": upload})
    assert "unknown column(s): &#x27;colour&#x27;" in refused.content.decode()


def test_the_admin_preview_of_bad_rows_offers_no_import(client, offline):
    client.force_login(factories.user("root", superuser=True))
    upload = SimpleUploadedFile("bad.csv", (HEADER + "ada,,,,,\nb c,,,,,\n").encode())
    html = client.post(
        reverse("admin:tickets_account_import"), {"endpoint": offline.pk, "file": upload}
    ).content.decode()
    assert "1 wrong row" in html and "Nothing is imported while a row is wrong" in html
    assert reverse("admin:tickets_account_import_apply") not in html


def test_the_import_page_needs_the_admin_role(client, offline, people):
    client.force_login(factories.user("ops", "operators", "admins"))
    assert client.get(reverse("admin:tickets_account_import")).status_code == 200
    staff = factories.user("staffer", "operators")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    assert client.get(reverse("admin:tickets_account_import")).status_code == 403


# --- requests on imported and unknown accounts: the simulator and the real Znuny over HTTP ------


@pytest.fixture
def desk(otrs_server, db):
    """An endpoint whose tickets go to `otrs_server` (the simulator, then the real Znuny)."""
    connection = factories.otrs_connection(
        otrs_server, user=otrs_server.user, password=otrs_server.password
    )
    return factories.endpoint(connection, name="crm")


def ticket_body(otrs_server, task) -> str:
    return otrs_server.ticket(task.ticket.ticket_id, AllArticles=1)["Article"][0]["Body"]


def provisioned(access_request, approver):
    services.request_approve(access_request=access_request, by=approver)
    services.provision_due(owner="test")
    task = access_request.tasks.get()
    assert task.status == "ticket_open", task.last_error
    return task


def test_removing_an_imported_account_creates_its_ticket(otrs_server, desk, people):
    name = otrs_server.unique("ada")
    run(desk, HEADER + f"ada,ada@example.com,Ada,Lovelace,{name},crm-read\n")
    r = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=desk,
        operation="remove_account",
        requester=people.bob,
    )
    assert r.account_name == name  # the imported account's name, not the username
    body = ticket_body(otrs_server, provisioned(r, people.carol))
    assert "Operation: Remove account" in body and f"Account: {name}" in body
    assert "not in the bridge's inventory" not in body


def test_access_changes_on_an_imported_account_create_their_tickets(otrs_server, desk, people):
    run(desk, HEADER + "ada,ada@example.com,Ada,Lovelace,ada,crm-read\n")
    for operation, entitlement in (("add_access", "crm-write"), ("remove_access", "crm-read")):
        r = services.request_submit(
            beneficiary={"username": "ada"},
            endpoint=desk,
            operation=operation,
            entitlements=[entitlement],
            requester=people.bob,
        )
        body = ticket_body(otrs_server, provisioned(r, people.carol))
        assert f"Entitlement: {entitlement}" in body


def test_an_unknown_account_is_refused_unless_the_endpoint_allows_it(otrs_server, desk, people):
    legacy = otrs_server.unique("ada.legacy")
    ask = dict(
        beneficiary={"username": "ada", "email": "ada@example.com"},
        endpoint=desk,
        operation="remove_account",
        account_name=legacy,
        requester=people.bob,
    )
    with pytest.raises(services.RequestInvalid, match="has no account on CRM"):
        services.request_submit(**ask)
    desk.allow_unknown_accounts = True
    desk.save()
    r = services.request_submit(**ask)
    body = ticket_body(otrs_server, provisioned(r, people.carol))
    assert f"Account: {legacy} (not in the bridge's inventory" in body
    assert AccessRequest.objects.get(pk=r.pk).status == "in_progress"


def test_imported_people_are_linked_to_their_console_users(offline, people):
    report = run(offline, HEADER + "bob,,,,bob,\nbea,carol@example.com,,,bea,\nzed,,,,zed,\n")
    assert report.written
    links = dict(Identity.objects.values_list("username", "user__username"))
    assert links == {"bob": "bob", "bea": "carol", "zed": None}


def test_the_identity_page_without_accounts_says_where_they_come_from(client, offline, people):
    grace = Identity.objects.create(username="grace")
    client.force_login(factories.user("root", superuser=True))
    html = client.get(reverse("tickets:identity", args=[grace.username])).content.decode()
    assert "No accounts recorded yet." in html and "imports the accounts" in html
    assert 'class="accounts"' not in html  # the message spans the panel, not a grid column
    assert "create-account" not in html
