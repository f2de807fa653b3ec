"""JSON API for upstream systems, and the OTRS webhook receiver.

Everything under /api/v1 answers JSON, including its errors: upstream scripts parse the
body of every answer, so an HTML error page would be a second, undocumented protocol.
Errors share one shape, `{"error": <code>, "detail": <sentence>, "fields": {<path>: [...]}}`,
raised as ApiError anywhere below and rendered by the `api_view` decorator.

The API changes nothing itself: submit and cancel call tickets.services, like the console
does. This module only authenticates and shapes the answers; what a body may hold, and how
it is read and checked, is tickets/api_schemas.py. The shapes are fixed (tickets/openapi.py
describes them, and a test holds both together).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache, wraps

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from connections import crypto
from connections.crypto import SecretUnreadable
from connections.models import Connection, Endpoint

from . import jobs, openapi
from .api_schemas import (
    ApiError,
    CallbackRegistration,
    CancelRequest,
    ListQuery,
    SubmitRequest,
    encode_cursor,
    idempotency_key,
    invalid,
    parse_json_object,
    read_body,
    read_json,
)
from .documents import request_document
from .models import MAX_DB_INT, AccessRequest, ApiClient, ProvisioningTask, Ticket, parse_id
from .services import (
    Actor,
    RequestInvalid,
    TransitionError,
    client_clear_callback,
    client_set_callback,
    request_cancel,
    request_submit,
    watched_tickets,
)

log = logging.getLogger(__name__)

# Ticket::Generic sends the whole ticket, articles included, unless OmittedFields trims it.
WEBHOOK_MAX_BODY_BYTES = 2 * 1024 * 1024
# Writing last_used_at on every call would make each API read a write; a minute is precise
# enough to tell an active client from a forgotten one.
LAST_USED_RESOLUTION = timedelta(minutes=1)


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


class ApiRequest(HttpRequest):
    """A request to an API view; `api_view` sets `api_client` once the token checks out."""

    api_client: ApiClient


def api_view(*methods: str, auth: bool = True) -> Callable:
    """Wrap an API view: CSRF-exempt (a bearer token is not a cookie), JSON 405, token
    authentication when `auth`, and ApiError rendered as the error shape."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: ApiRequest, *args, **kwargs) -> JsonResponse:
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


# --- answers ----------------------------------------------------------------------------------


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
    submission = SubmitRequest.parse(read_json(request), trusted=client.trusted)
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


def _replay(client: ApiClient, key: str, submission: SubmitRequest) -> JsonResponse | None:
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


def _submit(client: ApiClient, key: str, submission: SubmitRequest) -> AccessRequest:
    # Pass the Endpoint itself when it exists: request_submit then also checks that it has
    # a service-desk connection (it only checks existence for a name).
    endpoint = (
        Endpoint.objects.select_related("security_system").filter(name=submission.endpoint).first()
    )
    try:
        return request_submit(
            **{**submission.service_arguments(), "endpoint": endpoint or submission.endpoint},
            api_client=client,
            idempotency_key=key,
        )
    except RequestInvalid as exc:
        raise invalid(exc.fields) from None


def list_requests(request) -> JsonResponse:
    """The client's requests, newest first, a page at a time. The cursor is the last id
    seen, so requests created while paging never shift a page."""
    query = ListQuery.of(request.GET)
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
    reason = CancelRequest.parse(data).reason
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


@api_view("PUT", "DELETE")
def callback_view(request):
    """Register this client's callback URL, answering its new signing secret (shown only
    here, once), or remove it."""
    client = request.api_client
    if request.method == "DELETE":
        client_clear_callback(client=client)
        return JsonResponse({"url": None, "secret": None})
    registration = CallbackRegistration.parse(read_json(request))
    try:
        secret = client_set_callback(client=client, url=registration.url)
    except RequestInvalid as exc:
        raise invalid(exc.fields) from None
    return JsonResponse({"url": client.callback_url, "secret": secret})


