"""JSON API for upstream systems, and the OTRS webhook receiver.

Everything under /api/v1 answers JSON, including its errors: upstream scripts parse the
body of every answer, so an HTML error page would be a second, undocumented protocol.
Errors share one shape, `{"error": <code>, "detail": <sentence>, "fields": {<path>: [...]}}`,
raised as ApiError anywhere below and rendered by the `api_view` decorator.

The API changes nothing itself: submit and cancel call tickets.services, like the console
does. This module only authenticates, parses, checks types, and shapes the answers. The
shapes are fixed (tickets/openapi.py describes them, and a test holds both together).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import wraps

from django.db import IntegrityError
from django.db.models import Prefetch
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from connections.crypto import SecretUnreadable
from connections.models import Connection, Endpoint

from . import jobs, openapi
from .models import (
    MAX_DB_INT,
    AccessRequest,
    ApiClient,
    Operation,
    ProvisioningTask,
    Ticket,
    parse_id,
)
from .services import Actor, RequestInvalid, TransitionError, request_cancel, request_submit

log = logging.getLogger(__name__)

# Far above any real request (a few hundred bytes), far below what could hurt a worker.
MAX_BODY_BYTES = 64 * 1024
# Ticket::Generic sends the whole ticket, articles included, unless OmittedFields trims it.
WEBHOOK_MAX_BODY_BYTES = 2 * 1024 * 1024
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 100
# Writing last_used_at on every call would make each API read a write; a minute is precise
# enough to tell an active client from a forgotten one.
LAST_USED_RESOLUTION = timedelta(minutes=1)


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


# --- tokens and clients ---------------------------------------------------------------------


def hash_token(token: str) -> str:
    """The stored form of a token. A token has 256 random bits, so a plain SHA-256 suffices:
    there is nothing to brute-force, and a lookup by hash needs no constant-time compare."""
    return hashlib.sha256(token.encode()).hexdigest()


def api_client_create(*, name: str, trusted: bool = False) -> tuple[ApiClient, str]:
    """Create an API client and return it with its token, the only time the token exists
    in clear. The admin and `manage.py create_api_client` both come here."""
    token = secrets.token_urlsafe(32)
    client = ApiClient.objects.create(
        name=name, trusted=trusted, token_hash=hash_token(token), token_prefix=token[:8]
    )
    return client, token


def authenticate(request: HttpRequest) -> ApiClient:
    """The active ApiClient whose token the request carries, or a 401."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthenticated",
            "Send the API token as `Authorization: Bearer <token>`.",
            headers={"WWW-Authenticate": 'Bearer realm="otrs-bridge"'},
        )
    client = ApiClient.objects.filter(token_hash=hash_token(token.strip())).first()
    if client is None or not client.active:
        raise ApiError(
            401,
            "invalid_token",
            "The token is unknown, or its API client is disabled.",
            headers={"WWW-Authenticate": 'Bearer realm="otrs-bridge", error="invalid_token"'},
        )
    now = timezone.now()
    if client.last_used_at is None or now - client.last_used_at > LAST_USED_RESOLUTION:
        ApiClient.objects.filter(pk=client.pk).update(last_used_at=now)
    return client


