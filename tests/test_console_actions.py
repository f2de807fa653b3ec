"""Console buttons: approve, reject, cancel, retry (one and bulk), run a job, test a connection.

Every POST is checked on the server: the wrong role gets 403 and nothing changes, and
CSRF is enforced. Each button says what happened through a message.
"""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from tests import factories
from tickets import jobs, services
from tickets.models import AccessRequest, ProvisioningTask, TaskEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(offline, people):
    return services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=offline,
        operation="create_account",
        requester=people.alice,
    )


@pytest.fixture
def failed_task(pending, people):
    """An approved request whose one task failed (as a worker would leave it)."""
    services.request_approve(access_request=pending, by=people.carol)
    task = ProvisioningTask.objects.get(request=pending)
    ProvisioningTask.objects.filter(pk=task.pk).update(status="failed", last_error="boom")
    AccessRequest.objects.filter(pk=pending.pk).update(status="failed")
    return ProvisioningTask.objects.get(pk=task.pk)


def said(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_approver_approves_with_comment_and_is_told(client, pending, people):
    client.force_login(people.carol)
    url = reverse("tickets:request_approve", args=[pending.pk])
    response = client.post(url, {"comment": "fine", "next": reverse("tickets:inbox")})
    assert response.status_code == 302 and response["Location"] == reverse("tickets:inbox")
    pending.refresh_from_db()
    assert pending.status == "approved" and pending.decision_comment == "fine"
    assert any("approved" in m for m in said(response))


def test_approver_rejects(client, pending, people):
    client.force_login(people.carol)
    response = client.post(reverse("tickets:request_reject", args=[pending.pk]), {"comment": "no"})
    pending.refresh_from_db()
    assert pending.status == "rejected"
    assert any("rejected" in m for m in said(response))


def test_requester_cannot_approve_or_reject(client, pending, people):
    client.force_login(people.alice)
    for name in ("tickets:request_approve", "tickets:request_reject"):
        assert client.post(reverse(name, args=[pending.pk])).status_code == 403
    pending.refresh_from_db()
    assert pending.status == "pending_approval"
    assert TaskEvent.objects.filter(request=pending).count() == 1


def test_nobody_approves_their_own_request(client, offline, people):
    own = services.request_submit(
        beneficiary={"username": "ada"},
        endpoint=offline,
        operation="create_account",
        requester=people.bob,  # bob requests and approves
    )
    client.force_login(people.bob)
    inbox = client.get(reverse("tickets:inbox")).content.decode()
    assert (
        own.number in inbox and f"You requested {own.number}; another approver must decide" in inbox
    )
    assert reverse("tickets:request_approve", args=[own.pk]) not in inbox
    detail = client.get(own.get_absolute_url()).content.decode()
    assert reverse("tickets:request_approve", args=[own.pk]) not in detail
    response = client.post(reverse("tickets:request_approve", args=[own.pk]))
    assert response.status_code == 403
    assert f"You requested {own.number}; another approver must decide." in response.content.decode()
    own.refresh_from_db()
    assert own.status == "pending_approval"


def test_requester_cannot_retry_or_cancel_tasks_or_run_jobs(client, failed_task, people):
    client.force_login(people.alice)
    for url in (
        reverse("tickets:task_retry", args=[failed_task.pk]),
        reverse("tickets:task_cancel", args=[failed_task.pk]),
        reverse("tickets:tasks_retry"),
        reverse("tickets:job_run", args=["provision"]),
        reverse("tickets:job_run", args=["poll"]),
    ):
        assert client.post(url, {"task": [failed_task.pk]}).status_code == 403, url
    failed_task.refresh_from_db()
    assert failed_task.status == "failed" and failed_task.last_error == "boom"


def test_retry_button_requeues_and_says_so(client, failed_task, people):
    client.force_login(people.olga)
    response = client.post(reverse("tickets:task_retry", args=[failed_task.pk]))
    assert response.status_code == 302
    assert response["Location"] == failed_task.request.get_absolute_url()
    failed_task.refresh_from_db()
    assert failed_task.status == "new" and failed_task.attempts == 0
    assert any("queued again" in m for m in said(response))
    again = client.post(reverse("tickets:task_retry", args=[failed_task.pk]))
    assert any("only failed or waiting tasks" in m for m in said(again))


def test_cancel_task_button(client, failed_task, people):
    client.force_login(people.olga)
    services.task_retry(task=failed_task, by=people.olga)
    response = client.post(reverse("tickets:task_cancel", args=[failed_task.pk]))
    failed_task.refresh_from_db()
    assert failed_task.status == "cancelled"
    assert any("cancelled" in m for m in said(response))


def test_bulk_retry_of_selected_tasks_and_requests(client, offline, people):
    tasks = []
    for name in ("ada", "grace", "linus"):
        r = services.request_submit(
            beneficiary={"username": name},
            endpoint=offline,
            operation="create_account",
            requester=people.alice,
        )
        services.request_approve(access_request=r, by=people.carol)
        task = r.tasks.get()
        ProvisioningTask.objects.filter(pk=task.pk).update(status="failed")
        AccessRequest.objects.filter(pk=r.pk).update(status="failed")
        tasks.append(task)
    client.force_login(people.olga)
    response = client.post(
        reverse("tickets:tasks_retry"),
        {"task": [tasks[0].pk], "request": [tasks[1].request_id], "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("tickets:board")  # a foreign `next` is ignored
    statuses = [ProvisioningTask.objects.get(pk=t.pk).status for t in tasks]
    assert statuses == ["new", "new", "failed"]
    assert "2 tasks queued again." in said(response)


def test_requester_cancels_own_pending_request_but_not_others(client, pending, people, offline):
    other = services.request_submit(
        beneficiary={"username": "grace"},
        endpoint=offline,
        operation="create_account",
        requester=people.bob,
    )
    client.force_login(people.alice)
    assert client.post(reverse("tickets:request_cancel", args=[other.pk])).status_code == 404
    response = client.post(reverse("tickets:request_cancel", args=[pending.pk]))
    pending.refresh_from_db()
    assert pending.status == "cancelled"
    assert any("cancelled" in m for m in said(response))


def test_run_now_buttons_queue_the_jobs(client, people, monkeypatch):
    queued = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *a, **kw: queued.append((func, a))
    )
    client.force_login(people.olga)
    response = client.post(reverse("tickets:job_run", args=["provision"]))
    client.post(reverse("tickets:job_run", args=["poll"]))
    assert queued == [
        (jobs.job_path(jobs.provision_due_tasks), (None, "button")),
        (jobs.job_path(jobs.poll_open_tickets), (None, "button")),
    ]
    assert any("queued" in m for m in said(response))
    assert client.post(reverse("tickets:job_run", args=["reboot"])).status_code == 403


def test_get_on_a_button_is_refused(client, failed_task, people):
    client.force_login(people.olga)
    assert client.get(reverse("tickets:task_retry", args=[failed_task.pk])).status_code == 405


def test_csrf_is_enforced_on_buttons(failed_task, people):
    client = Client(enforce_csrf_checks=True)
    client.force_login(people.olga)
    response = client.post(reverse("tickets:task_retry", args=[failed_task.pk]))
    assert response.status_code == 403
    failed_task.refresh_from_db()
    assert failed_task.status == "failed"
    # With the token from the page, the same button works.
    page = client.get(failed_task.request.get_absolute_url())
    token = page.cookies["csrftoken"].value
    ok = client.post(
        reverse("tickets:task_retry", args=[failed_task.pk]), {"csrfmiddlewaretoken": token}
    )
    assert ok.status_code == 302


def test_test_connection_button(client, sim, people):
    connection = factories.otrs_connection(sim)
    url = reverse("connections:test", args=[connection.name])
    client.force_login(people.olga)  # operators see connections but do not change them
    assert client.post(url).status_code == 403
    client.force_login(factories.user("root", "admins"))
    response = client.post(url)
    assert response.status_code == 302 and response["Location"] == connection.get_absolute_url()
    assert any(m.startswith("Connection test passed") for m in said(response))
    page = client.get(connection.get_absolute_url()).content.decode()
    assert "Test passed" in page and "Valid" in page  # the session token's state, not its value


# --- the admin's read-only history and its "Retry selected" action ----------------------


def test_history_admins_list_and_link_to_the_console(client, failed_task):
    client.force_login(factories.user("root", "admins", superuser=True))
    for model in (
        "accessrequest",
        "provisioningtask",
        "ticket",
        "taskevent",
        "jobrun",
        "identity",
        "account",
    ):
        response = client.get(reverse(f"admin:tickets_{model}_changelist"))
        assert response.status_code == 200, model
    page = client.get(reverse("admin:tickets_accessrequest_changelist")).content.decode()
    assert failed_task.request.get_absolute_url() in page
    assert client.get(reverse("admin:tickets_provisioningtask_add")).status_code == 403


def test_retry_selected_action_calls_the_service(client, failed_task):
    client.force_login(factories.user("root", "admins", superuser=True))
    response = client.post(
        reverse("admin:tickets_provisioningtask_changelist"),
        {"action": "retry_selected", "_selected_action": [failed_task.pk]},
        follow=True,
    )
    assert "1 task queued again." in response.content.decode()
    failed_task.refresh_from_db()
    assert failed_task.status == "new"
    assert failed_task.events.filter(reason="manual retry", actor_label="root").exists()


def test_odd_ids_in_bulk_retry_and_submit_are_ignored_not_crashing(client, django_user_model):
    from tests import factories

    client.force_login(factories.user("olga-odd", "operators", "requesters"))
    response = client.post(
        "/tasks/retry/", {"task": ["²", "99999999999999999999999"], "request": ["³"]}
    )
    assert response.status_code in (200, 302)
    assert client.get("/requests/new/?endpoint=²").status_code == 200
    assert client.get("/requests/new/entitlements/?endpoint=²").status_code == 200
