"""Notifications: each sent once, after commit, to the people it concerns, in its own
template; transient mail errors retried; operator mails throttled in the database."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from connections.errors import TicketStatus
from tests import factories, flaky_mail
from tickets import services
from tickets.api import api_client_create
from tickets.models import (
    AccessRequest,
    NotificationTemplate,
    NotificationThrottle,
    ProvisioningTask,
    Ticket,
)
from tickets.services import notifications

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(q_sync, mailoutbox, django_capture_on_commit_callbacks):
    """Run `action` as one committed change and return the mails it sent (jobs run inline)."""

    def run(action):
        before = len(mailoutbox)
        with django_capture_on_commit_callbacks(execute=True):
            result = action()
        return result, mailoutbox[before:]

    return run


def submit(endpoint, requester, **kw):
    kw.setdefault(
        "beneficiary", {"username": "ada", "first_name": "Ada", "email": "ada@example.com"}
    )
    kw.setdefault("operation", "create_account")
    return services.request_submit(endpoint=endpoint, requester=requester, **kw)


def recipients(mail) -> set[str]:
    return set(mail.to)


def close(task, outcome: str, state: str = "closed successful"):
    ticket = Ticket.objects.create(
        connection=task.connection, ticket_id=900 + task.pk, ticket_number="2026"
    )
    ProvisioningTask.objects.filter(pk=task.pk).update(status="ticket_open", ticket=ticket)
    status = TicketStatus(
        ticket_id=ticket.ticket_id,
        ticket_number="2026",
        state=state,
        state_type="closed",
        changed=None,
        outcome=outcome,
        merged_into=None,
    )
    services.ticket_apply_status(ticket=ticket, status=status, actor=services.Actor.job("test"))


def test_a_new_request_is_mailed_to_the_approvers_who_may_decide_it(offline, people, sent):
    r, [mail] = sent(lambda: submit(offline, people.alice))
    assert recipients(mail) == {"bob@example.com", "carol@example.com"}
    assert mail.subject == f"{r.number} waits for your approval"
    assert "http://127.0.0.1:8000" + reverse("tickets:inbox") in mail.body
    # With owners, only they hear of it (and never the requester or the beneficiary).
    offline.security_system.owners.add(people.carol)
    r, [mail] = sent(lambda: submit(offline, people.bob, beneficiary={"username": "bea"}))
    assert recipients(mail) == {"carol@example.com"}


def test_nobody_is_mailed_when_the_change_rolls_back(offline, people, sent):
    from django.db import transaction

    def rolled_back():
        try:
            with transaction.atomic():
                submit(offline, people.alice)
                raise RuntimeError("abort")
        except RuntimeError:
            return None

    _, mails = sent(rolled_back)
    assert mails == []


def test_approved_rejected_and_cancelled_go_to_the_requester_and_the_beneficiary(
    offline, people, sent
):
    first = submit(offline, people.alice)
    _, [mail] = sent(
        lambda: services.request_approve(access_request=first, by=people.bob, comment="fine")
    )
    assert recipients(mail) == {"alice@example.com", "ada@example.com"}
    assert mail.subject == f"{first.number} was approved"
    assert 'approved by bob: "fine"' in mail.body

    second = submit(
        offline, people.alice, beneficiary={"username": "bea", "email": "bea@example.com"}
    )
    _, [mail] = sent(
        lambda: services.request_reject(
            access_request=second, by=people.carol, comment="not for interns"
        )
    )
    assert recipients(mail) == {"alice@example.com", "bea@example.com"}
    assert "The reason given: not for interns" in mail.body

    third = submit(
        offline, people.alice, beneficiary={"username": "cid", "email": "cid@example.com"}
    )
    _, [mail] = sent(lambda: services.request_cancel(access_request=third, by=people.alice))
    assert recipients(mail) == {"alice@example.com", "cid@example.com"}
    assert mail.subject == f"{third.number} was cancelled"


def test_completed_with_failures_and_discontinued_each_have_their_mail(offline, people, sent):
    done = submit(offline, people.alice)
    services.request_approve(access_request=done, by=people.bob)
    _, [mail] = sent(lambda: close(done.tasks.get(), "completed"))
    assert mail.subject == f"{done.number} is completed"
    assert "Access request " + done.number + " is completed." in mail.body
    assert recipients(mail) == {"alice@example.com", "ada@example.com"}

    stopped = submit(
        offline, people.alice, beneficiary={"username": "bea", "email": "bea@example.com"}
    )
    services.request_approve(access_request=stopped, by=people.bob)
    _, [mail] = sent(lambda: close(stopped.tasks.get(), "discontinued", "closed unsuccessful"))
    assert mail.subject == f"{stopped.number} was discontinued by the service desk"
    assert "1 discontinued" in mail.body

    failing = submit(
        offline, people.alice, beneficiary={"username": "cid", "email": "cid@example.com"}
    )
    services.request_approve(access_request=failing, by=people.bob)
    _, mails = sent(lambda: close(failing.tasks.get(), "failed", "closed unsuccessful"))
    assert len(mails) == 2
    by_subject = {m.subject: m for m in mails}
    assert set(by_subject) == {
        f"{failing.number} ended with failures",
        f"Provisioning fails on {offline.security_system.service_desk_connection}",
    }
    assert recipients(by_subject[f"{failing.number} ended with failures"]) == {
        "alice@example.com",
        "cid@example.com",
    }


def test_operators_hear_of_failures_at_most_once_an_hour_per_connection(offline, people, sent):
    tasks = []
    for name in ("ada", "bea", "cid"):
        r = submit(offline, people.alice, beneficiary={"username": name})
        services.request_approve(access_request=r, by=people.bob)
        tasks.append(r.tasks.get())
    _, mails = sent(lambda: close(tasks[0], "failed", "closed unsuccessful"))
    [operator_mail] = [m for m in mails if m.subject.startswith("Provisioning fails")]
    assert recipients(operator_mail) == {"olga@example.com"}
    assert "/board/" in operator_mail.body
    _, mails = sent(lambda: close(tasks[1], "failed", "closed unsuccessful"))
    assert not [m for m in mails if m.subject.startswith("Provisioning fails")]
    # The throttle lives in the database: an hour later (any worker) mails again.
    NotificationThrottle.objects.update(sent_at=timezone.now() - timedelta(hours=1, minutes=1))
    _, mails = sent(lambda: close(tasks[2], "failed", "closed unsuccessful"))
    assert [m for m in mails if m.subject.startswith("Provisioning fails")]


def test_a_flagged_task_is_mailed_to_the_operators(offline, people, sent):
    r = submit(offline, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    _, [mail] = sent(lambda: close(r.tasks.get(), None, "merged somewhere odd"))
    assert (
        mail.subject
        == f"Tickets on {offline.security_system.service_desk_connection} need an operator"
    )
    assert "unmapped state: merged somewhere odd" in mail.body
    assert recipients(mail) == {"olga@example.com"}


def test_a_connection_that_cannot_log_in_is_mailed_to_the_operators(sim, people, sent):
    connection = factories.otrs_connection(sim, password="not-the-password")
    crm = factories.endpoint(connection, name="crm")
    r = submit(crm, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    _, mails = sent(lambda: services.provision_due(owner="test"))
    [mail] = [m for m in mails if "cannot log in" in m.subject]
    assert recipients(mail) == {"olga@example.com"}
    assert "not-the-password" not in mail.body


def test_a_transient_mail_error_is_retried(offline, people, sent, settings):
    settings.EMAIL_BACKEND = "tests.flaky_mail.FlakyBackend"
    flaky_mail.DROPS["left"] = 1
    r = submit(offline, people.alice)
    _, [mail] = sent(lambda: services.request_approve(access_request=r, by=people.bob))
    assert mail.subject == f"{r.number} was approved"
    assert flaky_mail.DROPS["left"] == 0


def test_a_refused_mail_never_undoes_the_transition(offline, people, sent, settings, caplog):
    settings.EMAIL_BACKEND = "tests.flaky_mail.RefusingBackend"
    r = submit(offline, people.alice)
    with caplog.at_level(logging.WARNING):
        _, mails = sent(lambda: services.request_approve(access_request=r, by=people.bob))
    assert mails == []
    assert AccessRequest.objects.get(pk=r.pk).status == "approved"
    assert "request_approved notification" in caplog.text and "was not sent" in caplog.text


def test_an_admins_template_replaces_the_built_in_one(offline, people, sent):
    NotificationTemplate.objects.create(
        kind=notifications.REQUEST_REJECTED,
        subject="No for {{ request.beneficiary }}",
        body="{{ request.number }} {{ comment }} {{ request.beneficiary.email }} {{ nothing.here }}|",
    )
    r = submit(offline, people.alice)
    _, [mail] = sent(
        lambda: services.request_reject(access_request=r, by=people.bob, comment="why")
    )
    assert mail.subject == "No for Ada (ada)"
    assert mail.body == f"{r.number} why ada@example.com |"


def test_the_templates_admin_names_kinds_in_words_and_empty_means_built_in(
    client, offline, people, sent
):
    client.force_login(factories.user("root", superuser=True))
    add = reverse("admin:tickets_notificationtemplate_add")
    form = client.get(add).content.decode()
    assert "Approval needed: a request waits for a decision" in form
    assert "Task failed, Task flagged, Connection login failed" in form
    assert "left empty, the built-in text is sent" in form
    assert "approval_needed" not in form.replace('value="approval_needed"', "")
    saved = client.post(add, {"kind": notifications.REQUEST_REJECTED, "subject": "", "body": ""})
    assert saved.status_code == 302, saved.content.decode()
    listing = client.get(reverse("admin:tickets_notificationtemplate_changelist")).content
    assert "Request rejected" in listing.decode() and "request_rejected" not in listing.decode()
    r = submit(offline, people.alice)
    _, [mail] = sent(
        lambda: services.request_reject(access_request=r, by=people.bob, comment="why")
    )
    assert mail.subject == f"{r.number} was rejected"
    assert "why" in mail.body and r.number in mail.body
    assert "\nEndpoint:    CRM (application: CRM system)\n" in mail.body


def test_an_address_with_a_line_break_is_refused_at_the_form_and_never_mailed(
    client, offline, people
):
    client.force_login(people.alice)
    response = client.post(
        reverse("tickets:submit"),
        {
            "beneficiary": "eve",
            "beneficiary_email": "eve@example.com\r\nBcc: x@evil.test",
            "endpoint": offline.pk,
            "operation": "create_account",
        },
    )
    assert response.status_code == 400 and "is not an email address" in response.content.decode()
    assert notifications.recipients(
        "x", ["eve@example.com\r\nBcc: x@evil.test", "ok@example.com"]
    ) == ["ok@example.com"]


def test_every_kind_has_a_default_template_that_renders(offline, people, sent):
    r = submit(offline, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    task = r.tasks.get()
    for kind in notifications.KINDS:
        ref = (
            task.pk
            if kind.startswith("task")
            else offline.security_system.service_desk_connection_id
        )
        ref = r.pk if kind.startswith(("request", "approval")) else ref
        NotificationThrottle.objects.all().delete()
        message = notifications.notification_send(kind=kind, ref=ref)
        assert "template error" not in message, kind


def test_readme_lists_every_notification_and_its_variables():
    from pathlib import Path

    from tickets.management.commands.notification_templates import with_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert with_table(readme) == readme, "regenerate: manage.py notification_templates --readme"
    for kind in notifications.KINDS:
        assert f"`{kind}`" in readme


def test_every_declared_variable_has_a_value_and_nothing_else_is_given(offline, people):
    """The declaration and the contexts the templates get are the same list."""
    from django.template import Context, Variable

    r = submit(offline, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    task = r.tasks.get()
    contexts = {
        "request": notifications._request_message(notifications.REQUEST_APPROVED, r.pk),
        "operator": notifications._operator_message(notifications.TASK_FAILED, task.pk),
    }
    for group, message in contexts.items():
        context = Context(message.context)
        kind = message.kind
        declared = notifications.variable_names(kind)
        for name in declared:
            Variable(name).resolve(context)  # raises VariableDoesNotExist when missing
        roots = {name.split(".")[0] for name in declared}
        assert set(message.context) == roots, group


def test_after_the_first_of_two_approvals_the_other_approvers_are_asked(offline, people, sent):
    system = offline.security_system
    system.two_approvals = True
    system.save()
    system.owners.add(people.carol)
    r, [mail] = sent(lambda: submit(offline, people.alice))
    assert recipients(mail) == {"carol@example.com"}  # the owner decides first
    assert "Owner approval (1 of 2)" in mail.body
    _, [mail] = sent(lambda: services.request_approve(access_request=r, by=people.carol))
    assert recipients(mail) == {"bob@example.com"}  # anyone but the first approver
    assert mail.subject == f"{r.number} waits for your approval"
    assert "Second approval (2 of 2); first approved by carol" in mail.body


def test_a_request_an_api_client_filed_names_it_in_words_in_its_mails(offline, people, sent):
    iga, _ = api_client_create(name="iga")
    access_request = services.request_submit(
        beneficiary={"username": "ada", "email": "ada@example.com"},
        endpoint=offline,
        operation="create_account",
        api_client=iga,
        entitlements=["crm-read"],
    )
    _, [mail] = sent(
        lambda: services.request_reject(
            access_request=access_request, by=people.carol, comment="no"
        )
    )
    assert "Requested by: API client iga" in mail.body
    assert "api:iga" not in mail.body