def api_view(*methods: str, auth: bool = True) -> Callable:
    """Wrap an API view: CSRF-exempt (a bearer token is not a cookie), JSON 405, token
    authentication when `auth`, and ApiError rendered as the error shape."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> JsonResponse:
            try:
                if request.method not in methods:
                    raise ApiError(
                        405,
                        "method_not_allowed",
                        f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                        headers={"Allow": ", ".join(methods)},
                    )
                if auth:
                    request.api_client = authenticate(request)
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()

        return wrapper

    return decorate


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


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


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
    """Decode a JSON object, or raise a 400 that says what is wrong with it."""
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "The body is not UTF-8 text.") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "The body is nested too deeply.") from None
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"The body is not valid JSON: {exc}.") from None
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


# --- validating what upstream sends (types here; meaning in tickets.services) ----------------


def _text_problem(value: object, max_length: int) -> str | None:
    """Why `value` cannot be stored as text, or None. NUL and lone surrogates are refused
    here because PostgreSQL would refuse them later, as a 500."""
    if not isinstance(value, str):
        return "must be a string."
    if len(value) > max_length:
        return f"is longer than {max_length} characters."
    if "\x00" in value:
        return "must not contain NUL characters."
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text."
    return None


@dataclass
class _Checker:
    """Collects field errors, so one answer names every wrong field."""

    errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def text(
        self, data: dict, key: str, *, max_length: int, required: bool = False, prefix: str = ""
    ) -> str:
        value = data.get(key)
        if value is None or (required and value == ""):
            if required:
                self.add(prefix + key, "is required.")
            return ""
        problem = _text_problem(value, max_length)
        if problem:
            self.add(prefix + key, problem)
            return ""
        return value

    def only(
        self, data: dict, allowed: tuple[str, ...], *, prefix: str = "", noun: str = "field"
    ) -> None:
        for key in data:
            if key not in allowed:
                self.add(prefix + key, f"is not a known {noun}; expected {', '.join(allowed)}.")


BENEFICIARY_FIELDS = ("username", "first_name", "last_name", "email")
SUBMIT_FIELDS = (
    "beneficiary",
    "endpoint",
    "operation",
    "account_name",
    "entitlements",
    "justification",
    "upstream_approver",
)
MAX_ENTITLEMENTS = 100


@dataclass(frozen=True)
class Submission:
    """A submit body whose types are right; tickets.services judges its meaning."""

    beneficiary: dict
    endpoint: str
    operation: str
    account_name: str
    entitlements: list[str]
    justification: str
    upstream_approver: str

    def same_as(self, existing: AccessRequest) -> bool:
        """Whether an idempotent retry asks for what the first call recorded. Compared the
        way request_submit stores the values (stripped; account name defaults to username)."""
        username = str(self.beneficiary.get("username") or "").strip()
        wanted = [e.strip() for e in self.entitlements if e.strip()]
        return (
            existing.beneficiary.username == username
            and existing.endpoint.name == self.endpoint
            and existing.operation == self.operation
            and existing.account_name == (self.account_name or username).strip()
            and list(existing.entitlements) == wanted
            and existing.justification == self.justification
        )


def parse_submission(data: dict, *, client: ApiClient) -> Submission:
    """Check the types and sizes of a submit body; a 422 names every wrong field."""
    check = _Checker()
    check.only(data, SUBMIT_FIELDS)
    beneficiary = data.get("beneficiary")
    if not isinstance(beneficiary, dict):
        check.add("beneficiary", "is required, as an object with a username.")
        beneficiary = {}
    else:
        check.only(beneficiary, BENEFICIARY_FIELDS, prefix="beneficiary.")
        limits = {"username": 150, "first_name": 150, "last_name": 150, "email": 254}
        beneficiary = {
            key: check.text(
                beneficiary,
                key,
                max_length=limit,
                required=key == "username",
                prefix="beneficiary.",
            )
            for key, limit in limits.items()
        }
    entitlements = data.get("entitlements")
    if entitlements is None:
        entitlements = []
    elif not isinstance(entitlements, list):
        check.add("entitlements", "must be a list of strings.")
        entitlements = []
    elif len(entitlements) > MAX_ENTITLEMENTS:
        check.add("entitlements", f"lists more than {MAX_ENTITLEMENTS} entitlements.")
        entitlements = []
    for index, entitlement in enumerate(entitlements):
        problem = _text_problem(entitlement, 200)
        if problem:
            check.add(f"entitlements[{index}]", problem)
    approver = check.text(data, "upstream_approver", max_length=200)
    if approver and not client.trusted:
        check.add(
            "upstream_approver",
            "is only accepted from a trusted client; this client's requests wait for "
            "approval in the bridge.",
        )
    submission = Submission(
        beneficiary=beneficiary,
        endpoint=check.text(data, "endpoint", max_length=100, required=True),
        operation=check.text(data, "operation", max_length=20, required=True),
        account_name=check.text(data, "account_name", max_length=200),
        entitlements=entitlements,
        justification=check.text(data, "justification", max_length=5000),
        upstream_approver=approver,
    )
    if check.errors:
        raise invalid(check.errors)
    return submission


def idempotency_key(request: HttpRequest) -> str:
    """The Idempotency-Key header ("" when absent), or a 422 when it cannot be stored."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return ""
    problem = _text_problem(key, 200) or ("must not be empty." if not key.strip() else None)
    if problem:
        raise invalid({"Idempotency-Key": [problem]})
    return key


