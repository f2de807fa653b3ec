"""What the API accepts: the body models, how a body is read, and how a wrong one is answered.

The pydantic models below check the types and sizes of what upstream sends; what it means
(does the endpoint exist, does the person have the account) is judged by tickets.services.
tickets/openapi.py publishes the models' JSON schemas as `components.schemas`, and the sizes
come from tickets/limits.py, so the document, the API and the console cannot disagree.

Errors share one shape, `{"error": <code>, "detail": <sentence>, "fields": {<path>: [...]}}`,
raised as ApiError and rendered by tickets.api's `api_view`. Pydantic's errors are put into
that shape in our own words (`field_errors`): upstream scripts match these messages.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Self

from django.http import HttpRequest, JsonResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from connections.paths import loads_strict
from connections.problems import Problems

from . import limits, validators
from .models import AccessRequest, Operation, parse_id

# Far above any real request (a few hundred bytes), far below what could hurt a worker.
MAX_BODY_BYTES = 64 * 1024
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 100


class ApiError(Exception):
    """An answer other than success: the status, a stable code, a sentence, field errors."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        fields: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.fields = fields or {}
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        body = {"error": self.error, "detail": self.detail, "fields": self.fields}
        answer = JsonResponse(body, status=self.status)
        for name, value in self.headers.items():
            answer[name] = value
        return answer


def invalid(fields: dict[str, list[str]]) -> ApiError:
    """A 422 naming every wrong field."""
    return ApiError(
        422, "invalid", "The request is not valid; `fields` says what is wrong.", fields=fields
    )


# --- reading bodies ---------------------------------------------------------------------------


def _content_length(request: HttpRequest) -> int:
    raw = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "The Content-Length header is not a number.") from None
    if length < 0:
        raise ApiError(400, "bad_request", "The Content-Length header is negative.")
    return length


def read_body(request: HttpRequest, *, limit: int) -> bytes:
    """The raw body, refused with 413 before reading when it is larger than `limit`."""
    length = _content_length(request)
    if length > limit:
        raise ApiError(
            413,
            "body_too_large",
            f"The body has {length} bytes; the limit is {limit} bytes.",
        )
    return request.read(length) if length else b""


def parse_json_object(raw: bytes) -> dict:
    """Decode a JSON object, or raise a 400 that says what is wrong with it.

    Decoded as strictly as a package (connections.paths.loads_strict): a duplicate key is
    refused, not won by its last value, and the depth is bounded. A NUL is let through
    here because the body models refuse it naming the field it is in.
    """
    try:
        data = loads_strict(raw.decode("utf-8-sig"), allow_nul=True)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "The body is not UTF-8 text.") from None
    except ValueError as exc:
        reason = str(exc)
        detail = reason if reason.startswith("not valid JSON") else f"not valid JSON: {reason}"
        raise ApiError(400, "malformed_json", f"The body is {detail}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "The body must be a JSON object.")
    return data


def read_json(request: HttpRequest, *, optional: bool = False) -> dict:
    """The body as a JSON object. With `optional`, an empty body is `{}`."""
    raw = read_body(request, limit=MAX_BODY_BYTES)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "malformed_json", "The body is empty; send a JSON object.")
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the body as JSON with `Content-Type: application/json`.",
        )
    return parse_json_object(raw)


# --- pydantic's errors in our words -----------------------------------------------------------

# By pydantic error type; `{…}` is filled from the error's context. Lone surrogates are
# refused by pydantic itself (string_unicode) and NUL by _no_nul, because PostgreSQL would
# refuse both later, as a 500.
MESSAGES = {
    "missing": "is required.",
    "string_type": "must be a string.",
    "string_too_short": "is required.",  # the only minimum is 1: an empty required text
    "string_too_long": "is longer than {max_length} characters.",
    "string_unicode": "is not valid Unicode text.",
    "list_type": "must be a list of strings.",
    "too_long": "lists more than {max_length} {field}.",
}


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The body model that the location `loc` inside `model` is an instance of."""
    for part in loc:
        found = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = found.annotation if found else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _path(loc: tuple) -> str:
    """The path our errors name: `("entitlements", 1)` → "entitlements[1]",
    `("beneficiary", "email")` → "beneficiary.email"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _message(model: type[Body], error: ErrorDetails) -> str:
    loc = tuple(error["loc"])
    path = _path(loc)
    if path in model.messages:
        return model.messages[path]
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        if owner is not None:
            expected = ", ".join(owner.model_fields)
            return f"is not a known {model.noun}; expected {expected}."
    if error.get("input", "") is None and loc and isinstance(loc[-1], str):
        return "is required."  # null for a field that must have a value
    if kind in MESSAGES:
        return MESSAGES[kind].format(**error.get("ctx", {}), field=loc[-1] if loc else "")
    return error["msg"]


