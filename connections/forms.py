"""Admin forms: the connection editor and the package import steps.

Documents are edited as pretty-printed JSON text and validated with `spec` before anything
is stored. Secrets are write-only: a ConnectionJSON is shown with "********" where its
secrets are, and a "********" that comes back keeps the stored secret.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.db import models
from django.forms.fields import InvalidJSONInput, JSONString

from . import spec
from .masking import mask_url_passwords
from .models import SECRET_PLACEHOLDER, Connection, merge_secrets, split_secrets
from .package_format import DOCUMENTS, Package, Variable
from .packages import validate_without_secrets
from .paths import loads_strict

# Form field → the document name spec puts at the start of each of its messages.
DOCUMENT_FIELDS = {keyword: label for label, keyword in DOCUMENTS.values()}


def pretty_json(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def masked_json_text(text: str) -> str:
    """A ConnectionJSON text with its secrets shown as "********", for re-display.

    Text that does not parse cannot be masked by key, so it is shown as typed.
    """
    try:
        document = loads_strict(text)
    except ValueError:
        return text
    return pretty_json(split_secrets(document)[0]) if isinstance(document, dict) else text


class JSONDocumentField(forms.CharField):
    """One JSON document in a monospace textarea; it cleans to a dict, parsed strictly."""

    def __init__(self, *, label: str, **kwargs: Any) -> None:
        attrs = {"class": "json-editor", "rows": 18, "spellcheck": "false", "autocomplete": "off"}
        super().__init__(label=label, widget=forms.Textarea(attrs=attrs), strip=False, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return pretty_json(value) if isinstance(value, dict | list) else value

    # A CharField in the browser, a dict once cleaned: converting is what to_python is for,
    # though the stubs hold a CharField subclass to CharField's `str | None`.
    def to_python(self, value: Any) -> dict:  # type: ignore[override]
        text = super().to_python(value)
        assert text is not None  # empty_value is "", so CharField never gives None here
        if not text.strip():
            return {}
        try:
            document = loads_strict(text)
        except ValueError as exc:
            raise forms.ValidationError(f"{self.label}: {exc}") from exc
        if not isinstance(document, dict):
            raise forms.ValidationError(f"{self.label}: must be a JSON object")
        return document


class StrictJSONField(forms.JSONField):
    """Django's JSON form field, decoding as strictly as the documents do (loads_strict).

    Django's own decodes with json.loads: it keeps the last of two equal keys, and JSON
    nested deeply enough makes it raise RecursionError, a 500 instead of a message. The
    admin uses this one for every JSON column it edits (formfield_overrides).
    """

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            converted = loads_strict(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None
        # As Django's own: a decoded string is marked, so it is never decoded twice.
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return loads_strict(data)
        except ValueError:
            return InvalidJSONInput(data)


# For a ModelAdmin that edits JSON columns: `formfield_overrides = STRICT_JSON`.
STRICT_JSON: dict[type[models.Field], dict[str, Any]] = {
    models.JSONField: {"form_class": StrictJSONField}
}


class ConnectionForm(forms.ModelForm):
    """Edit a connection; its documents are validated together before anything is saved."""

    connection_json = JSONDocumentField(
        label="ConnectionJSON",
        help_text="Secrets show as ********. Leave them so to keep the stored value; type a new value to replace it.",
    )
    create_ticket_json = JSONDocumentField(label="CreateTicketJSON")
    ticket_status_json = JSONDocumentField(label="TicketStatusJSON")
    config_json = JSONDocumentField(
        label="ConfigJSON", required=False, help_text="Optional: timeouts and HTTP retries."
    )
    webhook_secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Shared secret of the OTRS webhook. Leave blank to keep the stored one.",
    )

    class Meta:
        model = Connection
        fields = [
            "name",
            "description",
            "enabled",
            "connection_json",
            "create_ticket_json",
            "ticket_status_json",
            "config_json",
            "webhook_secret",
            "poll_minutes",
            "full_sweep_minutes",
            "provision_minutes",
            "batch_size",
            "max_status_check_days",
            "reopen_watch_days",
            "completion_email_subject",
            "completion_email_template",
        ]

    def clean(self) -> dict:
        super().clean()
        cleaned = self.cleaned_data
        documents = {name: cleaned.get(name) for name in DOCUMENT_FIELDS}
        if any(documents[name] is None for name in DOCUMENT_FIELDS if name != "config_json"):
            return cleaned  # a document did not parse; its field already says why
        # Validated with "********" where the secrets are: a secret's value never decides
        # whether a document is valid, and an error message can then never quote one.
        try:
            validate_without_secrets(**documents)
        except spec.SpecError as exc:
            for error in exc.errors:
                self.add_error(_field_for(error), error)
        return cleaned

    def full_clean(self) -> None:
        super().full_clean()
        if self.is_bound and self.errors:
            self._mask_url_passwords()
            self._mask_typed_secrets()

    def _mask_url_passwords(self) -> None:
        """A refused `user:password@` URL goes back with the password masked (spec refuses it)."""
        # Bound data is a QueryDict or a dict, both copy(); the stubs say only Mapping.
        data = self.data.copy()  # type: ignore[attr-defined]
        for field in DOCUMENT_FIELDS:
            name = self.add_prefix(field)
            if isinstance(data.get(name), str):
                data[name] = mask_url_passwords(data[name])
        self.data = data

    def _mask_typed_secrets(self) -> None:
        """The form goes back to the browser: never with a secret in it.

        A secret typed into ConnectionJSON is replaced by "********" (which would keep the
        stored value), so the admin is told to type it again.
        """
        name = self.add_prefix("connection_json")
        text = self.data.get(name, "")
        try:
            typed = split_secrets(loads_strict(text))[1]
        except (ValueError, AttributeError):  # not JSON, or not an object: nothing to mask by key
            return
        if any(value != SECRET_PLACEHOLDER for value in typed.values()):
            # Bound data is a QueryDict or a dict, both copy(); the stubs say only Mapping.
            data = self.data.copy()  # type: ignore[attr-defined]
            data[name] = masked_json_text(text)
            self.data = data
            self.add_error(
                "connection_json",
                "ConnectionJSON: the connection was not saved, so the new secrets typed here were "
                "not kept; type them again where ******** stands.",
            )

    def save(self, commit: bool = True) -> Connection:
        connection = super().save(commit=False)
        connection.set_connection_json(self.cleaned_data["connection_json"])
        if self.cleaned_data.get("webhook_secret"):
            connection.set_webhook_secret(self.cleaned_data["webhook_secret"])
        if commit:
            connection.save()
        return connection


def _field_for(error: str) -> str | None:
    """The document field a spec message is about (it starts with the document's name)."""
    for name, label in DOCUMENT_FIELDS.items():
        if error.startswith(f"{label}:"):
            return name
    return None


class PackageUploadForm(forms.Form):
    package = forms.FileField(
        help_text="Our package (.json) or a Saviynt transport export (.zip with Connection_*.json)."
    )


class PackageConfigureForm(forms.Form):
    """The variables a package needs, and its documents that the importer may correct.

    `draft` holds what was entered in an earlier step ({"values", "overrides"}): it fills
    the fields again, except secrets. A secret variable is a password input that is never
    filled back in, and left blank keeps the earlier value; a ConnectionJSON comes back with
    "********" for its secrets, and a "********" left in it keeps the earlier secret.
    """

    def __init__(self, package: Package, *args: Any, draft: dict | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.package = package
        self.draft = draft or {"values": {}, "overrides": {}}
        for variable in package.variables.values():
            self.fields[_variable_field(variable.name)] = self._variable_field(variable)
        for index, connection in enumerate(package.connections):
            edited = self.draft["overrides"].get(connection.name, {})
            for key, text in connection.editable_documents().items():
                field = self._document_field(
                    connection.name, key, masked_json_text(edited.get(key, text))
                )
                self.fields[_document_field(index, key)] = field

    def _variable_field(self, variable: Variable) -> forms.CharField:
        kept = self.draft["values"].get(variable.name)
        hints = [variable.description.rstrip(".")] if variable.description else []
        if variable.default is not None:
            hints.append(f"Default: {variable.default or '(empty)'}")
        if variable.secret:
            widget: forms.Widget = forms.PasswordInput(
                render_value=False, attrs={"autocomplete": "new-password"}
            )
            if kept:
                hints.append("Leave blank to keep the value entered before")
            kept = None
        else:
            widget = forms.TextInput(attrs={"size": 80})
        required = variable.default is None and variable.name not in self.draft["values"]
        return forms.CharField(
            label=f"@{variable.name}@",
            required=required,
            strip=False,
            initial=kept,
            widget=widget,
            help_text="".join(f"{hint}. " for hint in hints).strip(),
        )

    def _document_field(self, connection: str, key: str, text: str) -> forms.CharField:
        help_text = ""
        if key == "connectionJSON":
            help_text = (
                "A Saviynt export carries the ConnectionJSON encrypted for its own tenant, so it cannot be "
                "read here: paste yours. Secrets show as ******** after a preview; leave them so to keep them."
            )
        attrs = {"class": "json-editor", "rows": 16, "spellcheck": "false", "autocomplete": "off"}
        return forms.CharField(
            label=f"{connection}: {DOCUMENTS[key][0]}",
            required=False,
            strip=False,
            initial=text,
            widget=forms.Textarea(attrs=attrs),
            help_text=help_text,
        )

    def values(self) -> dict[str, str]:
        """Variable values; a blank secret keeps the value from the earlier step."""
        values = {}
        for name, variable in self.package.variables.items():
            value = self.cleaned_data.get(_variable_field(name), "")
            if not value and variable.secret:
                value = self.draft["values"].get(name, "")
            if value:
                values[name] = value
        return values

    def overrides(self) -> dict[str, dict[str, str]]:
        """The documents as the importer left them, by connection name."""
        overrides: dict[str, dict[str, str]] = {}
        for index, connection in enumerate(self.package.connections):
            earlier = self.draft["overrides"].get(connection.name, {})
            for key in connection.editable_documents():
                text = self.cleaned_data.get(_document_field(index, key), "")
                if key == "connectionJSON" and key in earlier:
                    text = _keep_secrets(text, earlier[key])
                if text.strip():
                    overrides.setdefault(connection.name, {})[key] = text
        return overrides

    def draft_data(self) -> dict:
        return {"values": self.values(), "overrides": self.overrides()}

    def add_package_errors(self, errors: list[str]) -> None:
        """Show each import problem on the field it is about, or above the form."""
        for error in errors:
            self.add_error(self._field_for(error), error)

    def _field_for(self, error: str) -> str | None:
        for name in self.package.variables:
            if error.startswith(f"variable {name}:"):
                return _variable_field(name)
        for index, connection in enumerate(self.package.connections):
            for key in connection.editable_documents():
                if error.startswith(f"{connection.name}: {DOCUMENTS[key][0]}:"):
                    return _document_field(index, key)
        return None

    def mask_connection_json(self) -> None:
        """Before the form is shown again: "********" where a pasted ConnectionJSON has secrets.

        Text that does not parse cannot be masked by key and is shown as typed.
        """
        # Bound data is a QueryDict or a dict, both copy(); the stubs say only Mapping.
        data = self.data.copy()  # type: ignore[attr-defined]
        for index in range(len(self.package.connections)):
            name = self.add_prefix(_document_field(index, "connectionJSON"))
            if name in data:
                data[name] = masked_json_text(data[name])
        self.data = data

    def document_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("doc_")]

    def variable_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("var_")]


def _keep_secrets(text: str, earlier: str) -> str:
    """A ConnectionJSON whose "********" values take the secrets of the earlier text."""
    try:
        document, previous = loads_strict(text), loads_strict(earlier)
    except ValueError:
        return text
    if not isinstance(document, dict) or not isinstance(previous, dict):
        return text
    return pretty_json(merge_secrets(document, split_secrets(previous)[1]))


def _variable_field(name: str) -> str:
    return f"var_{name}"


def _document_field(index: int, key: str) -> str:
    return f"doc_{index}_{key}"