# --- answers ----------------------------------------------------------------------------------


def ticket_document(ticket: Ticket | None) -> dict | None:
    if ticket is None:
        return None
    return {
        "id": ticket.ticket_id,
        "number": ticket.ticket_number or None,
        "state": ticket.state or None,
        "state_type": ticket.state_type or None,
        "url": ticket.agent_url or None,
    }


def task_document(task: ProvisioningTask) -> dict:
    return {
        "id": task.pk,
        "operation": task.operation,
        "entitlement": task.entitlement or None,
        "status": task.status,
        "attempts": task.attempts,
        "last_error": task.last_error or None,
        "ticket": ticket_document(task.ticket),
    }


def request_document(access_request: AccessRequest) -> dict:
    """The fixed request shape of the API (see the Request schema in tickets/openapi.py)."""
    return {
        "id": access_request.pk,
        "number": access_request.number,
        "status": access_request.status,
        "tasks": [task_document(t) for t in access_request.tasks.all()],
    }


def requests_of(client: ApiClient):
    """The requests a client may see: its own, with tasks and tickets in two queries."""
    tasks = ProvisioningTask.objects.select_related("ticket").order_by("id")
    return AccessRequest.objects.filter(api_client=client).prefetch_related(
        Prefetch("tasks", queryset=tasks)
    )


def one_request(client: ApiClient, pk: int) -> AccessRequest:
    found = requests_of(client).filter(pk=pk).first() if 0 < pk <= MAX_DB_INT else None
    if found is None:
        raise ApiError(404, "not_found", f"There is no request {pk} for this API client.")
    return found


# --- views ------------------------------------------------------------------------------------


@api_view("GET", auth=False)
def health(request):
    """Unauthenticated liveness probe for load balancers; it reveals nothing."""
    return JsonResponse({"status": "ok"})


@api_view("GET", auth=False)
def openapi_document(request):
    """The OpenAPI 3.0 document; public, so clients and tools can read it before they
    have a token."""
    return JsonResponse(openapi.document())


@api_view("GET", "POST")
def requests_collection(request):
    """POST submits a request, GET lists them: one URL, as the document describes it."""
    if request.method == "POST":
        return submit(request)
    return list_requests(request)


def submit(request) -> JsonResponse:
    """Submit a request. With an Idempotency-Key, a retry answers the first result (200 and
    `Idempotent-Replayed: true`) instead of creating a second request; a retry with another
    body is refused with 422."""
    client = request.api_client
    key = idempotency_key(request)
    submission = parse_submission(read_json(request), client=client)
    for attempt in (1, 2):
        replay = _replay(client, key, submission)
        if replay is not None:
            return replay
        try:
            access_request = _submit(client, key, submission)
            break
        except IntegrityError:
            # A concurrent call won at a unique constraint: the same Idempotency-Key (the
            # second round answers its request) or the same new beneficiary (who exists now).
            if attempt == 2:
                raise
    return JsonResponse(request_document(one_request(client, access_request.pk)), status=201)


def _replay(client: ApiClient, key: str, submission: Submission) -> JsonResponse | None:
    if not key:
        return None
    first = (
        requests_of(client)
        .select_related("beneficiary", "endpoint")
        .filter(idempotency_key=key)
        .first()
    )
    if first is None:
        return None
    if not submission.same_as(first):
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"The Idempotency-Key was already used for request {first.number} with a "
            "different body; use a new key for a new request.",
            fields={"Idempotency-Key": ["was used before with a different body."]},
        )
    answer = JsonResponse(request_document(first), status=200)
    answer["Idempotent-Replayed"] = "true"
    return answer