def field_errors(model: type[Body], exc: ValidationError) -> dict[str, list[str]]:
    """Pydantic's errors as the `fields` of our error shape: path → messages."""
    problems = Problems()
    for error in exc.errors():
        problems.add(_path(tuple(error["loc"])), _message(model, error))
    return problems.as_fields()


class Body(BaseModel):
    """The base of the body models: strict types (a number is not a string), no unknown keys,
    and parse() answers a wrong body with a 422 naming every wrong field at once."""

    model_config = ConfigDict(strict=True, extra="forbid")
    noun: ClassVar[str] = "field"
    # Messages for a whole field, whatever is wrong with it; by path.
    messages: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls, data: object, **context: Any) -> Self:
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as exc:
            raise invalid(field_errors(cls, exc)) from None


# --- the field types --------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul", "must not contain NUL characters.")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty.")
    return value


def _one_of(allowed: list[str]):
    def check(value: str) -> str:
        if value not in allowed:
            raise PydanticCustomError(
                "choice", "must be one of {allowed}.", {"allowed": ", ".join(allowed)}
            )
        return value

    return check


def _refusing(problem: Callable[[str], str]) -> AfterValidator:
    """A check of tickets.validators as a pydantic validator ("" passes: no value)."""

    def check(value: str) -> str:
        found = problem(value) if value else ""
        if found:
            raise PydanticCustomError("invalid", found)
        return value

    return AfterValidator(check)


NoNul = AfterValidator(_no_nul)
Username = Annotated[
    str,
    Field(
        min_length=1,
        max_length=limits.USERNAME,
        json_schema_extra={"pattern": validators.USERNAME_PATTERN},
    ),
    NoNul,
    _refusing(validators.username_problem),
]
PersonName = Annotated[str, Field(max_length=limits.PERSON_NAME), NoNul]
Email = Annotated[str, Field(max_length=limits.EMAIL), NoNul, _refusing(validators.email_problem)]
EndpointName = Annotated[str, Field(min_length=1, max_length=limits.ENDPOINT_NAME), NoNul]
AccountName = Annotated[str, Field(max_length=limits.ACCOUNT_NAME), NoNul]
Entitlement = Annotated[str, Field(max_length=limits.ENTITLEMENT), NoNul]
Justification = Annotated[str, Field(max_length=limits.JUSTIFICATION), NoNul]
UpstreamApprover = Annotated[str, Field(max_length=limits.UPSTREAM_APPROVER), NoNul]
CancelReason = Annotated[str, Field(max_length=limits.CANCEL_REASON), NoNul]
OperationEnum = WithJsonSchema({"type": "string", "enum": list(Operation.values)})
# The submit body's operation is checked as text only: tickets.services refuses an unknown
# one together with the other rules of the request, so one answer names them all.
OperationText = Annotated[
    str, Field(min_length=1, max_length=limits.OPERATION), NoNul, OperationEnum
]
OperationChoice = Annotated[str, AfterValidator(_one_of(list(Operation.values))), OperationEnum]
StatusChoice = Annotated[
    str,
    AfterValidator(_one_of(list(AccessRequest.Status.values))),
    WithJsonSchema({"type": "string", "enum": list(AccessRequest.Status.values)}),
]
IdempotencyKey = Annotated[
    str,
    Field(max_length=limits.IDEMPOTENCY_KEY, json_schema_extra={"minLength": 1}),
    NoNul,
    AfterValidator(_not_blank),
]


# --- the bodies -------------------------------------------------------------------------------


class Beneficiary(Body):
    """The person whose access changes. Created on first use; the names and e-mail address
    are taken only then."""

    username: Username
    first_name: PersonName | None = None
    last_name: PersonName | None = None
    email: Email | None = Field(None, description="An e-mail address.")


