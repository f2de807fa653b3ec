"""Console URLs (mounted at /)."""

from django.urls import path

from . import views

app_name = "tickets"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("board/", views.board, name="board"),
    path("requests/", views.request_list, name="request_list"),
    path("requests/new/", views.submit, name="submit"),
    path("requests/new/entitlements/", views.submit_entitlements, name="submit_entitlements"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path(
        "requests/<int:pk>/approve/",
        views.request_decide,
        {"decision": "approve"},
        name="request_approve",
    ),
    path(
        "requests/<int:pk>/reject/",
        views.request_decide,
        {"decision": "reject"},
        name="request_reject",
    ),
    path("requests/<int:pk>/cancel/", views.request_cancel, name="request_cancel"),
    path("inbox/", views.inbox, name="inbox"),
    path("tasks/retry/", views.tasks_retry, name="tasks_retry"),
    path("tasks/<int:pk>/retry/", views.task_action, {"action": "retry"}, name="task_retry"),
    path("tasks/<int:pk>/cancel/", views.task_action, {"action": "cancel"}, name="task_cancel"),
    path("notes/<int:pk>/retry/", views.note_retry, name="note_retry"),
    path("deliveries/<int:pk>/redeliver/", views.delivery_redeliver, name="delivery_redeliver"),
    path("jobs/<slug:job>/run/", views.job_run, name="job_run"),
    path("identities/", views.identity_list, name="identity_list"),
    # path: a username may hold "/" (DOMAIN/user); the trailing slash still ends it.
    path("identities/<path:username>/", views.identity_detail, name="identity"),
]