def _submit(client: ApiClient, key: str, submission: Submission) -> AccessRequest:
    # Pass the Endpoint itself when it exists: request_submit then also checks that it has
    # a service-desk connection (it only checks existence for a name).
    endpoint = (
        Endpoint.objects.select_related("security_system").filter(name=submission.endpoint).first()
    )
    try:
        return request_submit(
            beneficiary=submission.beneficiary,
            endpoint=endpoint or submission.endpoint,
            operation=submission.operation,
            api_client=client,
            account_name=submission.account_name,
            entitlements=submission.entitlements,
            justification=submission.justification,
            idempotency_key=key,
            upstream_approver=submission.upstream_approver,
        )
    except RequestInvalid as exc:
        raise invalid(exc.fields) from None


@dataclass(frozen=True)
class ListQuery:
    status: str
    endpoint: str
    operation: str
    before: int | None
    limit: int


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


LIST_PARAMETERS = ("status", "endpoint", "operation", "cursor", "limit")


def parse_list_query(params) -> ListQuery:
    """Check the list parameters; a 422 names every wrong one. An unknown or empty parameter
    is refused rather than ignored: a misspelt filter would otherwise list everything."""
    check = _Checker()
    check.only(params, LIST_PARAMETERS, noun="parameter")
    values = {name: params.get(name) for name in LIST_PARAMETERS}
    for name, value in values.items():
        if value == "":
            check.add(name, "must not be empty; leave the parameter out instead.")
    choices = {"status": AccessRequest.Status.values, "operation": Operation.values}
    for name, allowed in choices.items():
        if values[name] and values[name] not in allowed:
            check.add(name, f"must be one of {', '.join(allowed)}.")
    problem = values["endpoint"] and _text_problem(values["endpoint"], 100)
    if problem:
        check.add("endpoint", problem)
    before = decode_cursor(values["cursor"]) if values["cursor"] else None
    if values["cursor"] and before is None:
        check.add("cursor", "is not a cursor from this API; use `next` of a previous page.")
    raw_limit = values["limit"] or str(PAGE_SIZE_DEFAULT)
    digits = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4
    limit = int(raw_limit) if digits else 0
    if values["limit"] != "" and not 1 <= limit <= PAGE_SIZE_MAX:
        check.add("limit", f"must be a whole number from 1 to {PAGE_SIZE_MAX}.")
    if check.errors:
        raise invalid(check.errors)
    return ListQuery(
        status=values["status"] or "",
        endpoint=values["endpoint"] or "",
        operation=values["operation"] or "",
        before=before,
        limit=limit,
    )


def list_requests(request) -> JsonResponse:
    """The client's requests, newest first, a page at a time. The cursor is the last id
    seen, so requests created while paging never shift a page."""
    query = parse_list_query(request.GET)
    found = requests_of(request.api_client).order_by("-id")
    if query.status:
        found = found.filter(status=query.status)
    if query.operation:
        found = found.filter(operation=query.operation)
    if query.endpoint:
        found = found.filter(endpoint__name=query.endpoint)
    if query.before is not None:
        found = found.filter(pk__lt=query.before)
    page = list(found[: query.limit + 1])
    more = len(page) > query.limit
    page = page[: query.limit]
    return JsonResponse(
        {
            "results": [request_document(r) for r in page],
            "next": encode_cursor(page[-1].pk) if more else None,
        }
    )


@api_view("GET")
def request_detail(request, pk: int):
    return JsonResponse(request_document(one_request(request.api_client, pk)))


@api_view("POST")
def request_cancel_view(request, pk: int):
    """Cancel a request and its unfinished tasks. Cancelling a cancelled request answers it
    unchanged, so a retried cancel is harmless; any other finished request is a 409."""
    client = request.api_client
    access_request = one_request(client, pk)
    data = read_json(request, optional=True)
    check = _Checker()
    check.only(data, ("reason",))
    reason = check.text(data, "reason", max_length=2000)
    if check.errors:
        raise invalid(check.errors)
    if access_request.status != AccessRequest.Status.CANCELLED:
        try:
            request_cancel(
                access_request=access_request,
                actor=Actor.api(client),
                reason=reason or f"cancelled by {client.name}",
            )
        except TransitionError:
            access_request.refresh_from_db()
            raise ApiError(
                409,
                "conflict",
                f"Request {access_request.number} is {access_request.status}; "
                "it can no longer be cancelled.",
            ) from None
    return JsonResponse(request_document(one_request(client, pk)))


