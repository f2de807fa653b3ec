"""The request workflow: submit, approve, reject, cancel, retry; every change has its event."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from tests import factories
from tickets import services
from tickets.models import (
    AccessRequest,
    Account,
    AccountEntitlement,
    Identity,
    ProvisioningTask,
    TaskEvent,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def crm(offline):
    """These tests never call OTRS: the endpoint sits on the conftest's offline connection."""
    return offline


def submit(crm, requester, **kw):
    defaults = {
        "beneficiary": {
            "username": "ada",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
        },
        "endpoint": crm,
        "operation": "create_account",
        "requester": requester,
    }
    return services.request_submit(**{**defaults, **kw})


def test_submit_creates_identity_number_and_event(crm, people):
    r = submit(crm, people.alice, justification="new hire")
    assert r.number == f"REQ-{r.pk:06d}"
    assert r.status == "pending_approval"
    assert Identity.objects.get(username="ada").last_name == "Lovelace"
    event = TaskEvent.objects.get(request=r)
    assert (event.to_status, event.actor_label) == ("pending_approval", "alice")


def test_submit_reports_every_wrong_field_and_writes_nothing(crm, people):
    with pytest.raises(services.RequestInvalid) as info:
        services.request_submit(
            beneficiary={"username": "", "email": "x"},
            endpoint="no-such-app",
            operation="grant_everything",
            requester=people.alice,
        )
    fields = info.value.fields
    assert "there is no endpoint named 'no-such-app'." in fields["endpoint"]
    assert any("must be one of" in m for m in fields["operation"])
    assert fields["beneficiary.username"] == ["is required."]
    assert AccessRequest.objects.count() == 0 and Identity.objects.count() == 0


def test_remove_account_without_account_is_refused_with_reason(crm, people):
    with pytest.raises(services.RequestInvalid) as info:
        submit(crm, people.bob, operation="remove_account")
    assert info.value.fields["operation"] == [
        "Ada Lovelace has no account on CRM, so there is nothing to remove."
    ]


def test_access_change_needs_offered_entitlements(crm, people):
    account_owner = Identity.objects.create(username="ada")
    Account.objects.create(identity=account_owner, endpoint=crm, name="ada")
    with pytest.raises(services.RequestInvalid) as info:
        submit(crm, people.alice, operation="add_access", entitlements=["crm-read", "root"])
    assert info.value.fields["entitlements"] == ["not offered by CRM: root."]


def test_approval_creates_one_task_per_entitlement(crm, people):
    Account.objects.create(
        identity=Identity.objects.create(username="ada"), endpoint=crm, name="ada"
    )
    r = submit(crm, people.alice, operation="add_access", entitlements=["crm-read", "crm-write"])
    services.request_approve(access_request=r, by=people.bob, comment="fine")
    tasks = list(r.tasks.order_by("entitlement"))
    assert [(t.entitlement, t.status, t.max_attempts) for t in tasks] == [
        ("crm-read", "new", 5),
        ("crm-write", "new", 5),
    ]
    assert len({t.correlation_key for t in tasks}) == 2
    r.refresh_from_db()
    assert (r.status, r.decided_by, r.decision_comment) == ("approved", people.bob, "fine")


def test_account_operation_gets_one_task(crm, people):
    r = submit(crm, people.alice, entitlements=["crm-read"])
    services.request_approve(access_request=r, by=people.bob)
    assert list(r.tasks.values_list("operation", "entitlement")) == [("create_account", "")]


def test_nobody_approves_their_own_request(crm, people):
    r = submit(crm, people.bob)
    with pytest.raises(PermissionDenied, match="You requested REQ-"):
        services.request_approve(access_request=r, by=people.bob)
    r.refresh_from_db()
    assert r.status == "pending_approval" and not r.tasks.exists()


def test_requester_cannot_approve(crm, people):
    r = submit(crm, people.alice)
    with pytest.raises(PermissionDenied):
        services.request_approve(access_request=r, by=factories.user("mallory", "requesters"))
    assert AccessRequest.objects.get(pk=r.pk).status == "pending_approval"


