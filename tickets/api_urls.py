"""Routes of /api/v1. The last one answers every other path with a JSON 404."""

from django.urls import path, re_path

from . import api

app_name = "api"

urlpatterns = [
    path("health", api.health, name="health"),
    path("openapi.json", api.openapi_document, name="openapi"),
    path("requests", api.requests_collection, name="requests"),
    path("requests/<int:pk>", api.request_detail, name="request"),
    path("requests/<int:pk>/cancel", api.request_cancel_view, name="request_cancel"),
    path("callback", api.callback_view, name="callback"),
    path("hooks/otrs/<str:connection_name>", api.otrs_webhook, name="otrs_webhook"),
    # [\s\S], not ".": a path holding an encoded line break (%0a) is a path too.
    re_path(r"^(?P<path>[\s\S]*)\Z", api.not_found, name="not_found"),
]
