"""OTRSError, and how an answer of the ticket system is judged.

OTRS reports business errors as HTTP 200 with an `Error` object, so a status code alone
says little. An answer is judged in this order: the auth block's retryFailureStatusCode
(the session was refused), the HTTP status, a body that must be JSON, OTRS's own `Error`
shape, the auth block's errorPath with authError/expiryError, then the call's
unsuccessResponses and successResponses. The verdict is an OTRSError whose flags tell the
caller what to do: `permanent` (stop), `auth` (renew the session), `outcome_unknown` (the
request may have reached OTRS: search before creating again). What a successful answer
says (a token, a ticket's state and outcome, a merge target) is read here too.

Reference: shared/reference/otrs-genericinterface.md (§3 responses and errors).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .documents import (
    HEADER_TOKEN_PREFIX,
    AuthSpec,
    CallSpec,
    ClosingArticleSpec,
    MergeTargetSpec,
    ResponseRule,
    StatusSpec,
    TestConnectionSpec,
)
from .models import ApiCall
from .paths import PathNotFound, get_path

MAX_BODY_BYTES = 2 * 1024 * 1024
# OTRS ErrorCode suffixes (Op.Kind) that a new session heals; every other one is permanent.
AUTH_ERROR_KINDS = ("AuthFail", "SessionInvalid")
# A batch TicketGet fails whole when one id is inaccessible or gone; these mean "that id".
MISSING_TICKET_KINDS = ("AccessDenied", "NotValidTicketID", "NotTicketData")


class OTRSError(Exception):
    """A call to the ticket system failed. `message` is for operators, already masked.

    permanent: retrying cannot help (configuration, validation, refused credentials).
    auth: the ticket system refused the session or credentials.
    outcome_unknown: the request may have reached it (timeout after sending, 5xx, reset).
    code: OTRS's ErrorCode when it sent one, e.g. "TicketCreate.InvalidParameter".
    kind: "error", "timeout" or "transport", for the call log.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        auth: bool = False,
        outcome_unknown: bool = False,
        status_code: int | None = None,
        code: str = "",
        kind: str = "error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.auth = auth
        self.outcome_unknown = outcome_unknown
        self.status_code = status_code
        self.code = code
        self.kind = kind

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TicketStatus:
    ticket_id: int
    ticket_number: str
    state: str
    state_type: str
    changed: datetime | None
    outcome: str | None
    merged_into: int | None


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as received, body capped at MAX_BODY_BYTES (`too_large` past that)."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    too_large: bool

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def first_chars(self, count: int = 200) -> str:
        return " ".join(self.text.split())[:count]


def http_error(answer: Answer, method: str) -> OTRSError:
    """An HTTP status of 300 or more, judged the way OTRS means it."""
    status, sent = answer.status, method != "GET"
    text = answer.first_chars()
    if 300 <= status < 400:
        location = answer.headers.get("Location", "?")
        return OTRSError(
            f"OTRS redirected to {location} (HTTP {status}); use that URL",
            permanent=True,
            status_code=status,
        )
    if status < 500:
        return OTRSError(f"OTRS answered HTTP {status}: {text}", permanent=True, status_code=status)
    if "determine Operation" in text:
        return OTRSError(
            f"OTRS has no operation for this URL and method (check the path, the method and the web "
            f"service name): {text}",
            permanent=True,
            status_code=status,
        )
    try:
        fault = json.loads(answer.content).get("faultstring")
    except (ValueError, AttributeError, RecursionError):
        fault = None
    if fault:
        message = f"OTRS failed internally (HTTP {status}): {fault}"
    elif _looks_like_html(answer):
        message = f"OTRS answered HTML instead of JSON (HTTP {status}): {text}"
    else:
        message = f"OTRS answered HTTP {status}: {text}"
    return OTRSError(message, status_code=status, outcome_unknown=sent)


def _looks_like_html(answer: Answer) -> bool:
    content_type = answer.headers.get("Content-Type", "").lower()
    return "html" in content_type or answer.text.lstrip().startswith("<")