def test_illegal_transition_is_refused_and_changes_nothing(crm, people):
    r = submit(crm, people.alice)
    services.request_reject(access_request=r, by=people.bob, comment="no")
    events_before = TaskEvent.objects.count()
    with pytest.raises(services.TransitionError, match="is “Rejected”"):
        services.request_approve(access_request=AccessRequest.objects.get(pk=r.pk), by=people.carol)
    assert AccessRequest.objects.get(pk=r.pk).status == "rejected"
    assert TaskEvent.objects.count() == events_before


def test_stale_object_cannot_double_approve(crm, people):
    r = submit(crm, people.alice)
    stale_copy = AccessRequest.objects.get(pk=r.pk)
    services.request_approve(access_request=r, by=people.bob)
    with pytest.raises(services.TransitionError):
        services.request_approve(access_request=stale_copy, by=people.carol)
    assert ProvisioningTask.objects.filter(request=r).count() == 1


def test_cancel_cancels_open_tasks(crm, people):
    r = submit(crm, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    services.request_cancel(access_request=r, by=people.olga)
    assert AccessRequest.objects.get(pk=r.pk).status == "cancelled"
    assert list(r.tasks.values_list("status", flat=True)) == ["cancelled"]


def test_requester_may_cancel_only_own_pending_request(crm, people):
    r = submit(crm, people.alice)
    with pytest.raises(PermissionDenied):
        services.request_cancel(access_request=r, by=factories.user("eve", "requesters"))
    services.request_cancel(access_request=r, by=people.alice)
    assert AccessRequest.objects.get(pk=r.pk).status == "cancelled"


def test_manual_retry_of_failed_task_resets_tries(crm, people):
    r = submit(crm, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    task = r.tasks.get()
    ProvisioningTask.objects.filter(pk=task.pk).update(
        status="failed", attempts=5, last_error="boom"
    )
    AccessRequest.objects.filter(pk=r.pk).update(status="failed")
    with pytest.raises(PermissionDenied):
        services.task_retry(task=ProvisioningTask.objects.get(pk=task.pk), by=people.alice)
    task = services.task_retry(task=ProvisioningTask.objects.get(pk=task.pk), by=people.olga)
    assert (task.status, task.attempts, task.last_error) == ("new", 0, "")
    assert AccessRequest.objects.get(pk=r.pk).status == "in_progress"
    assert TaskEvent.objects.filter(task=task, reason="manual retry", actor_label="olga").exists()


def test_completed_task_cannot_be_retried(crm, people):
    r = submit(crm, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    ProvisioningTask.objects.filter(request=r).update(status="completed")
    with pytest.raises(services.TransitionError, match="only failed or waiting"):
        services.task_retry(task=r.tasks.get(), by=people.olga)


def test_trusted_api_client_requests_arrive_approved(crm):
    from tickets.models import ApiClient

    client = ApiClient.objects.create(
        name="iga", token_hash="x" * 64, token_prefix="x", trusted=True
    )
    r = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint="crm",
        operation="create_account",
        api_client=client,
        upstream_approver="manager@upstream",
    )
    assert r.status == "approved" and r.decided_by_label == "manager@upstream"
    assert r.tasks.count() == 1


def test_completion_updates_inventory_and_sends_mail(
    crm, people, mailoutbox, django_capture_on_commit_callbacks, q_sync
):
    r = submit(crm, people.alice, entitlements=["crm-read"])
    services.request_approve(access_request=r, by=people.bob)
    with django_capture_on_commit_callbacks(execute=True):
        _close(r.tasks.get())
    r.refresh_from_db()
    assert r.status == "completed" and r.result_summary == "1 completed"
    account = Account.objects.get(identity__username="ada", endpoint=crm)
    assert list(
        AccountEntitlement.objects.filter(account=account).values_list("entitlement", flat=True)
    ) == ["crm-read"]
    assert len(mailoutbox) == 1
    assert set(mailoutbox[0].to) == {"ada@example.com", "alice@example.com"}
    assert r.number in mailoutbox[0].subject


def factories_ticket(task):
    from tickets.models import Ticket

    ticket = Ticket.objects.create(
        connection=task.connection, ticket_id=900 + task.pk, ticket_number="2026"
    )
    ProvisioningTask.objects.filter(pk=task.pk).update(status="ticket_open", ticket=ticket)
    return ticket


def test_endpoint_without_connection_is_refused_by_name_and_by_object(people):
    from connections.models import Endpoint, SecuritySystem

    orphan = Endpoint.objects.create(
        name="orphan", security_system=SecuritySystem.objects.create(name="nowhere")
    )
    for endpoint in ("orphan", orphan):
        with pytest.raises(services.RequestInvalid) as info:
            services.request_submit(
                beneficiary={"username": "ada"},
                endpoint=endpoint,
                operation="create_account",
                requester=people.alice,
            )
        assert "orphan has no service-desk connection" in info.value.fields["endpoint"][0]
    assert AccessRequest.objects.count() == 0


def test_a_failed_task_of_a_cancelled_request_cannot_be_retried(crm, people):
    r = submit(crm, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    ProvisioningTask.objects.filter(request=r).update(status="failed")
    services.request_cancel(access_request=AccessRequest.objects.get(pk=r.pk), by=people.olga)
    with pytest.raises(services.TransitionError, match="cancelled or rejected"):
        services.task_retry(task=r.tasks.get(), by=people.olga)
    assert r.tasks.get().status == "failed"


def test_approval_is_refused_when_the_connection_was_removed_meanwhile(crm, people):
    r = submit(crm, people.alice)
    crm.security_system.service_desk_connection = None
    crm.security_system.save()
    with pytest.raises(services.TransitionError, match="no service-desk connection any more"):
        services.request_approve(access_request=AccessRequest.objects.get(pk=r.pk), by=people.bob)
    assert AccessRequest.objects.get(pk=r.pk).status == "pending_approval"
    assert not ProvisioningTask.objects.exists()


def _close(task, outcome="completed"):
    from connections.errors import TicketStatus

    ticket = factories_ticket(task)
    status = TicketStatus(
        ticket_id=ticket.ticket_id,
        ticket_number="2026",
        state="closed successful",
        state_type="closed",
        changed=None,
        outcome=outcome,
        merged_into=None,
    )
    services.ticket_apply_status(ticket=ticket, status=status, actor=services.Actor.job("test"))


def test_an_email_template_cannot_reach_the_connections_secrets(
    crm, people, mailoutbox, django_capture_on_commit_callbacks, q_sync
):
    connection = crm.security_system.service_desk_connection
    connection.set_webhook_secret("hook-secret-value-123")
    connection.completion_email_template = (
        "{{ request }} for {{ request.beneficiary.email }} on {{ request.endpoint }}: "
        "{{ request.endpoint.security_system.service_desk_connection.secret_values }}"
        "{{ request.endpoint.security_system.service_desk_connection.secrets }}"
        "{% for t in tasks %} {{ t.get_status_display }} {{ t.ticket.ticket_number }}{% endfor %}"
    )
    connection.save()
    r = submit(crm, people.alice)
    services.request_approve(access_request=r, by=people.bob)
    with django_capture_on_commit_callbacks(execute=True):
        _close(r.tasks.get())
    [mail] = mailoutbox
    assert mail.body.startswith(f"{r.number} for ada@example.com on {crm}: ")
    assert "Completed 2026" in mail.body
    assert "hook-secret" not in mail.body and "bridge-demo-password" not in mail.body


def test_an_account_name_held_by_someone_else_is_refused_at_submit(
    crm, people, django_capture_on_commit_callbacks
):
    r = submit(crm, people.alice, account_name="shared")
    services.request_approve(access_request=r, by=people.bob)
    with django_capture_on_commit_callbacks(execute=True):
        _close(r.tasks.get())
    with pytest.raises(services.RequestInvalid) as caught:
        submit(crm, people.bob, beneficiary={"username": "bea"}, account_name="shared")
    assert caught.value.fields == {
        "account_name": [f"'shared' on {crm} already belongs to Ada Lovelace."]
    }
    # A requester who may not see everyone's access learns the name is taken, not by whom.
    with pytest.raises(services.RequestInvalid) as caught:
        submit(crm, people.alice, beneficiary={"username": "bea"}, account_name="shared")
    assert caught.value.fields == {
        "account_name": [
            f"This request cannot be made: the account name 'shared' is taken on {crm}; "
            "choose another."
        ]
    }
