"""Setup screens: connections (documents, test, preview, packages), applications and the call log.

The admin is where an identity admin sets the bridge up; the console (`/`) is where people
work. Each links to the other. History (ApiCall) and tokens are read-only here: nobody
edits them by hand, and a token is never shown.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypedDict

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db.models import Min
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from . import crypto, services
from .errors import OTRSError
from .forms import (
    STRICT_JSON,
    ConnectionForm,
    PackageConfigureForm,
    PackageUploadForm,
    pretty_json,
)
from .masking import mask
from .models import ApiCall, Connection, ConnectionToken, Endpoint, SecuritySystem
from .package_format import PackageError
from .packages import apply_import, check_size, export_package, load_package, plan_import
from .paths import loads_strict
from .selectors import mask_calls

if TYPE_CHECKING:
    from datetime import datetime

    from django_stubs_ext import WithAnnotations

    class _TokenExpires(TypedDict):
        """What ConnectionAdmin.get_queryset annotates each connection with."""

        token_expires: datetime | None


# The package being imported, between the upload and the apply step. Encrypted: it may hold
# the secrets the importer typed.
IMPORT_SESSION_KEY = "connections_package_import"
IMPORT_PERMISSIONS = [
    f"connections.{action}_{model}"
    for action in ("add", "change")
    for model in ("connection", "securitysystem", "endpoint")
]


def badge(ok: bool | None, *, yes: str = "OK", no: str = "Failed", unknown: str = "Never") -> str:
    """A coloured label; the word carries the meaning, the colour only repeats it."""
    # Classes, not a style attribute: the Content-Security-Policy refuses inline styles
    # (static/css/admin.css has the colours).
    label, tone = {True: (yes, "ok"), False: (no, "bad"), None: (unknown, "none")}[ok]
    return format_html('<span class="admin-badge admin-badge-{}">{}</span>', tone, label)


# Form fields that take a secret and never show it: what a view-only page shows instead.
WRITE_ONLY_FIELDS = {"webhook_secret": "webhook_secret_state"}


def _view_only(field: str | Sequence[str]) -> str | Sequence[str]:
    """A fieldset entry (a field, or fields on one line) as a view-only page shows it."""
    if isinstance(field, str):
        return WRITE_ONLY_FIELDS.get(field, field)
    return [WRITE_ONLY_FIELDS.get(f, f) for f in field]


def _json_download(document: dict, filename: str) -> HttpResponse:
    response = HttpResponse(pretty_json(document) + "\n", content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    """Connections: validated JSON editors, write-only secrets, test, preview and packages."""

    form = ConnectionForm
    list_display = [
        "name",
        "enabled",
        "test_verdict",
        "last_test_at",
        "token_expiry",
        "console_link",
    ]
    list_filter = ["enabled", "last_test_ok"]
    search_fields = ["name", "description"]
    # Stored texts that may echo a secret (an older row, a careless message) are shown
    # through display methods that mask them, never as the raw fields.
    readonly_fields = [
        "last_test_at",
        "last_test_ok",
        "last_test_text",
        "last_error_text",
        "last_error_at",
    ]
    actions = ["export_selected"]
    change_list_template = "admin/connections/connection/change_list.html"
    change_form_template = "admin/connections/connection/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled"]}),
        (
            "Documents",
            {
                "fields": [
                    "connection_json",
                    "create_ticket_json",
                    "ticket_status_json",
                    "config_json",
                ]
            },
        ),
        ("Webhook", {"fields": ["webhook_secret"]}),
        (
            "Schedule",
            {
                "fields": [
                    "poll_minutes",
                    "full_sweep_minutes",
                    "provision_minutes",
                    "batch_size",
                    "max_status_check_days",
                    "reopen_watch_days",
                ]
            },
        ),
        (
            "Completion e-mail",
            {"fields": ["completion_email_subject", "completion_email_template"]},
        ),
        ("Last test", {"fields": list(readonly_fields)}),
    ]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(token_expires=Min("tokens__expires_at"))

    def get_fieldsets(self, request: HttpRequest, obj: Connection | None = None):
        """For someone who may only view, a write-only field shows whether it is set.

        The admin renders every field of a view-only page read-only, from the model's
        attribute of the same name: for `webhook_secret` that is the decrypted secret.
        """
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        return [
            (name, {**options, "fields": [_view_only(f) for f in options["fields"]]})
            for name, options in fieldsets
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Connection | None = None):
        return [*super().get_readonly_fields(request, obj), *WRITE_ONLY_FIELDS.values()]

    @admin.display(description="Webhook secret")
    def webhook_secret_state(self, obj: Connection) -> str:
        return "Set (never shown)" if obj.webhook_secret_encrypted else "Not set"

    @admin.display(description="Last test message")
    def last_test_text(self, obj: Connection) -> str:
        return mask(obj.last_test_message, obj.secret_values())

    @admin.display(description="Last error")
    def last_error_text(self, obj: Connection) -> str:
        return mask(obj.last_error, obj.secret_values())

    @admin.display(description="Last test", ordering="last_test_ok")
    def test_verdict(self, obj: Connection) -> str:
        return badge(obj.last_test_ok)

    @admin.display(description="Token expires", ordering="token_expires")
    def token_expiry(self, obj: WithAnnotations[Connection, _TokenExpires]):
        return obj.token_expires or "no token yet"

    @admin.display(description="Console")
    def console_link(self, obj: Connection) -> str:
        return format_html('<a href="{}">View in console</a>', obj.get_absolute_url())

    @admin.action(description="Export selected connections as a package (no secrets)")
    def export_selected(self, request: HttpRequest, queryset) -> HttpResponse:
        names = sorted(queryset.values_list("name", flat=True))
        return _json_download(export_package(names), f"{'-'.join(names)}.json")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_upload_view), name="connections_connection_import"),
            path(
                "import/configure/",
                view(self.import_configure_view),
                name="connections_connection_import_configure",
            ),
            path(
                "import/apply/",
                view(self.import_apply_view),
                name="connections_connection_import_apply",
            ),
            path("<int:pk>/test/", view(self.test_view), name="connections_connection_test"),
            path(
                "<int:pk>/preview/", view(self.preview_view), name="connections_connection_preview"
            ),
            path("<int:pk>/export/", view(self.export_view), name="connections_connection_export"),
            *super().get_urls(),
        ]

    def _page(self, request: HttpRequest, template: str, title: str, **context) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            **context,
        }
        return TemplateResponse(request, f"admin/connections/connection/{template}", context)

    def _connection(self, request: HttpRequest, pk: int, *, change: bool) -> Connection:
        connection = get_object_or_404(Connection, pk=pk)
        allowed = (
            self.has_change_permission(request, connection)
            if change
            else self.has_view_permission(request, connection)
        )
        if not allowed:
            raise PermissionDenied
        return connection

    # --- test, preview, export -------------------------------------------------------------

    @method_decorator(require_POST)
    def test_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        """Run the same check as the console button and show the verdict and masked exchanges."""
        connection = self._connection(request, pk, change=True)
        result = services.connection_check(connection=connection)
        return self._page(
            request,
            "test_result.html",
            f"Test connection {connection.name}",
            original=connection,
            result=result,
        )

    def preview_view(self, request: HttpRequest, pk: int) -> TemplateResponse:
        """Render CreateTicketJSON for the sample context or a real task; nothing is sent."""
        connection = self._connection(request, pk, change=False)
        context, source = _preview_context(connection, request.GET.get("task", "").strip())
        problem = ""
        try:
            requests = services.connection_preview(connection=connection, context=context)
        except OTRSError as exc:  # e.g. a ${variable} this context has no value for
            requests, problem = [], exc.message
        return self._page(
            request,
            "preview.html",
            f"Preview ticket for {connection.name}",
            original=connection,
            source=source,
            problem=problem,
            task=request.GET.get("task", ""),
            context_json=pretty_json(context),
            requests=[{**item, "body": _readable(item.get("body") or "")} for item in requests],
        )

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        connection = self._connection(request, pk, change=False)
        return _json_download(export_package([connection.name]), f"{connection.name}.json")

    # --- package import: upload → configure (variables, documents) → preview → apply ---------

    def _check_import_permission(self, request: HttpRequest) -> None:
        if not request.user.has_perms(IMPORT_PERMISSIONS):
            raise PermissionDenied

    def import_upload_view(self, request: HttpRequest) -> HttpResponse:
        self._check_import_permission(request)
        form = PackageUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["package"]
            try:
                check_size(upload.size, upload.name)
                data = upload.read()
                load_package(data, upload.name)
            except PackageError as exc:
                for error in exc.errors:
                    form.add_error("package", error)
            else:
                _store_import(request, filename=upload.name, data=data, draft=None)
                return redirect("admin:connections_connection_import_configure")
        return self._page(request, "import_upload.html", "Import a connection package", form=form)

    def import_configure_view(self, request: HttpRequest) -> HttpResponse:
        """Ask for variables and documents; on POST, plan the import and show the preview.

        What was entered is kept (encrypted, in the session) even when it is not valid yet,
        so a "********" shown in place of a pasted secret still stands for it next time.
        """
        self._check_import_permission(request)
        stored = _stored_import(request)
        if stored is None:
            messages.warning(request, "Upload a package first.")
            return redirect("admin:connections_connection_import")
        package = load_package(stored["data"], stored["filename"])
        form = PackageConfigureForm(package, request.POST or None, draft=stored["draft"])
        if request.method == "POST":
            valid = form.is_valid()
            _store_import(
                request, filename=stored["filename"], data=stored["data"], draft=form.draft_data()
            )
            if valid:
                try:
                    plan = plan_import(package, form.values(), overrides=form.overrides())
                except PackageError as exc:
                    form.add_package_errors(exc.errors)
                else:
                    title = f"Preview the import of {package.name}"
                    return self._page(
                        request, "import_preview.html", title, package=package, plan=plan
                    )
            form.mask_connection_json()
        return self._page(
            request, "import_configure.html", f"Import {package.name}", package=package, form=form
        )

    @method_decorator(require_POST)
    def import_apply_view(self, request: HttpRequest) -> HttpResponse:
        """Plan again from what was stored (the database may have moved) and apply atomically."""
        self._check_import_permission(request)
        stored = _stored_import(request)
        if stored is None or stored["draft"] is None:
            messages.warning(request, "Nothing to apply: upload a package and preview it first.")
            return redirect("admin:connections_connection_import")
        package = load_package(stored["data"], stored["filename"])
        draft = stored["draft"]
        try:
            result = apply_import(
                plan_import(package, draft["values"], overrides=draft["overrides"])
            )
        except PackageError as exc:
            for error in exc.errors:
                messages.error(request, error)
            return redirect("admin:connections_connection_import_configure")
        del request.session[IMPORT_SESSION_KEY]
        messages.success(request, f"Imported {package.name}: {'; '.join(result.lines())}.")
        return redirect("admin:connections_connection_changelist")


def _readable(body: str) -> str:
    """A JSON body indented for reading; anything else as it is."""
    try:
        return pretty_json(loads_strict(body, allow_nul=True))
    except ValueError:  # not JSON, or too deep to show as JSON
        return body


def _store_import(request: HttpRequest, *, filename: str, data: bytes, draft: dict | None) -> None:
    payload = {"filename": filename, "data": base64.b64encode(data).decode(), "draft": draft}
    request.session[IMPORT_SESSION_KEY] = crypto.encrypt(json.dumps(payload))


def _stored_import(request: HttpRequest) -> dict | None:
    token = request.session.get(IMPORT_SESSION_KEY)
    if not token:
        return None
    payload = json.loads(crypto.decrypt(token))
    return {**payload, "data": base64.b64decode(payload["data"])}


def _preview_context(connection: Connection, task: str) -> tuple[dict, str]:
    """The context of a real task through the OTRSBRIDGE_TASK_CONTEXT hook, else the sample.

    `connections` never imports `tickets`; the tickets app names its function in settings.
    The second value tells the page which context it shows, and why.
    """
    sample = services.sample_context(connection)
    if not task:
        return sample, "the sample context"
    hook = getattr(settings, "OTRSBRIDGE_TASK_CONTEXT", "")
    if not hook:
        return (
            sample,
            f"the sample context: OTRSBRIDGE_TASK_CONTEXT is not set, so task {task} cannot be loaded",
        )
    try:
        task_context = import_string(hook)
    except ImportError:
        return sample, f"the sample context: {hook} (OTRSBRIDGE_TASK_CONTEXT) cannot be imported"
    try:
        return task_context(task), f"task {task}"
    except (ObjectDoesNotExist, LookupError, ValueError) as exc:
        return sample, f"the sample context: task {task} cannot be loaded ({exc})"


class EndpointInline(admin.TabularInline):
    model = Endpoint
    extra = 0
    fields = ["name", "display_name", "attributes", "entitlements", "allow_unknown_accounts"]
    formfield_overrides = STRICT_JSON
    show_change_link = True


@admin.register(SecuritySystem)
class SecuritySystemAdmin(admin.ModelAdmin):
    """Applications (security systems in Saviynt's terms) and the connection that opens
    their tickets."""

    list_display = [
        "name",
        "display_name",
        "service_desk_connection",
        "instant_provisioning",
        "provisioning_tries",
        "two_approvals",
    ]
    list_filter = ["instant_provisioning", "two_approvals", "service_desk_connection"]
    filter_horizontal = ["owners", "owner_groups"]
    list_select_related = ["service_desk_connection"]
    search_fields = ["name", "display_name"]
    inlines = [EndpointInline]


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    """Endpoints, where accounts live inside an application; their attributes (e.g. the OTRS
    queue) feed the ticket templates."""

    list_display = ["name", "display_name", "security_system", "allow_unknown_accounts"]
    list_filter = ["security_system", "allow_unknown_accounts"]
    list_select_related = ["security_system"]
    search_fields = ["name", "display_name"]
    formfield_overrides = STRICT_JSON


@admin.register(ApiCall)
class ApiCallAdmin(admin.ModelAdmin):
    """Read-only log of every HTTP call, secrets already masked when it was written."""

    list_display = [
        "created_at",
        "connection",
        "call_name",
        "method",
        "status_code",
        "outcome_badge",
        "duration_ms",
        "ref",
    ]
    # Filters that cost no query of their own: a date hierarchy's list of years and months
    # read every row (7 s at 5 million rows, see README "Measured").
    list_filter = ["outcome", "connection", "created_at"]
    list_select_related = ["connection"]
    search_fields = ["ref", "call_name", "url", "error"]
    # One count per page, of what the filters select; not a second one of every row.
    show_full_result_count = False

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        """The call with its texts masked again, as the console shows them: a row written
        by an older, careless client must not show a secret here either. The admin never
        saves a call, so the masked copy stays in memory."""
        call = super().get_object(request, object_id, from_field)
        if call is not None and call.connection is not None:
            mask_calls([call], call.connection.secret_values())
        return call

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, obj: ApiCall) -> str:
        return badge(
            obj.outcome == ApiCall.Outcome.OK,
            yes=obj.get_outcome_display(),
            no=obj.get_outcome_display(),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiCall | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiCall | None = None) -> bool:
        return False


@admin.register(ConnectionToken)
class ConnectionTokenAdmin(admin.ModelAdmin):
    """When each session was obtained and expires; the token itself is never shown."""

    list_display = fields = readonly_fields = (
        "connection",
        "auth_name",
        "obtained_at",
        "expires_at",
        "version",
    )
    list_select_related = ["connection"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: ConnectionToken | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ConnectionToken | None = None
    ) -> bool:
        return False
