"""The call engine: the only module that imports requests.

It renders a connection's documents into HTTP requests (calls.py), sends them through one
requests.Session per connection and thread, has each answer judged (errors.py: OTRS
reports business errors as HTTP 200), and writes one masked ApiCall row per HTTP call
(calls.py, masking.py). Every failure becomes an OTRSError.

Where it connects is checked before each request and again for each address a host name
resolves to (addresses.py), and each exchange ends by its deadline (deadline.py), however
slowly OTRS drips its answer.

Retries happen in one layer each: idempotent GETs are retried here (ConfigJSON
retryCount); a refused session is renewed and the call repeated (maxRefreshTryCount);
POST/PATCH are never repeated here, the task layer does that with reconcile-before-create.

Reference: shared/reference/otrs-genericinterface.md (§3 responses and errors, §13).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from django.utils import timezone
from urllib3 import ProxyManager

from . import addresses, auth, correlation, deadline, pinning, statuses, templating
from .calls import (
    CheckResult,
    CreatedTicket,
    Reconciled,
    Request,
    encode_body,
    fingerprint,
    masked_request,
    preview_value,
    record,
    search_probe,
    validated_documents,
)
from .crypto import SecretUnreadable
from .documents import (
    AuthSpec,
    CallSpec,
    ConfigSpec,
    Documents,
)
from .errors import (
    MAX_BODY_BYTES,
    Answer,
    Article,
    OTRSError,
    TicketStatus,
    articles_at,
    as_ticket_id,
    check_test_answer,
    ids_at,
    judge,
    judge_login,
    value_at,
)
from .masking import MASK, Masker, mask
from .models import ApiCall, Connection
from .paths import get_path
from .spec import SpecError

logger = logging.getLogger(__name__)

USER_AGENT = "OTRS-Bridge/0.1"
# What a connection test may take in all, logins and retries included: it runs inside a web
# request, and gunicorn ends a worker that has not answered in 30 s.
CHECK_SECONDS = 20.0
# Where the answer of the call that gives the ticket id carries the id of the article
# TicketCreate wrote (OTRS and Znuny answer {"TicketID", "TicketNumber", "ArticleID"}).
CREATED_ARTICLE_ID_PATH = "ArticleID"


# --- one HTTP exchange ----------------------------------------------------------------------


_sessions = threading.local()


class _Adapter(requests.adapters.HTTPAdapter):
    """Every connection through _connect_checked and under its call's deadline, also the
    connection to a proxy (which then resolves the ticket system's name itself)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = pinning.POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, ProxyManager):
            manager.pool_classes_by_scheme = pinning.POOLS
        return manager


class _Session(requests.Session):
    """A Session that reads the proxy environment once per host, not on every request.

    requests re-reads os.environ (proxies, no_proxy, netrc, CA bundle) for each request
    when `trust_env` is on, which costs more than building the request itself. Here:
    HTTP(S)_PROXY and NO_PROXY are read per host, when the session first meets it;
    REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) is used only when the connection verifies TLS
    and names no CA bundle of its own (requests let it override both, even verifyTls
    false); ~/.netrc is never read. A session lives per thread and connection, so a
    changed environment applies to new sessions (a worker restart).
    """

    def __init__(self, config: ConfigSpec) -> None:
        super().__init__()
        self.trust_env = False
        self.headers["User-Agent"] = USER_AGENT
        adapter = _Adapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        env_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if config.ca_bundle:
            self.verify = config.ca_bundle
        elif config.verify_tls and env_bundle:
            self.verify = env_bundle
        else:
            self.verify = config.verify_tls
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}

    def proxies_for(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._proxies.get(key)
        if found is None:
            found = self._proxies[key] = requests.utils.get_environ_proxies(url)
        return found


def _http_session(connection: Connection, config: ConfigSpec, fingerprint: str) -> _Session:
    """This thread's Session for `connection`; a new one once its documents change."""
    cache: dict[int, tuple[str, _Session]] = getattr(_sessions, "cache", None) or {}
    _sessions.cache = cache
    cached = cache.get(connection.pk)
    if cached and cached[0] == fingerprint:
        return cached[1]
    if cached:
        cached[1].close()
    session = _Session(config)
    cache[connection.pk] = (fingerprint, session)
    return session


def _transport_error(
    exc: requests.RequestException, request: Request, config: ConfigSpec
) -> OTRSError:
    """Turn a requests exception into an OTRSError an operator can read."""
    sent = request.method != "GET"
    parts = urlsplit(request.url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if isinstance(exc, requests.ConnectTimeout):
        return OTRSError(
            f"OTRS did not accept a connection within {config.connect_timeout:g} s (connect timeout)",
            kind="timeout",
        )
    if isinstance(exc, requests.ReadTimeout) or "Read timed out" in repr(exc):
        return OTRSError(
            f"OTRS did not answer within {config.read_timeout:g} s (read timeout)",
            kind="timeout",
            outcome_unknown=sent,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return OTRSError(
            f"TLS verification failed for {where}: {exc}", permanent=True, kind="transport"
        )
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return OTRSError(f"The URL is not valid: {exc}", permanent=True, kind="transport")
    detail = repr(exc)
    raw_page = re.search(r"BadStatusLine\((['\"])(.*?)\1\)", detail)
    if raw_page:
        return OTRSError(
            f"OTRS answered without an HTTP status line (a raw error page): {raw_page.group(2)[:200]}",
            kind="transport",
            outcome_unknown=sent,
        )
    if "Connection refused" in detail or "Errno 111" in detail:
        return OTRSError(f"Connection refused by {where}", kind="transport")
    if "NameResolutionError" in detail or "Name or service not known" in detail:
        return OTRSError(f"Cannot resolve the host name {parts.hostname}", kind="transport")
    if "reset" in detail.lower() or "RemoteDisconnected" in detail or "aborted" in detail.lower():
        return OTRSError(
            f"OTRS closed the connection to {where} without an answer",
            kind="transport",
            outcome_unknown=sent,
        )
    return OTRSError(f"Cannot reach OTRS at {where}: {exc}", kind="transport", outcome_unknown=sent)


# --- the client -----------------------------------------------------------------------------

Judge = Callable[[Answer], Any]


class TicketClient:
    """Create tickets, find them again, and read their states, for one Connection.

    Use one instance per unit of work and thread. Every method raises OTRSError only.
    With `defer_logging`, the ApiCall rows are kept in `pending_calls` for the caller to
    save in bulk (see `take_calls`) instead of one INSERT per call.
    """

    def __init__(self, connection: Connection, *, defer_logging: bool = False) -> None:
        self.connection = connection
        self.defer_logging = defer_logging
        self.pending_calls: list[ApiCall] = []
        # The tokens this client sent, by auth block, reused while fresh: reading and
        # decrypting the ConnectionToken row for every call costs more than the call.
        self._tokens: dict[str, auth.Token] = {}
        self.fingerprint = fingerprint(connection)
        try:
            self.documents: Documents = validated_documents(connection, self.fingerprint)
        except SpecError as exc:
            raise OTRSError(
                f"The documents of connection {connection.name} are invalid: "
                + "; ".join(exc.errors),
                permanent=True,
            ) from None
        except SecretUnreadable as exc:
            raise OTRSError(str(exc), permanent=True) from None
        self.config = self.documents.config
        # Exchanges are kept only while test_connection records them: a poll cycle makes
        # thousands of calls with one client, and keeping each would grow without bound.
        self.exchanges: list[dict] | None = None
        # While test_connection runs: when its time is up (see CHECK_SECONDS).
        self._check_until: float | None = None
        auths = self.documents.connection.auths.values()
        self.masker = Masker(connection.secret_values, (k for a in auths for k in a.mask_in_logs))

    # --- public operations ----------------------------------------------------------------

    def create_ticket(self, context: dict, *, ref: str = "") -> CreatedTicket:
        """Run the CreateTicketJSON calls; later calls see `${response.<call>.message.…}`."""
        create = self.documents.create
        responses: dict[str, dict] = {}
        for call in create.calls:
            required = create.ticket_id_path if call.name == create.ticket_id_call else ""
            try:
                body = self._run(
                    call, {**context, "response": responses}, ref=ref, required_path=required
                )
            except OTRSError as exc:
                # A later call failing does not undo what an earlier call did, which may
                # have been creating the ticket (the id may come from a later call): the
                # next attempt must search for it, never create a second one.
                exc.outcome_unknown = exc.outcome_unknown or bool(responses)
                raise
            responses[call.name] = {"message": body}
        ticket_id = as_ticket_id(
            get_path(responses[create.ticket_id_call]["message"], create.ticket_id_path)
        )
        assert ticket_id is not None  # checked by the call's judge
        number = ""
        if create.ticket_number_call:
            number = value_at(
                responses[create.ticket_number_call]["message"], create.ticket_number_path
            )
        article_id = as_ticket_id(
            value_at(responses[create.ticket_id_call]["message"], CREATED_ARTICLE_ID_PATH)
        )
        return CreatedTicket(
            ticket_id, str(number or "") or self._number_of(ticket_id, ref), article_id
        )

    def find_ticket(self, context: dict, *, ref: str = "") -> CreatedTicket | None:
        """The ticket carrying `context["correlationKey"]`; None when OTRS has none."""
        return self.reconcile(context, ref=ref).ticket

    def reconcile(self, context: dict, *, ref: str = "") -> Reconciled:
        """Search for the task's correlation key and adopt only a hit that carries it
        (correlation.py); `notes` says why other hits were not adopted."""
        found = correlation.reconcile(
            self.documents.create,
            context,
            run=lambda call, variables: self._run(call, variables, ref=ref),
            read=lambda call, ids, path: statuses.ticket_nodes(
                lambda c, variables: self._run(c, variables, ref=ref), call, ids, path
            ),
        )
        ticket = found.ticket
        if ticket is not None and not ticket.ticket_number:
            found = replace(
                found, ticket=replace(ticket, ticket_number=self._number_of(ticket.ticket_id, ref))
            )
        return found

    def changed_tickets(self, since: datetime, now: datetime, *, ref: str = "") -> list[int] | None:
        """The ids of the tickets OTRS changed after `since` (changeSearchCall), asked at
        `now`; None when the answer may have been cut short, so it cannot be trusted."""
        change = self.documents.status.change_search
        assert change is not None
        body = self._run(change.call, change.variables(since, now), ref=ref)
        ids = ids_at(body, change.ticket_list_path, change.call.name)
        return None if len(ids) >= change.limit else ids

    def ticket_statuses(self, ticket_ids: list[int], *, ref: str = "") -> dict[int, TicketStatus]:
        """The state of each ticket; ids OTRS does not (or no longer) show are left out."""
        return statuses.read(
            self.documents.status,
            self.connection.batch_size,
            ticket_ids,
            lambda call, variables: self._run(call, variables, ref=ref),
        )

    def update_ticket(self, ticket_id: int, note: dict[str, str], *, ref: str = "") -> int | None:
        """Add an article to a ticket, and set its state unless `note["state"]` is empty
        (updateTicketCall); the new article's id when the answer gives one. Never repeated
        here: the note's own retries do that."""
        update = self.documents.status.update
        if update is None:
            raise OTRSError(
                f"The TicketStatusJSON of connection {self.connection.name} has no "
                "updateTicketCall; re-import the package to add notes to tickets",
                permanent=True,
            )
        body = self._run(update.call, {"ticketID": ticket_id, "note": note}, ref=ref)
        return as_ticket_id(value_at(body, update.article_id_path))

    def closing_articles(self, ticket_id: int, *, ref: str = "") -> list[Article]:
        """A ticket's newest articles, newest first (closingArticleCall); none without one."""
        spec = self.documents.status.closing_article
        if spec is None:
            return []
        return articles_at(spec, self._run(spec.call, {"ticketID": ticket_id}, ref=ref))

    def test_connection(self) -> CheckResult:
        """Log in, then run testConnectionParams or a TicketSearch with Limit=1."""
        self.exchanges = []
        started = time.monotonic()
        self._check_until = started + CHECK_SECONDS
        auth_spec = self._main_auth()
        try:
            done = []
            if auth_spec.refreshable:
                self.token(auth_spec, ref="test-connection", force=True)
                done.append(
                    f"logged in as {auth_spec.login_user}" if auth_spec.login_user else "logged in"
                )
            if auth_spec.test_connection:
                test = auth_spec.test_connection
                check_test_answer(test, self._run(test.call, {}, ref="test-connection"))
                done.append("ran the test call")
            else:
                self._run(search_probe(self.documents, auth_spec), {}, ref="test-connection")
                done.append("searched tickets")
        except OTRSError as exc:
            return CheckResult(False, exc.message, self.exchanges)
        finally:
            self._check_until = None
        elapsed = round((time.monotonic() - started) * 1000)
        return CheckResult(True, f"{' and '.join(done)} in {elapsed} ms", self.exchanges)

    def preview_create(self, context: dict) -> list[dict]:
        """The requests create_ticket would send, masked, without sending or logging in."""
        previews = []
        for call in self.documents.create.calls:
            auth_spec = self.documents.connection.auths[call.connection]
            call_context = self._call_context({**context, "response": {}}, auth_spec, MASK)
            request = self._prepare(call, call_context, auth_spec, MASK, fallback=preview_value)
            previews.append(masked_request(self.masker, request, call.http_content_type))
        return previews

    # --- calls with sessions ----------------------------------------------------------------

    def take_calls(self) -> list[ApiCall]:
        """The deferred ApiCall rows logged since the last take (unsaved)."""
        calls, self.pending_calls = self.pending_calls, []
        return calls

    def _main_auth(self) -> AuthSpec:
        return self.documents.connection.auths[self.documents.create.calls[0].connection]

    def token(
        self, auth_spec: AuthSpec, *, ref: str, force: bool = False, seen: int | None = None
    ) -> auth.Token:
        """The token to send for `auth_spec` (see auth.current_token); logs in through this client."""
        kept = self._tokens.get(auth_spec.name)
        if kept is not None and not force and kept.fresh(timezone.now()):
            return kept
        try:
            token = auth.current_token(
                self.connection,
                auth_spec,
                login=lambda: self._login(auth_spec, ref),
                lease_seconds=self.config.deadline + 5,
                force_refresh=force,
                seen_version=seen,
            )
        except auth.TokenUnavailable as exc:
            raise OTRSError(exc.message, auth=exc.auth) from None
        if token.value:
            self.masker.tokens.add(token.value)
        self._tokens[auth_spec.name] = token
        return token

    def _call_context(self, context: dict, auth_spec: AuthSpec, token: str) -> dict:
        return {**context, "access_token": token, "connection": auth_spec.properties}

    def _run(self, call: CallSpec, context: dict, *, ref: str, required_path: str = "") -> Any:
        """Send one call with the auth block's token; on an auth error renew it and repeat."""
        auth_spec = self.documents.connection.auths[call.connection]
        token = self.token(auth_spec, ref=ref)
        refreshes = 0
        while True:
            request = self._prepare(
                call, self._call_context(context, auth_spec, token.value), auth_spec, token.value
            )
            try:
                return self._send(
                    request, lambda a: judge(call, auth_spec, a, required_path), ref=ref
                )
            except OTRSError as exc:
                if not exc.auth or exc.permanent:
                    raise
                if not auth_spec.refreshable or refreshes >= auth_spec.max_refresh_try_count:
                    raise self._refused(exc, refreshes) from None
                refreshes += 1
                token = self.token(auth_spec, ref=ref, force=True, seen=token.version)

    def _refused(self, exc: OTRSError, refreshes: int) -> OTRSError:
        """An auth error that renewing the session did not heal: stop, and flag the connection."""
        after = f" after {refreshes} new session(s)" if refreshes else ""
        message = f"OTRS refused the request{after}: {exc.message}"
        Connection.objects.filter(pk=self.connection.pk).update(
            last_error=message, last_error_at=timezone.now()
        )
        return OTRSError(
            message, permanent=True, auth=True, code=exc.code, status_code=exc.status_code
        )

    def _login(self, auth_spec: AuthSpec, ref: str) -> str:
        """Run the token call (e.g. OTRS SessionCreate) and return the raw token."""
        assert auth_spec.token_call is not None
        context = {"connection": auth_spec.properties}
        request = self._prepare(auth_spec.token_call, context, auth_spec, "")
        return self._send(request, lambda a: judge_login(auth_spec, a), ref=ref, secret_result=True)

    def _prepare(
        self,
        call: CallSpec,
        context: dict,
        auth_spec: AuthSpec,
        token: str,
        *,
        fallback: templating.Fallback | None = None,
    ) -> Request:
        """Render a call into the exact request to send."""
        where = f"{call.name} "
        try:
            url = templating.render_url(call.url, context, where=where + "url", fallback=fallback)
            headers = templating.render_headers(
                call.http_headers, context, where=where + "httpHeaders", fallback=fallback
            )
            body = None
            if call.http_params is not None:
                params = templating.render(
                    call.http_params, context, where=where + "httpParams", fallback=fallback
                )
                body = encode_body(params, call.http_content_type)
                headers.setdefault("Content-Type", call.http_content_type)
        except templating.TemplateError as exc:
            raise OTRSError(str(exc), permanent=True) from None
        if auth_spec.auth_header_name and token and call is not auth_spec.token_call:
            headers.setdefault(auth_spec.auth_header_name, token)
        if auth_spec.auth_type == "basic" and auth_spec.login_user:
            password = next(
                (v for k, v in auth_spec.properties.items() if k.lower() == "password"), ""
            )
            pair = f"{auth_spec.login_user}:{password}".encode()
            headers.setdefault("Authorization", "Basic " + base64.b64encode(pair).decode())
        return Request(call.name, call.http_method, url, headers, body)

    # --- statuses ---------------------------------------------------------------------------

    def _number_of(self, ticket_id: int, ref: str) -> str:
        """The ticket number from the status call, when the create or search answer lacks it.

        The ticket exists by now: a failure here must not look like a failed create (the
        caller would create it again), so it only leaves the number empty for polling to fill.
        """
        try:
            found = self.ticket_statuses([ticket_id], ref=ref).get(ticket_id)
        except OTRSError:
            return ""
        return found.ticket_number if found else ""

    # --- sending and logging ----------------------------------------------------------------

    def _send(
        self, request: Request, judge: Judge, *, ref: str, secret_result: bool = False
    ) -> Any:
        """Send with the client's retries: only GETs, only transient failures."""
        tries = 1 + (self.config.retry_count if request.method == "GET" else 0)
        for attempt in range(1, tries + 1):
            try:
                return self._exchange(request, judge, ref=ref, secret_result=secret_result)
            except OTRSError as exc:
                pause = self.config.retry_wait * attempt
                if exc.permanent or exc.auth or attempt == tries:
                    raise
                if self._check_until is not None and time.monotonic() + pause >= self._check_until:
                    raise  # a connection test's time would be up before another try answers
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _exchange(self, request: Request, judge: Judge, *, ref: str, secret_result: bool) -> Any:
        """One HTTP request and its judgement, logged either way."""
        started = time.monotonic()
        answer = None
        try:
            answer = self._transmit(request)
            result = judge(answer)
        except OTRSError as exc:
            exc.message = mask(exc.message, self.masker.forms())
            self._log(request, answer, exc, started, ref)
            raise
        self._log(
            request,
            answer,
            None,
            started,
            ref,
            extra_secrets=(str(result),) if secret_result else (),
        )
        return result

    def _transmit(self, request: Request) -> Answer:
        problem = addresses.url_problem(request.url)
        if problem:
            raise OTRSError(f"{request.call_name} url: {problem}", permanent=True, kind="transport")
        seconds, late = self._time_left(request.method)
        if seconds <= 0:
            raise late
        session = _http_session(self.connection, self.config, self.fingerprint)
        try:
            with (
                deadline.limit(seconds) as limit,
                session.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    data=request.body,
                    proxies=session.proxies_for(request.url),
                    timeout=(self.config.connect_timeout, self.config.read_timeout),
                    allow_redirects=False,
                    stream=True,
                ) as response,
            ):
                content = b""
                for chunk in response.iter_content(64 * 1024):
                    content += chunk
                    if len(content) > MAX_BODY_BYTES:
                        break
                # A body read to the end of the connection looks complete when cut short.
                if limit.expired:
                    raise late
                return Answer(
                    response.status_code, response.headers, content, len(content) > MAX_BODY_BYTES
                )
        except addresses.RefusedAddress as exc:
            proxied = session.proxies_for(request.url).get(urlsplit(request.url).scheme)
            message = f"The proxy for this URL: {exc.message}" if proxied else exc.message
            raise OTRSError(message, permanent=True, kind="transport") from None
        except requests.RequestException as exc:
            if limit.expired:
                raise late from None
            raise _transport_error(exc, request, self.config) from None

    def _time_left(self, method: str) -> tuple[float, OTRSError]:
        """How long the next exchange may take, and the error to raise when it takes longer."""
        seconds = self.config.deadline
        message = (
            f"OTRS sent no complete answer within {seconds:g} s "
            "(the call's deadline: connectTimeout + readTimeout)"
        )
        if self._check_until is not None and self._check_until - time.monotonic() < seconds:
            seconds = self._check_until - time.monotonic()
            message = (
                "OTRS sent no complete answer before the connection test's "
                f"{CHECK_SECONDS:g} s ran out"
            )
        # A create that ran out of time may have been committed: the next attempt searches.
        return seconds, OTRSError(message, kind="timeout", outcome_unknown=method != "GET")

    def _log(
        self,
        request: Request,
        answer: Answer | None,
        error: OTRSError | None,
        started: float,
        ref: str,
        extra_secrets: Iterable[str] = (),
    ) -> None:
        """Write the ApiCall row and a log line, both masked."""
        call, row = record(
            self.connection,
            self.masker,
            request,
            answer,
            error,
            duration_ms=round((time.monotonic() - started) * 1000),
            ref=ref,
            extra_secrets=extra_secrets,
        )
        if self.defer_logging:
            self.pending_calls.append(call)
        else:
            call.save()
        if self.exchanges is not None:
            self.exchanges.append(row)
        level = logging.INFO if error is None else logging.WARNING
        logger.log(
            level,
            "%s %s %s -> %s in %d ms%s",
            row["call"],
            row["method"],
            row["url"],
            row["status_code"] or row["outcome"],
            row["duration_ms"],
            f": {row['error']}" if error else "",
        )


# --- callbacks ------------------------------------------------------------------------------
# An API client's callback URL is not OTRS, but it is an outgoing HTTP call all the same: it
# goes through the same address checks, pinned sockets and deadline, so this module stays
# the only one that speaks HTTP.

_CALLBACK_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Posted:
    """How one callback POST went: the HTTP status (None when there was no answer) or why
    it failed, and how long it took."""

    status_code: int | None
    error: str
    ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post_callback(url: str, body: bytes, headers: dict[str, str], *, seconds: float) -> Posted:
    """POST `body` to `url` once: checked addresses only, no redirects, no proxy, within
    `seconds` in all (connecting within at most 5 of them). Never raises."""
    started = time.monotonic()

    def done(status_code: int | None, error: str = "") -> Posted:
        return Posted(status_code, error, round((time.monotonic() - started) * 1000))

    problem = addresses.url_problem(url)
    if problem:
        return done(None, f"the callback URL {problem}")
    connect = min(5.0, seconds)
    with requests.Session() as session:
        session.trust_env = False
        session.headers["User-Agent"] = USER_AGENT
        for scheme in ("http://", "https://"):
            session.mount(scheme, _Adapter())
        try:
            with (
                deadline.limit(seconds) as limit,
                session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", **headers},
                    timeout=(connect, seconds),
                    allow_redirects=False,
                    stream=True,
                ) as response,
            ):
                read = 0
                for chunk in response.iter_content(16 * 1024):
                    read += len(chunk)
                    if read > _CALLBACK_ANSWER_BYTES:
                        break  # the answer is not used; a receiver may not make us read more
                if limit.expired:
                    return done(None, f"no complete answer within {seconds:g} s")
                return done(response.status_code)
        except addresses.RefusedAddress as exc:
            return done(None, exc.message)
        except requests.RequestException as exc:
            if limit.expired:
                return done(None, f"no complete answer within {seconds:g} s")
            host = urlsplit(url).hostname
            if isinstance(exc, requests.ConnectTimeout):
                return done(
                    None,
                    f"{host} did not accept a connection within {connect:g} s",
                )
            if isinstance(exc, requests.ReadTimeout):
                return done(None, f"{host} did not answer within {seconds:g} s")
            if isinstance(exc, requests.ConnectionError):
                return done(None, f"could not connect to {host}")
            return done(None, f"{type(exc).__name__} sending to {host}")
