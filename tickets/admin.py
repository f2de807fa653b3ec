"""Admin screens for the work: requests, tasks, tickets, the timeline and job runs.

All of it is history written by tickets.services, so it is read-only here (STYLE.md
practice 14): nobody edits a status by hand. The one action, "Retry selected", calls the
same service as the console's Retry button. Every row links to its console page, where
people actually work; the console links back here for admins.
"""

from __future__ import annotations

import base64

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template import Template, TemplateSyntaxError
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from connections.forms import STRICT_JSON
from connections.models import Endpoint

from . import limits, services
from .api import api_client_create
from .forms import IdentityAdminForm
from .models import (
    OPERATE_PERMISSION,
    UNCONFIRMED_LABEL,
    AccessRequest,
    Account,
    AccountEntitlement,
    ApiClient,
    CallbackDelivery,
    Identity,
    JobRun,
    NotificationTemplate,
    ProvisioningTask,
    TaskEvent,
    Ticket,
    TicketNote,
    notification_kind_label,
)
from .services import accounts, notifications


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: viewable, never added, changed or deleted through the admin. Its actions
    that send or retry something need the operators' permission, as the console's buttons."""

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm(OPERATE_PERMISSION)

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

    @admin.action(
        description="Retry selected tasks (failed or waiting to retry)", permissions=["operate"]
    )
    def retry_selected(self, request, queryset) -> None:
        """The console's Retry button, for many tasks: the service checks role and state."""
        done, refused = services.tasks_retry(tasks=queryset, by=request.user)
        if done:
            n = len(done)
            self.message_user(
                request, f"{n} task{'s' if n != 1 else ''} queued again.", messages.SUCCESS
            )
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

    list_display = ["username", "first_name", "last_name", "email", "user", "console"]
    search_fields = ["username", "first_name", "last_name", "email"]
    list_select_related = ["manager", "user"]
    raw_id_fields = ["manager", "user"]
    readonly_fields = ["console"]
    formfield_overrides = STRICT_JSON

    @admin.display(description="Console")
    def console(self, obj: Identity) -> str:
        return console_link(reverse("tickets:identity", args=[obj.username])) if obj.pk else "—"


def _confirmed(obj: Account | AccountEntitlement) -> str:
    return UNCONFIRMED_LABEL if obj.unconfirmed_by_id else "yes"


class EntitlementInline(admin.TabularInline):
    model = AccountEntitlement
    extra = 0
    fields = ("entitlement", "granted_at", "granted_by", "confirmed")
    readonly_fields = fields

    @admin.display(description="Confirmed")
    def confirmed(self, obj: Account | AccountEntitlement) -> str:
        return _confirmed(obj)

    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


# Who may import accounts: the people who may correct identities (the admins role).
IMPORT_ACCOUNTS_PERMISSION = "tickets.change_identity"
IMPORT_SESSION_KEY = "tickets_account_import"


