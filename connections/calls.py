"""What a call is apart from HTTP: the documents it comes from, the request it becomes, and
the record it leaves. client.py sends; this module needs no HTTP library.

- `validated_documents`: a connection's four documents, validated once per version.
- `Request`, `encode_body`, `search_probe`: the exact request a rendered call sends, and the
  TicketSearch a connection test derives when the documents name no test call.
- `CreatedTicket`, `Reconciled`, `CheckResult`: what the client's operations answer.
- `record`: the masked ApiCall row (and the exchange a connection test shows) of one call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit, urlunsplit

from . import templating
from .documents import AuthSpec, CallSpec, Documents
from .errors import Answer, OTRSError, call_outcome
from .masking import Masker, SecretForms
from .models import ApiCall, Connection
from .spec import SpecError, validate_documents

EXCERPT_CHARS = 4096


@dataclass(frozen=True)
class CreatedTicket:
    ticket_id: int
    ticket_number: str
    # The id of the article TicketCreate wrote (the bridge's own text); None when the
    # answer gives none or the ticket was found by search rather than created. Not part of
    # which ticket it is: a ticket found by search equals the one created.
    article_id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Reconciled:
    """What searching OTRS for a task's correlation key found, and why hits were refused."""

    ticket: CreatedTicket | None
    notes: tuple[str, ...] = ()


@dataclass
class CheckResult:
    __test__ = False  # not a pytest class

    ok: bool
    message: str
    exchanges: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    call_name: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def fingerprint(connection: Connection) -> str:
    """Changes whenever a document or a secret of `connection` does."""
    documents = [
        connection.connection_json,
        connection.create_ticket_json,
        connection.ticket_status_json,
        connection.config_json,
        connection.secrets_encrypted,
    ]
    return hashlib.sha256(json.dumps(documents, sort_keys=True, default=str).encode()).hexdigest()


# Validated documents by fingerprint: validating walks every string of every document,
# which is far more work than the call it prepares. A changed document (or secret) has a
# new fingerprint, so an edit takes effect at once.
_documents: dict[str, Documents] = {}
_DOCUMENTS_KEPT = 64


def validated_documents(connection: Connection, fingerprint: str) -> Documents:
    """The documents of `connection`, validated once per `fingerprint`; raises SpecError."""
    documents = _documents.get(fingerprint)
    if documents is None:
        others = {
            "create_ticket_json": connection.create_ticket_json,
            "ticket_status_json": connection.ticket_status_json,
            "config_json": connection.config_json or None,
        }
        # Validity is judged with the secrets as placeholders, as the admin and the import
        # judge it: an error message must never quote part of a password.
        validate_documents(connection_json=connection.connection_json, **others)
        try:
            documents = validate_documents(
                connection_json=connection.connection_document(), **others
            )
        except SpecError:
            raise SpecError(
                [
                    "ConnectionJSON: a secret value holds text the bridge would read as a "
                    "template (${…} or @NAME@); change that secret"
                ]
            ) from None
        if len(_documents) >= _DOCUMENTS_KEPT:
            _documents.clear()
        _documents[fingerprint] = documents
    return documents


def encode_body(params: Any, content_type: str) -> bytes:
    if "x-www-form-urlencoded" in content_type and isinstance(params, dict):
        items = {key: templating.as_text(value) for key, value in params.items()}
        quote_via = quote if content_type.endswith("-pws") else quote_plus
        return urlencode(items, quote_via=quote_via).encode()
    return json.dumps(params, ensure_ascii=False).encode("utf-8")


def preview_value(name: str) -> Any:
    """In a preview, an earlier call's answer does not exist yet: show where it would go."""
    if name.startswith("response."):
        return f"<{name}>"
    raise templating.TemplateError(f"${{{name}}} has no value")


def search_probe(documents: Documents, auth_spec: AuthSpec) -> CallSpec:
    """A TicketSearch (GET …/Ticket?Limit=1) at the address TicketCreate posts to."""
    for call in documents.create.calls:
        parts = urlsplit(call.url)
        if call.http_method == "POST" and parts.path.endswith("/Ticket"):
            query = "Limit=1&SessionID=${access_token}" if auth_spec.token_call else "Limit=1"
            url = urlunsplit(parts._replace(query=query, fragment=""))
            return CallSpec(
                "TicketSearch", auth_spec.name, url, "GET", None, {}, "application/json"
            )
    raise OTRSError(
        "No testConnectionParams, and no TicketCreate call (POST …/Ticket) to derive a "
        "TicketSearch from; add testConnectionParams to the auth block",
        permanent=True,
    )


def masked_request(
    masker: Masker, request: Request, content_type: str, forms: SecretForms | None = None
) -> dict:
    masked = masker.request(request.url, request.headers, request.body, content_type, forms)
    return {"call": request.call_name, "method": request.method, **masked}


def record(
    connection: Connection,
    masker: Masker,
    request: Request,
    answer: Answer | None,
    error: OTRSError | None,
    *,
    duration_ms: int,
    ref: str,
    extra_secrets: Iterable[str] = (),
) -> tuple[ApiCall, dict]:
    """The unsaved ApiCall row of one exchange, and the same facts as a dict; both masked."""
    forms = masker.forms(extra_secrets)
    shown = masked_request(masker, request, request.headers.get("Content-Type", ""), forms)
    head = "\n".join(f"{k}: {v}" for k, v in shown["headers"].items())
    response = ""
    if answer is not None:
        response = masker.body(answer.text[: EXCERPT_CHARS * 2], forms)
    outcome = call_outcome(error)
    row = {
        "call": request.call_name,
        "method": request.method,
        "url": shown["url"],
        "status_code": answer.status if answer else None,
        "duration_ms": duration_ms,
        "outcome": outcome,
        "error": error.message if error else "",
        "request": f"{head}\n\n{shown['body']}".strip()[:EXCERPT_CHARS],
        "response": response[:EXCERPT_CHARS],
    }
    call = ApiCall(
        connection=connection,
        ref=ref[:100],
        call_name=row["call"][:100],
        method=row["method"],
        url=row["url"],
        status_code=row["status_code"],
        duration_ms=row["duration_ms"],
        outcome=outcome,
        error=row["error"],
        request_excerpt=row["request"],
        response_excerpt=row["response"],
    )
    return call, row