def json_body(answer: Answer, method: str) -> Any:
    """The parsed body of a 2xx answer; raise for one that is too large or not JSON."""
    sent = method != "GET"
    if answer.too_large:
        raise OTRSError(
            f"OTRS answered more than {MAX_BODY_BYTES // (1024 * 1024)} MB (HTTP {answer.status}): "
            f"{answer.first_chars()}",
            status_code=answer.status,
            outcome_unknown=sent,
        )
    if answer.status == 204 or not answer.content.strip():
        return {}
    try:
        return json.loads(answer.content)
    except RecursionError:
        # A hostile or broken server can nest deeper than Python's parser recurses.
        raise OTRSError(
            f"OTRS answered JSON nested too deeply to read (HTTP {answer.status}): "
            f"{answer.first_chars()}",
            status_code=answer.status,
            outcome_unknown=sent,
        ) from None
    except ValueError:
        what = "HTML" if _looks_like_html(answer) else "something"
        raise OTRSError(
            f"OTRS answered {what} instead of JSON (HTTP {answer.status}): {answer.first_chars()}",
            status_code=answer.status,
            outcome_unknown=sent,
        ) from None


def otrs_error(body: Any, status: int) -> OTRSError | None:
    """OTRS's `{"Error": {"ErrorCode": "Op.Kind", "ErrorMessage": …}}`, which comes as HTTP 200."""
    if not isinstance(body, dict) or not isinstance(body.get("Error"), dict):
        return None
    code = str(body["Error"].get("ErrorCode") or "Error")
    message = f"{code}: {body['Error'].get('ErrorMessage') or ''}".rstrip(": ")
    kind = code.rpartition(".")[2]
    if kind in AUTH_ERROR_KINDS:
        return OTRSError(message, auth=True, code=code, status_code=status)
    return OTRSError(message, permanent=True, code=code, status_code=status)


def as_ticket_id(value: Any) -> int | None:
    """OTRS sends ids as "2" or 2; anything else is not an id."""
    text = str(value).strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def ids_at(body: Any, path: str, call_name: str) -> list[int]:
    """The ticket ids a search answered at `path` (one id or a list), each once; none when
    the path is absent, as OTRS answers `{}` when nothing matches."""
    found = value_at(body, path)
    items = [] if found is None else found if isinstance(found, list) else [found]
    ids = []
    for item in items:
        ticket_id = as_ticket_id(item)
        if ticket_id is None:
            raise OTRSError(
                f"{call_name} answered {item!r} at {path}, not a ticket id", permanent=True
            )
        ids.append(ticket_id)
    return list(dict.fromkeys(ids))


def value_at(data: Any, path: str) -> Any:
    """The value at a JSON path of an answer; None when the path is empty or leads nowhere."""
    if not path:
        return None
    try:
        return get_path(data, path)
    except PathNotFound:
        return None


def judge(call: CallSpec, auth_spec: AuthSpec, answer: Answer, required_path: str = "") -> Any:
    """The parsed body of a successful answer; raise OTRSError for anything else."""
    if answer.status in auth_spec.retry_failure_status_codes:
        raise OTRSError(f"OTRS answered HTTP {answer.status}", auth=True, status_code=answer.status)
    if answer.status >= 300:
        raise http_error(answer, call.http_method)
    body = json_body(answer, call.http_method)
    error = otrs_error(body, answer.status) or error_path_error(auth_spec, body, answer.status)
    if error:
        raise error
    if call.is_unsuccess(answer.status, body):
        raise OTRSError(f"{call.name}: the answer matches unsuccessResponses", permanent=True)
    if not call.is_success(answer.status, body):
        raise OTRSError(f"{call.name}: the answer does not match successResponses", permanent=True)
    if required_path and as_ticket_id(value_at(body, required_path)) is None:
        raise OTRSError(
            f"{call.name} answered without TicketID at path {required_path}", permanent=True
        )
    return body


def error_path_error(auth_spec: AuthSpec, body: Any, status: int) -> OTRSError | None:
    """Saviynt's errorPath: its value in authError or expiryError means the session is gone."""
    value = value_at(body, auth_spec.error_path)
    if value is not None and str(value) in (*auth_spec.auth_errors, *auth_spec.expiry_errors):
        return OTRSError(
            f"OTRS reported {value} at {auth_spec.error_path}", auth=True, status_code=status
        )
    return None


def judge_login(auth_spec: AuthSpec, answer: Answer) -> str:
    """The token in a login answer (body path or #HEADERS#…); a refused login is permanent."""
    assert auth_spec.token_call is not None
    try:
        body = judge(auth_spec.token_call, auth_spec, answer)
    except OTRSError as exc:
        if exc.auth or exc.status_code in (401, 403):
            user = f" for user {auth_spec.login_user}" if auth_spec.login_user else ""
            reason = exc.code or exc.message
            raise OTRSError(
                f"OTRS refused the login{user}: {reason}",
                permanent=True,
                auth=True,
                code=exc.code,
            ) from None
        raise
    path = auth_spec.token_response_path
    if path.startswith(HEADER_TOKEN_PREFIX):
        header = answer.headers.get(path[len(HEADER_TOKEN_PREFIX) :], "")
        token = header.split(";")[0].strip() if path.lower().endswith("set-cookie") else header
    else:
        token = value_at(body, path)
    if not token or not isinstance(token, str | int):
        raise OTRSError(f"The login answered without a token at {path}", permanent=True, auth=True)
    return str(token)