@csrf_exempt
def not_found(request, path: str = ""):
    """JSON 404 for every other path under /api/v1, so clients never get an HTML page."""
    return ApiError(404, "not_found", f"There is no API resource at {request.path}.").response()


# Django answers some requests before or around a view: no route, a request it refuses to
# read (400), an unhandled exception (500). Those answers are HTML pages; under /api/v1
# they take the error shape too (otrsbridge/urls.py installs these as its handlers).
_DJANGO_ERRORS: dict[int, tuple[str, str, Callable]] = {
    400: ("bad_request", "The request cannot be read.", defaults.bad_request),
    403: ("forbidden", "This request is not allowed.", defaults.permission_denied),
    404: ("not_found", "There is no API resource here.", defaults.page_not_found),
    500: (
        "server_error",
        "The bridge failed to answer this request; the error is logged. Try again later.",
        defaults.server_error,
    ),
}


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith(reverse("api:not_found", kwargs={"path": ""}))


def error_handler(status: int) -> Callable:
    """Django's error view for `status`, answering the error shape under /api/v1."""
    error, detail, page = _DJANGO_ERRORS[status]

    def handler(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        if is_api_request(request):
            return ApiError(status, error, detail).response()
        return page(request) if status == 500 else page(request, exception)

    handler.__name__ = f"handler{status}"
    return handler


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


@lru_cache(maxsize=4)
def _decoy_ciphertext(keys: tuple[str, ...]) -> str:
    """A random secret encrypted once per process (and key list), for _check_webhook_token."""
    return crypto.encrypt(secrets.token_urlsafe(32))


def _check_webhook_token(request: HttpRequest, connection: Connection | None) -> Connection:
    """The connection, or 403 unless the request carries its webhook secret (constant time).

    An unknown connection (None) answers exactly as a wrong secret does, after the same
    work (one decryption, one constant-time compare), so that an unauthenticated caller
    cannot tell which connection names exist from the status, the body or the time taken.
    """
    if connection is None:
        secret = crypto.decrypt(_decoy_ciphertext(tuple(settings.FIELD_ENCRYPTION_KEYS)))
    else:
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
    if not hmac.compare_digest(given.encode(), secret.encode()) or connection is None:
        raise ApiError(
            403,
            "forbidden",
            "The webhook token is missing or wrong; send it in X-OTRS-Bridge-Token or ?token=.",
        )
    return connection


def _queue_refresh(connection: Connection, ticket_id: int) -> None:
    """Queue refresh_ticket for a ticket the bridge follows; ignore any other ticket."""
    ticket_pk = (
        Ticket.objects.filter(connection=connection, ticket_id=ticket_id)
        .filter(watched_tickets(timezone.now()))
        .values_list("pk", flat=True)
        .first()
    )
    if ticket_pk is None:
        log.info(
            "webhook %s: ticket %s is not an open bridge ticket, nor a closed one still watched",
            connection.name,
            ticket_id,
        )
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

    1. The connection's webhook secret must match (header or ?token=), else 403; an
       unknown connection gets the same 403 (see _check_webhook_token).
    2. The state in the body is never trusted: only the TicketID is read, and refresh_ticket
       asks OTRS with TicketGet.
    3. Every authenticated call answers 200 `{}` at once, even with a body that makes no
       sense: OTRS retries anything but 20x, and a bad body does not get better on retry.
    """
    # A NUL in the path names no connection (and PostgreSQL would refuse the query).
    connection = (
        Connection.objects.filter(name=connection_name)
        .only("pk", "name", "webhook_secret_encrypted")
        .first()
        if "\x00" not in connection_name
        else None
    )
    if connection is None:
        # For the operator who mistyped the invoker's URL; the caller learns nothing.
        log.warning("webhook refused: there is no connection named %r", connection_name)
    connection = _check_webhook_token(request, connection)
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
