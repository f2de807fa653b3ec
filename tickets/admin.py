"""Admin screens for the work: requests, tasks, tickets, the timeline and job runs.

All of it is history written by tickets.services, so it is read-only here (STYLE.md
practice 14): nobody edits a status by hand. The one action, "Retry selected", calls the
same service as the console's Retry button. Every row links to its console page, where
people actually work; the console links back here for admins.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from connections.forms import STRICT_JSON

from . import services
from .api import api_client_create
from .forms import IdentityAdminForm
from .models import (
    AccessRequest,
    Account,
    AccountEntitlement,
    ApiClient,
    Identity,
    JobRun,
    ProvisioningTask,
    TaskEvent,
    Ticket,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: viewable, never added, changed or deleted through the admin."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def console_link(url: str, label: str = "Open in console") -> str:
    return format_html('<a href="{}">{}</a>', url, label)


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyAdmin):
    """Access requests as submitted and decided; the console shows their timeline."""

    list_display = [
        "number",
        "beneficiary",
        "operation",
        "endpoint",
        "status",
        "created_at",
        "console",
    ]
    list_filter = ["status", "operation", "endpoint"]
    list_select_related = ["beneficiary", "endpoint"]
    search_fields = ["number", "beneficiary__username", "beneficiary__last_name"]
    date_hierarchy = "created_at"
    readonly_fields = ["console"]

    @admin.display(description="Console")
    def console(self, obj: AccessRequest) -> str:
        return console_link(obj.get_absolute_url())


@admin.register(ProvisioningTask)
class ProvisioningTaskAdmin(ReadOnlyAdmin):
    """Provisioning tasks; failed ones can be retried in bulk, like on the board."""

    list_display = [
        "id",
        "request",
        "operation",
        "entitlement",
        "status",
        "attempts",
        "ticket",
        "flag",
        "console",
    ]
    list_filter = ["status", "operation", "connection"]
    list_select_related = ["request", "ticket"]
    search_fields = ["request__number", "correlation_key", "ticket__ticket_number"]
    readonly_fields = ["console"]
    actions = ["retry_selected"]

    @admin.display(description="Console")
    def console(self, obj: ProvisioningTask) -> str:
        return console_link(f"{obj.request.get_absolute_url()}#task-{obj.pk}")

    @admin.action(description="Retry selected failed tasks")
    def retry_selected(self, request, queryset) -> None:
        """The console's Retry button, for many tasks: the service checks role and state."""
        done, refused = services.tasks_retry(tasks=queryset, by=request.user)
        if done:
            self.message_user(request, f"{len(done)} task(s) queued again.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)


@admin.register(Ticket)
class TicketAdmin(ReadOnlyAdmin):
    """The mapping between tasks and OTRS tickets, with the last state polled."""

    list_display = [
        "ticket_number",
        "ticket_id",
        "connection",
        "state",
        "is_open",
        "last_polled_at",
        "agent_view",
    ]
    list_filter = ["is_open", "connection", "state"]
    list_select_related = ["connection"]
    search_fields = ["ticket_number", "=ticket_id"]

    @admin.display(description="OTRS")
    def agent_view(self, obj: Ticket) -> str:
        if not obj.agent_url:
            return "—"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">agent view</a>', obj.agent_url
        )


@admin.register(TaskEvent)
class TaskEventAdmin(ReadOnlyAdmin):
    """Every transition: when, from, to, why and who."""

    list_display = [
        "at",
        "request",
        "task_id",
        "from_status",
        "to_status",
        "actor_kind",
        "actor_label",
        "reason",
    ]
    list_filter = ["to_status", "actor_kind"]
    list_select_related = ["request"]
    search_fields = ["request__number", "reason", "actor_label"]
    date_hierarchy = "at"


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    """Runs of the provisioning and polling jobs, recorded before each starts."""

    list_display = ["name", "trigger", "status", "started_at", "finished_at", "summary"]
    list_filter = ["status", "name", "trigger"]
    date_hierarchy = "started_at"


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    """People whose access changes. Admins may correct names and emails."""

    form = IdentityAdminForm

    list_display = ["username", "first_name", "last_name", "email", "console"]
    search_fields = ["username", "first_name", "last_name", "email"]
    list_select_related = ["manager"]
    raw_id_fields = ["manager"]
    readonly_fields = ["console"]
    formfield_overrides = STRICT_JSON

    @admin.display(description="Console")
    def console(self, obj: Identity) -> str:
        return console_link(reverse("tickets:identity", args=[obj.username])) if obj.pk else "—"


class EntitlementInline(admin.TabularInline):
    model = AccountEntitlement
    extra = 0
    readonly_fields = ["entitlement", "granted_at", "granted_by"]
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    """The access inventory that completed tasks recorded."""

    list_display = ["name", "identity", "endpoint", "active", "created_at", "removed_at"]
    list_filter = ["active", "endpoint"]
    list_select_related = ["identity", "endpoint"]
    search_fields = ["name", "identity__username"]
    inlines = [EntitlementInline]


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    """Upstream systems allowed to use the JSON API. The token is shown once, at creation."""

    list_display = ["name", "trusted", "active", "token_prefix", "created_at", "last_used_at"]
    list_filter = ["trusted", "active"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at"]
    fields = [
        "name",
        "trusted",
        "active",
        "scim_endpoints",
        "token_prefix",
        "created_at",
        "last_used_at",
    ]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        client, token = api_client_create(name=obj.name, trusted=obj.trusted)
        obj.pk, obj.token_prefix, obj.created_at = client.pk, client.token_prefix, client.created_at
        obj._state.adding = False
        # Kept on this request's object only, for response_add: never in a message, the
        # session or a cookie (Django's message cookie is signed, not encrypted).
        obj.new_token = token

    def response_add(self, request, obj, post_url_continue=None):
        """The token, once, on the page that answers the POST; nothing keeps it after."""
        token = getattr(obj, "new_token", "")
        if not token:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"The token of {obj.name}",
            "original": obj,
            "token": token,
        }
        return TemplateResponse(request, "admin/tickets/apiclient/token_created.html", context)