def check_test_answer(test: TestConnectionSpec, body: Any) -> None:
    """testConnectionParams: an error value at errorPath, or no success value, fails the test."""
    error = value_at(body, test.error_path)
    if error is not None and str(error) in test.errors:
        raise OTRSError(f"The test call answered {error} at {test.error_path}", permanent=True)
    if test.success_path and test.success_values:
        value = value_at(body, test.success_path)
        if str(value) not in test.success_values:
            raise OTRSError(
                f"The test call answered {value!r} at {test.success_path}", permanent=True
            )


def ticket_status(status: StatusSpec, node: Any, ticket_id: int) -> TicketStatus:
    """One ticket's state in a status answer, and the outcome the TicketStatusJSON maps it to."""
    state = value_at(node, status.status_path)
    if state is None:
        raise OTRSError(
            f"{status.call.name} answered without a state at {status.status_path} for ticket {ticket_id}",
            permanent=True,
        )
    state_type = value_at(node, status.state_type_path)
    return TicketStatus(
        ticket_id=ticket_id,
        ticket_number=str(value_at(node, status.ticket_number_path) or ""),
        state=str(state),
        state_type=str(state_type or ""),
        changed=_parse_changed(value_at(node, status.changed_path)),
        outcome=status.outcome_for(str(state), None if state_type is None else str(state_type)),
        merged_into=None,
    )


def merge_target(merge: MergeTargetSpec, body: Any) -> int | None:
    """The ticket a merged ticket went into, from its history; None when the answer lacks it."""
    entries = value_at(body, merge.entry_list_path) if merge.entry_list_path else [body]
    if not isinstance(entries, list):
        return None  # not the list the document promised: nothing to learn from it
    rule = ResponseRule(path_values=merge.entry_match)
    matching = [e for e in entries if rule.matches(200, e)]
    value = value_at(matching[-1], merge.target_path) if matching else None
    if value is not None and merge.target_pattern:
        found = re.search(merge.target_pattern, str(value))
        value = found.group(1) if found else None
    return as_ticket_id(value) if value is not None else None


def _parse_changed(value: Any) -> datetime | None:
    """OTRS's "2026-11-26 21:14:57" (system time, taken as UTC) or an ISO timestamp."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def call_outcome(error: OTRSError | None) -> str:
    """How the call log files a call that ended with `error` (None: it succeeded)."""
    if error is None:
        return ApiCall.Outcome.OK
    if error.auth:
        return ApiCall.Outcome.AUTH_ERROR
    if error.kind == "timeout":
        return ApiCall.Outcome.TIMEOUT
    if error.kind == "transport":
        return ApiCall.Outcome.TRANSPORT_ERROR
    return ApiCall.Outcome.ERROR


def means_missing(exc: OTRSError) -> bool:
    """OTRS's way of saying "no such ticket (for you)"; also HTTP 404 from other systems."""
    return exc.code.rpartition(".")[2] in MISSING_TICKET_KINDS or exc.status_code == 404


@dataclass(frozen=True)
class Article:
    """One article of a ticket, as closingArticleCall reads it."""

    article_id: int | None
    subject: str
    body: str
    number: int | None = None  # its place in the ticket: 1 is the article TicketCreate wrote


def articles_at(spec: ClosingArticleSpec, body: Any) -> list[Article]:
    """The articles an answer lists at the spec's path, in its order (newest first); an
    item that is not an object is skipped, text that is not a string reads as empty."""
    found = value_at(body, spec.article_list_path)
    articles = []
    for item in found if isinstance(found, list) else []:
        if not isinstance(item, dict):
            continue
        subject, text = value_at(item, spec.subject_path), value_at(item, spec.body_path)
        articles.append(
            Article(
                as_ticket_id(value_at(item, spec.article_id_path)),
                subject if isinstance(subject, str) else "",
                text if isinstance(text, str) else "",
                as_ticket_id(value_at(item, spec.article_number_path)),
            )
        )
    return articles
