"""Console forms: the submit-request form, the request-list filters, decision comments,
and the admin's Identity form (it follows the submit form's rules).

The forms only shape input. The rules (who may ask for what, which entitlements an
endpoint offers, what the person already has) live in services.request_submit, whose
RequestInvalid errors are put back on the matching fields so they show inline.
"""

from __future__ import annotations

from django import forms

from connections.models import Endpoint

from . import limits
from .models import AccessRequest, Identity, Operation, parse_id
from .validators import validate_email_address, validate_username

# RequestInvalid names fields the way the API does; these are the form's names for them.
SERVICE_FIELDS = {
    "beneficiary": "beneficiary",
    "beneficiary.username": "beneficiary",
    "beneficiary.email": "beneficiary_email",
    "endpoint": "endpoint",
    "operation": "operation",
    "account_name": "account_name",
    "entitlements": "entitlements",
    "justification": "justification",
}


def requestable_endpoints():
    """Endpoints that can take a request: those whose application has a connection."""
    return (
        Endpoint.objects.filter(security_system__service_desk_connection__isnull=False)
        .select_related("security_system")
        .order_by("name")
    )


def email_field(**kwargs) -> forms.CharField:
    """An email address field checked by tickets.validators (Django's EmailField would
    check it a second time, with a second message for the same mistake)."""
    return forms.CharField(
        max_length=limits.EMAIL,
        required=False,
        validators=[validate_email_address],
        widget=forms.EmailInput,
        **kwargs,
    )


class IdentityAdminForm(forms.ModelForm):
    """The admin's Identity form: the username and the address follow the same rules as
    everywhere else they enter."""

    username = forms.CharField(max_length=limits.USERNAME, validators=[validate_username])
    email = email_field()

    class Meta:
        model = Identity
        fields = "__all__"


class SubmitRequestForm(forms.Form):
    beneficiary = forms.CharField(
        label="For whom",
        max_length=limits.USERNAME,
        validators=[validate_username],
        help_text="Username of the person who gets the access. A new username adds that person.",
    )
    beneficiary_first_name = forms.CharField(
        label="First name", max_length=limits.PERSON_NAME, required=False
    )
    beneficiary_last_name = forms.CharField(
        label="Last name", max_length=limits.PERSON_NAME, required=False
    )
    beneficiary_email = email_field(label="Email")
    endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.none(),
        label="Endpoint",
        empty_label="Choose…",
        help_text="Where the account lives, inside an application.",
    )
    operation = forms.ChoiceField(choices=Operation.choices, initial=Operation.CREATE_ACCOUNT)
    account_name = forms.CharField(
        label="Account name",
        max_length=limits.ACCOUNT_NAME,
        required=False,
        help_text="Leave empty to use the username.",
    )
    entitlements = forms.MultipleChoiceField(
        choices=(), required=False, widget=forms.CheckboxSelectMultiple
    )
    justification = forms.CharField(
        max_length=limits.JUSTIFICATION,
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="Why the access is needed; approvers and the service desk read this.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].queryset = requestable_endpoints()
        self.fields["entitlements"].choices = [(e, e) for e in self.offered_entitlements()]

    def selected_endpoint(self) -> Endpoint | None:
        """The endpoint picked so far (bound data or initial), to offer its entitlements."""
        raw = self.data.get("endpoint") if self.is_bound else self.initial.get("endpoint")
        if isinstance(raw, Endpoint):
            return raw
        pk = parse_id(raw)
        return None if pk is None else requestable_endpoints().filter(pk=pk).first()

    def clean_entitlements(self) -> list[str]:
        chosen = self.cleaned_data["entitlements"]
        if len(chosen) > limits.ENTITLEMENTS_PER_REQUEST:
            raise forms.ValidationError(
                f"Choose at most {limits.ENTITLEMENTS_PER_REQUEST} entitlements; "
                "submit another request for the rest."
            )
        return chosen

    def offered_entitlements(self) -> list[str]:
        endpoint = self.selected_endpoint()
        return [str(e) for e in (endpoint.entitlements or [])] if endpoint else []

    def service_arguments(self) -> dict:
        """The keyword arguments of services.request_submit, from the cleaned data."""
        data = self.cleaned_data
        return {
            "beneficiary": {
                "username": data["beneficiary"],
                "first_name": data["beneficiary_first_name"],
                "last_name": data["beneficiary_last_name"],
                "email": data["beneficiary_email"],
            },
            "endpoint": data["endpoint"],
            "operation": data["operation"],
            "account_name": data["account_name"],
            "entitlements": data["entitlements"],
            "justification": data["justification"],
        }

    def add_service_errors(self, fields: dict[str, list[str]]) -> None:
        """Put RequestInvalid's messages on the fields they name (the rest above the form)."""
        for name, messages in fields.items():
            target = SERVICE_FIELDS.get(name)
            label = self.fields[target].label if target else name.replace("_", " ")
            for message in messages:
                text = message if target else f"{label}: {message}"
                self.add_error(target, text[:1].upper() + text[1:])


# The longest free text a list filter takes (a search, a connection name).
FILTER_TEXT = 100


def filter_text(params, name: str) -> str:
    """A free-text filter of a list page, cleaned like a form field; "" for a value no
    query can use (a NUL, which PostgreSQL refuses, or over FILTER_TEXT characters). A list
    ignores a wrong filter rather than answering an error, as RequestFilterForm does."""
    field = forms.CharField(required=False, max_length=FILTER_TEXT)
    try:
        return field.clean(params.get(name, ""))
    except forms.ValidationError:
        return ""


class RequestFilterForm(forms.Form):
    """The request list's filters. Every field is optional; wrong values are ignored."""

    q = forms.CharField(required=False, label="Search", max_length=FILTER_TEXT)
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *AccessRequest.Status.choices]
    )
    endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.order_by("name"),
        required=False,
        empty_label="Any endpoint",
        label="Endpoint",
    )
    operation = forms.ChoiceField(
        required=False, choices=[("", "Any operation"), *Operation.choices]
    )
    requester = forms.CharField(required=False, max_length=limits.USERNAME)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput({"type": "date"}))

    def filters(self) -> dict:
        """The valid filters only: a bad date should not empty the whole list."""
        self.is_valid()
        return {k: v for k, v in getattr(self, "cleaned_data", {}).items() if v}


class _ButtonForm(forms.Form):
    """The few fields a confirm button carries (a comment, a reason)."""

    def error_lines(self) -> list[str]:
        """Each error as "<label>: <message>", for a message above the page (the form is a
        button on the inbox and the request page, with no place for inline errors)."""
        return [
            f"{self.fields[name].label or name.capitalize()}: {message}"
            if name in self.fields
            else str(message)
            for name, errors in self.errors.items()
            for message in errors
        ]


class DecisionForm(_ButtonForm):
    comment = forms.CharField(
        required=False, max_length=limits.DECISION_COMMENT, widget=forms.Textarea({"rows": 2})
    )


def _one_line(value: str) -> None:
    if "\r" in value or "\n" in value:
        raise forms.ValidationError("Write it on one line (no line breaks).")


class CancelForm(_ButtonForm):
    """Why a request or a task is cancelled: optional, one line, put into the note that
    tells the OTRS ticket (a NUL is refused by the field itself)."""

    reason = forms.CharField(
        required=False,
        max_length=limits.CANCEL_REASON,
        validators=[_one_line],
        label="Reason",
        help_text="optional; it goes into the note to the OTRS ticket",
    )