@csrf_exempt
def not_found(request, path: str = ""):
    """JSON 404 for every other path under /api/v1, so clients never get an HTML page."""
    return ApiError(404, "not_found", f"There is no API resource at {request.path}.").response()


# --- the OTRS webhook -------------------------------------------------------------------------


def ticket_id_of(payload: object) -> int | None:
    """The TicketID of a Ticket::Generic payload: Event.TicketID, else Ticket.TicketID.
    OTRS sends ids as strings, some mappings as numbers; anything else is None."""
    if not isinstance(payload, dict):
        return None
    for section in ("Event", "Ticket"):
        part = payload.get(section)
        number = parse_id(part.get("TicketID")) if isinstance(part, dict) else None
        if number is not None:
            return number
    return None


def _check_webhook_token(request: HttpRequest, connection: Connection) -> None:
    """403 unless the request carries the connection's webhook secret (constant time)."""
    try:
        secret = connection.webhook_secret
    except SecretUnreadable:
        log.error("webhook for %s refused: its secret cannot be decrypted", connection.name)
        secret = ""
    if not secret:
        raise ApiError(
            403,
            "webhook_disabled",
            f"Connection {connection.name} has no webhook secret, so it accepts no webhooks; "
            f"set one with `manage.py set_webhook_secret {connection.name} --generate`.",
        )
    given = request.headers.get("X-OTRS-Bridge-Token") or request.GET.get("token") or ""
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise ApiError(
            403,
            "forbidden",
            "The webhook token is missing or wrong; send it in X-OTRS-Bridge-Token or ?token=.",
        )


def _queue_refresh(connection: Connection, ticket_id: int) -> None:
    """Queue refresh_ticket for a ticket the bridge follows; ignore any other ticket."""
    ticket_pk = (
        Ticket.objects.filter(connection=connection, ticket_id=ticket_id, is_open=True)
        .values_list("pk", flat=True)
        .first()
    )
    if ticket_pk is None:
        log.info("webhook %s: ticket %s is not an open bridge ticket", connection.name, ticket_id)
        return
    try:
        jobs.enqueue(jobs.refresh_ticket, ticket_pk, connection.name)
    except Exception:
        # The broker is down: a 503 makes OTRS retry the event later (a bad body would not
        # get better on retry, but a broker comes back).
        log.exception("webhook %s: could not queue the refresh of %s", connection.name, ticket_id)
        raise ApiError(
            503, "unavailable", "The bridge could not queue the refresh; try again later."
        ) from None


@api_view("POST", auth=False)
def otrs_webhook(request, connection_name: str):
    """Receive a Ticket::Generic invoker event and queue a refresh of that ticket.

    1. The connection's webhook secret must match (header or ?token=), else 403.
    2. The state in the body is never trusted: only the TicketID is read, and refresh_ticket
       asks OTRS with TicketGet.
    3. Every authenticated call answers 200 `{}` at once, even with a body that makes no
       sense: OTRS retries anything but 20x, and a bad body does not get better on retry.
    """
    connection = (
        Connection.objects.filter(name=connection_name)
        .only("pk", "name", "webhook_secret_encrypted")
        .first()
    )
    if connection is None:
        raise ApiError(404, "not_found", f"There is no connection named {connection_name!r}.")
    _check_webhook_token(request, connection)
    ticket_id = _webhook_ticket_id(request, connection)
    if ticket_id is not None:
        _queue_refresh(connection, ticket_id)
    return JsonResponse({})


def _webhook_ticket_id(request: HttpRequest, connection: Connection) -> int | None:
    """The TicketID the body names, or None (logged) when the body is too large, not a
    JSON object or names no ticket."""
    try:
        payload = parse_json_object(read_body(request, limit=WEBHOOK_MAX_BODY_BYTES))
    except ApiError as exc:
        log.warning(
            "webhook %s: body ignored: %s (omit Articles in the invoker when it is too large)",
            connection.name,
            exc.detail,
        )
        return None
    ticket_id = ticket_id_of(payload)
    if ticket_id is None:
        log.warning("webhook %s: no TicketID in Event or Ticket; ignored", connection.name)
    return ticket_id