class AccountImportForm(forms.Form):
    endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.select_related("security_system").order_by("name"),
        empty_label="Choose…",
    )
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "UTF-8, with a header line naming its columns: "
            + ", ".join(accounts.COLUMNS)
            + " (only username is required; entitlements separated by ;)."
        ),
    )
    partial = forms.BooleanField(
        required=False,
        label="Import the good rows even when others are wrong",
        help_text="Without it, one wrong row means nothing is written.",
    )


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    """The access inventory that completed tasks and imports recorded."""

    list_display = [
        "name",
        "identity",
        "endpoint",
        "active",
        "origin",
        "confirmed",
        "created_at",
        "removed_at",
    ]
    list_filter = ["active", "origin", "endpoint"]

    @admin.display(description="Confirmed")
    def confirmed(self, obj: Account | AccountEntitlement) -> str:
        return _confirmed(obj)

    list_select_related = ["identity", "endpoint"]
    search_fields = ["name", "identity__username"]
    inlines = [EntitlementInline]
    change_list_template = "admin/tickets/account/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="tickets_account_import"),
            path(
                "import/apply/", view(self.import_apply_view), name="tickets_account_import_apply"
            ),
            *super().get_urls(),
        ]

    def _page(self, request, template: str, title: str, **context) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            **context,
        }
        return TemplateResponse(request, f"admin/tickets/account/{template}", context)

    def import_view(self, request):
        """Upload and check: the report of what would be written (nothing is written yet)."""
        if not request.user.has_perm(IMPORT_ACCOUNTS_PERMISSION):
            raise PermissionDenied
        form = AccountImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload, endpoint = form.cleaned_data["file"], form.cleaned_data["endpoint"]
            data = upload.read(limits.IMPORT_MAX_BYTES + 1)
            try:
                rows = accounts.parse_csv(data)
            except accounts.ImportFileError as exc:
                form.add_error("file", str(exc))
            else:
                partial = form.cleaned_data["partial"]
                report = accounts.import_rows(
                    endpoint=endpoint, rows=rows, actor=request.user.get_username(), dry_run=True
                )
                request.session[IMPORT_SESSION_KEY] = {
                    "endpoint": endpoint.pk,
                    "partial": partial,
                    "filename": upload.name,
                    "data": base64.b64encode(data).decode(),
                }
                return self._page(
                    request,
                    "import_preview.html",
                    f"Preview the import of {upload.name} into {endpoint}",
                    report=report,
                    partial=partial,
                    can_apply=bool(report.accounts_created or report.entitlements_added)
                    and (partial or not report.problems),
                )
        return self._page(request, "import_upload.html", "Import existing accounts", form=form)

    @method_decorator(require_POST)
    def import_apply_view(self, request):
        """Check the stored file again (the inventory may have moved) and write it."""
        if not request.user.has_perm(IMPORT_ACCOUNTS_PERMISSION):
            raise PermissionDenied
        stored = request.session.pop(IMPORT_SESSION_KEY, None)
        endpoint = Endpoint.objects.filter(pk=(stored or {}).get("endpoint")).first()
        if stored is None or endpoint is None:
            messages.warning(request, "Nothing to apply: upload a file and preview it first.")
            return redirect("admin:tickets_account_import")
        report = accounts.import_rows(
            endpoint=endpoint,
            rows=accounts.parse_csv(base64.b64decode(stored["data"])),
            actor=request.user.get_username(),
            partial=stored["partial"],
        )
        if report.written:
            messages.success(request, f"{stored['filename']}: {report}.")
        for problem in report.problems:
            messages.error(request, f"{stored['filename']} {problem}")
        if not report.written:
            messages.error(request, "Nothing was written.")
        return redirect("admin:tickets_account_changelist")


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    """Upstream systems allowed to use the JSON API. The token is shown once, at creation."""

    list_display = [
        "name",
        "trusted",
        "active",
        "token_prefix",
        "callback_url",
        "created_at",
        "last_used_at",
    ]
    list_filter = ["trusted", "active"]
    # The callback URL is set through the API or `manage.py set_callback`, which show its
    # secret once; the secret itself is never on a page.
    readonly_fields = ["token_prefix", "callback_url", "created_at", "last_used_at"]
    fields = [
        "name",
        "trusted",
        "active",
        "scim_endpoints",
        "token_prefix",
        "callback_url",
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


class NotificationTemplateForm(forms.ModelForm):
    """A kind from the declaration, and templates that compile."""

    kind = forms.ChoiceField(choices=())

    class Meta:
        model = NotificationTemplate
        fields = ["kind", "subject", "body"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [
            (k.name, f"{notification_kind_label(k.name)}: {k.when}")
            for k in notifications.KINDS.values()
        ]
        request_kinds = [k for k in notifications.KINDS.values() if not k.operators]
        operator_kinds = [k for k in notifications.KINDS.values() if k.operators]
        self.fields["subject"].required = False
        self.fields[
            "subject"
        ].help_text = "A Django template, one line. Left empty, the built-in subject is sent."
        self.fields["body"].required = False
        self.fields["body"].help_text = (
            "A Django template; left empty, the built-in text is sent. Request notifications see "
            + ", ".join(notifications.variable_names(request_kinds[0].name))
            + ". Operator notifications ("
            + ", ".join(notification_kind_label(k.name) for k in operator_kinds)
            + ") see "
            + ", ".join(notifications.variable_names(operator_kinds[0].name))
            + ". README lists what each means."
        )

    def _template(self, name: str) -> str:
        value = self.cleaned_data.get(name) or ""
        try:
            Template(value)
        except TemplateSyntaxError as exc:
            raise forms.ValidationError(f"This is not a valid template: {exc}") from None
        return value

    def clean_subject(self) -> str:
        return self._template("subject")

    def clean_body(self) -> str:
        return self._template("body")


@admin.register(NotificationTemplate)
class NotificationTemplateAdmin(admin.ModelAdmin):
    """The wording of notification emails; a kind without a row is sent in its built-in words."""

    form = NotificationTemplateForm
    list_display = ["kind_label", "subject", "updated_at"]

    @admin.display(description="Kind", ordering="kind")
    def kind_label(self, obj: NotificationTemplate) -> str:
        return str(obj)


@admin.register(TicketNote)
class TicketNoteAdmin(ReadOnlyAdmin):
    """Notes the bridge adds to tickets (cancels, failed siblings, …); failed ones can be
    sent again."""

    list_display = ["id", "task", "kind", "status", "attempts", "state", "last_error", "created_at"]
    list_filter = ["status", "kind"]
    list_select_related = ["task__request"]
    search_fields = ["task__request__number", "task__ticket__ticket_number"]
    actions = ["send_again"]

    @admin.action(description="Send the selected failed notes again", permissions=["operate"])
    def send_again(self, request, queryset) -> None:
        _send_again(
            self,
            request,
            queryset,
            lambda note: services.note_retry(note=note, by=request.user),
            "note(s)",
        )


def _send_again(model_admin, request, queryset, service, noun: str) -> None:
    """Queue each selected item again through its service; say how many, and why others not."""
    queued = 0
    for item in queryset.order_by("id"):
        try:
            service(item)
            queued += 1
        except services.TransitionError as exc:
            model_admin.message_user(request, str(exc), messages.ERROR)
    if queued:
        model_admin.message_user(request, f"{queued} {noun} queued again.", messages.SUCCESS)


class NotToldFilter(admin.SimpleListFilter):
    """Failed deliveries whose client has not heard of a later status since (the overview's
    count links here)."""

    title = "client not told"
    parameter_name = "not_told"

    def lookups(self, request, model_admin):
        return [("yes", "Failed, no later status delivered")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status=CallbackDelivery.Status.FAILED).not_overtaken()
        return queryset


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(ReadOnlyAdmin):
    """Signed POSTs of request documents to API clients' callback URLs, each attempt
    recorded; pending and failed ones can be delivered again."""

    list_display = [
        "id",
        "request",
        "client",
        "request_status",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "delivered_at",
    ]
    list_filter = [NotToldFilter, "status", "client"]
    list_select_related = ["request", "client"]
    search_fields = ["request__number"]
    actions = ["redeliver"]

    @admin.action(description="Deliver the selected callbacks again", permissions=["operate"])
    def redeliver(self, request, queryset) -> None:
        _send_again(
            self,
            request,
            queryset,
            lambda delivery: services.delivery_redeliver(delivery=delivery, by=request.user),
            "callback(s)",
        )