class SubmitRequest(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "beneficiary": {
                    "username": "ada",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "email": "ada@example.com",
                },
                "endpoint": "crm",
                "operation": "create_account",
                "account_name": "ada",
                "entitlements": [],
                "justification": "New hire in the analytics team.",
            }
        }
    )
    messages: ClassVar[dict[str, str]] = {
        "beneficiary": "is required, as an object with a username."
    }

    beneficiary: Beneficiary
    endpoint: Annotated[EndpointName, Field(description="The name of an endpoint.")]
    operation: OperationText
    account_name: AccountName | None = Field(
        None, description="Defaults to the beneficiary's username."
    )
    entitlements: (
        Annotated[list[Entitlement], Field(max_length=limits.ENTITLEMENTS_PER_REQUEST)] | None
    ) = Field(None, description="Required for add_access and remove_access: one task each.")
    justification: Justification | None = None
    upstream_approver: UpstreamApprover | None = Field(
        None, description="Who approved upstream; accepted only from a trusted client."
    )

    @field_validator("upstream_approver")
    @classmethod
    def _only_from_a_trusted_client(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and not (info.context or {}).get("trusted"):
            raise PydanticCustomError(
                "untrusted",
                "is only accepted from a trusted client; this client's requests wait for "
                "approval in the bridge.",
            )
        return value

    def service_arguments(self) -> dict:
        """The keyword arguments of services.request_submit ("" for what was left out)."""
        person = self.beneficiary
        return {
            "beneficiary": {
                "username": person.username,
                "first_name": person.first_name or "",
                "last_name": person.last_name or "",
                "email": person.email or "",
            },
            "endpoint": self.endpoint,
            "operation": self.operation,
            "account_name": self.account_name or "",
            "entitlements": list(self.entitlements or []),
            "justification": self.justification or "",
            "upstream_approver": self.upstream_approver or "",
        }

    def same_as(self, existing: AccessRequest) -> bool:
        """Whether an idempotent retry asks for what the first call recorded. Compared the
        way request_submit stores the values (stripped; account name defaults to username)."""
        username = self.beneficiary.username.strip()
        wanted = [e.strip() for e in self.entitlements or [] if e.strip()]
        return (
            existing.beneficiary.username == username
            and existing.endpoint.name == self.endpoint
            and existing.operation == self.operation
            and existing.account_name == (self.account_name or username).strip()
            and list(existing.entitlements) == wanted
            and existing.justification == (self.justification or "")
        )


class CancelRequest(Body):
    reason: CancelReason | None = None


class CallbackRegistration(Body):
    """Where the bridge POSTs this client's request documents when their status changes."""

    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=limits.CALLBACK_URL,
            description="An http(s) URL without user:password@, not in a refused network.",
        ),
        NoNul,
    ]


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"before:{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The id a cursor points below, or None when this API did not issue it."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    prefix, _, number = text.partition(":")
    return parse_id(number) if prefix == "before" else None


def _issued_cursor(value: str) -> str:
    if decode_cursor(value) is None:
        raise PydanticCustomError(
            "cursor", "is not a cursor from this API; use `next` of a previous page."
        )
    return value


def _page_size(value: object) -> object:
    """Query parameters are text: only plain digits in range, not what int() would take."""
    text = value if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 4 and 1 <= int(text) <= PAGE_SIZE_MAX:
        return int(text)
    raise PydanticCustomError(
        "page_size", "must be a whole number from 1 to {maximum}.", {"maximum": PAGE_SIZE_MAX}
    )


class ListQuery(Body):
    """The list's query parameters. An unknown or empty parameter is refused rather than
    ignored: a misspelt filter would otherwise list everything."""

    noun: ClassVar[str] = "parameter"

    status: StatusChoice | None = Field(None, description="Filter.")
    endpoint: EndpointName | None = Field(None, description="Filter by endpoint name.")
    operation: OperationChoice | None = Field(None, description="Filter.")
    cursor: Annotated[str, Field(min_length=1), AfterValidator(_issued_cursor)] | None = Field(
        None, description="`next` of the previous page."
    )
    limit: Annotated[int, Field(ge=1, le=PAGE_SIZE_MAX), BeforeValidator(_page_size)] = Field(
        PAGE_SIZE_DEFAULT, description="Page."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        if value == "":
            raise PydanticCustomError(
                "empty", "must not be empty; leave the parameter out instead."
            )
        return value

    @classmethod
    def of(cls, params) -> ListQuery:
        """From a QueryDict: the last value of each parameter, as Django's get() gives."""
        return cls.parse({name: params.get(name) for name in params})

    @property
    def before(self) -> int | None:
        return decode_cursor(self.cursor) if self.cursor else None


class OtrsEvent(BaseModel):
    """The invoker's Event section: which ticket the event is about."""

    model_config = ConfigDict(extra="allow")

    TicketID: int | str | None = None


class OtrsInvokerEvent(BaseModel):
    """What Znuny's Ticket::Generic invoker sends. Only the TicketID is read; the state in
    it is never trusted."""

    # Documentation only: the webhook reads any body leniently (tickets.api.ticket_id_of),
    # because OTRS retries a refusal forever and a bad body would not get better.
    model_config = ConfigDict(extra="allow")

    Event: OtrsEvent | None = None
    Ticket: dict | None = None


IDEMPOTENCY_KEY = TypeAdapter(IdempotencyKey, config=ConfigDict(strict=True))


def idempotency_key(request: HttpRequest) -> str:
    """The Idempotency-Key header ("" when absent), or a 422 when it cannot be stored."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return ""
    try:
        return IDEMPOTENCY_KEY.validate_python(key)
    except ValidationError as exc:
        raise invalid({"Idempotency-Key": [_message(Body, exc.errors()[0])]}) from None
