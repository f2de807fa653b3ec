"""The typed, frozen objects a validated document becomes: what the call engine reads.

`spec.validate_documents` builds them from the four JSON documents after checking every
field, so code holding one of these can trust it without checking again.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .paths import PathNotFound, get_path, iter_strings

# What a ticket state can mean for its task (StatusSpec.outcome_for).
OUTCOMES = ("completed", "discontinued", "failed", "pending", "open")
# A tokenResponsePath starting with this names a response header instead of a body path.
HEADER_TOKEN_PREFIX = "#HEADERS#"


@dataclass(frozen=True)
class ResponseRule:
    """One successResponses/unsuccessResponses entry: status codes and/or path → value matches."""

    status_codes: tuple[int, ...] = ()
    path_values: tuple[tuple[str, Any], ...] = ()

    def matches(self, status_code: int, body: Any) -> bool:
        if self.status_codes and status_code not in self.status_codes:
            return False
        for path, expected in self.path_values:
            try:
                actual = get_path(body, path)
            except PathNotFound:
                return False
            if actual != expected and str(actual) != str(expected):
                return False
        return True


@dataclass(frozen=True)
class CallSpec:
    """One HTTP call of a document, with its templates still unrendered."""

    name: str
    connection: str
    url: str
    http_method: str
    http_params: Any
    http_headers: dict[str, str]
    http_content_type: str
    ticket_id_path: str = ""
    ticket_number_path: str = ""
    success: tuple[ResponseRule, ...] = ()
    unsuccess: tuple[ResponseRule, ...] = ()
    variables: frozenset[str] = frozenset()

    def is_success(self, status_code: int, body: Any) -> bool:
        """No rules: any 2xx. Otherwise at least one rule must match."""
        if not self.success:
            return 200 <= status_code < 300
        return any(rule.matches(status_code, body) for rule in self.success)

    def is_unsuccess(self, status_code: int, body: Any) -> bool:
        return any(rule.matches(status_code, body) for rule in self.unsuccess)


@dataclass(frozen=True)
class TestConnectionSpec:
    """Saviynt's testConnectionParams: one call and how to judge its answer."""

    call: CallSpec
    success_values: tuple[str, ...]
    success_path: str
    errors: tuple[str, ...]
    error_path: str


@dataclass(frozen=True)
class AuthSpec:
    """One block of ConnectionJSON `authentications`. Holds credentials: never render it."""

    name: str
    auth_type: str  # "basic" or "oauth2"
    token_call: CallSpec | None
    token_response_path: str
    token_type: str
    auth_header_name: str
    expiry_errors: tuple[str, ...]
    auth_errors: tuple[str, ...]
    error_path: str
    retry_failure_status_codes: tuple[int, ...]
    max_refresh_try_count: int
    mask_in_logs: tuple[str, ...]
    token_lifetime_seconds: int
    test_connection: TestConnectionSpec | None
    properties: dict[str, Any] = field(repr=False, default_factory=dict)
    access_token: str = field(repr=False, default="")

    @property
    def refreshable(self) -> bool:
        """A token call exists, so an auth error can be healed by logging in again."""
        return self.token_call is not None

    @property
    def login_user(self) -> str:
        """The login name in `properties`, for messages ("logged in as bridge")."""
        for key, value in self.properties.items():
            if key.lower() in ("username", "userlogin", "user", "login"):
                return str(value)
        return ""


@dataclass(frozen=True)
class ConnectionSpec:
    auths: dict[str, AuthSpec]


@dataclass(frozen=True)
class SearchSpec:
    """One searchCall: a search for `${correlationKey}` and where its answer lists the hits.

    `ticket_list_path` names the list of hit ids; without it, the one id at the call's
    ticketidPath is the only hit.
    """

    call: CallSpec
    ticket_list_path: str = ""


@dataclass(frozen=True)
class KeyCheckSpec:
    """keyCheckCall: reads the tickets a search found, to prove each carries the key.

    A search can answer with tickets that are not the task's: an agent may have typed
    the key elsewhere, or OTRS ignored the filter (an unknown parameter is ignored
    silently) and answered with every ticket. A hit is adopted only when the key stands
    as a whole word in a string at (or anywhere under) one of `key_paths` of its ticket.
    """

    call: CallSpec  # takes ${ticketIDs}: the hits, comma-separated
    ticket_list_path: str  # where the answer lists the tickets
    ticket_id_path: str  # the id inside one listed ticket
    key_paths: tuple[str, ...]

    def carries(self, ticket: Any, key: str) -> bool:
        """The key stands in `ticket` at one of key_paths, not as part of a longer word."""
        word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])")
        for path in self.key_paths:
            try:
                found = get_path(ticket, path)
            except PathNotFound:
                continue
            if any(word.search(text) for _, text in iter_strings(found)):
                return True
        return False


@dataclass(frozen=True)
class CreateTicketSpec:
    """The create calls, where the ticket id (and number) come from, and the reconcile search.

    `key_field` names the ticket dynamic field the bridge writes the key into ("" for
    none): the create call that returns the ticket id sends it (spec adds it there).
    """

    calls: tuple[CallSpec, ...]
    ticket_id_call: str
    ticket_id_path: str
    ticket_number_call: str
    ticket_number_path: str
    searches: tuple[SearchSpec, ...] = ()
    key_check: KeyCheckSpec | None = None
    key_field: str = ""

    @property
    def search_call(self) -> CallSpec | None:
        """The first search call (documents mostly have one)."""
        return self.searches[0].call if self.searches else None


@dataclass(frozen=True)
class BatchSpec:
    size: int
    ticket_list_path: str
    ticket_id_path: str


@dataclass(frozen=True)
class MergeTargetSpec:
    """How to learn which ticket a merged ticket was merged into.

    The call (with `${ticketID}`) returns e.g. OTRS's TicketHistory. If `entry_list_path` is
    set, the last entry of that list whose keys match `entry_match` is used; the value at
    `target_path` in it is the target id, or, with `target_pattern`, the regex group 1 of it.
    """

    call: CallSpec
    states: tuple[str, ...]
    entry_list_path: str
    entry_match: tuple[tuple[str, Any], ...]
    target_path: str
    target_pattern: str


# The time format of OTRS's date parameters (TicketLastChangeTimeNewerDate and the like).
OTRS_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class ChangeSearchSpec:
    """changeSearchCall: which tickets changed since a time, so a poll fetches only those.

    The call gets `${changedSince}` (a date in `time_zone`, OTRS's format) or
    `${changedMinutes}` (how far back from the server's own clock, which no time zone or
    clock difference can shift), both reaching `overlap_seconds` before the watermark,
    and `${limit}`. An answer with `limit` ids or more may have been cut short: the poll
    does not trust it and sweeps every open ticket instead.
    """

    call: CallSpec
    ticket_list_path: str
    limit: int
    overlap_seconds: int
    time_zone: str

    def variables(self, since: datetime, now: datetime) -> dict[str, Any]:
        """The call's variables for changes after `since` (aware), asked at `now` (aware)."""
        start = since - timedelta(seconds=self.overlap_seconds)
        minutes = max(1, math.ceil((now - start).total_seconds() / 60))
        return {
            "changedSince": start.astimezone(ZoneInfo(self.time_zone)).strftime(OTRS_TIME_FORMAT),
            "changedMinutes": minutes,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class NoteTemplate:
    """The subject and body of one kind of article the bridge adds to a ticket."""

    subject: str
    body: str


@dataclass(frozen=True)
class UpdateSpec:
    """updateTicketCall (an OTRS TicketUpdate): adds an article to a ticket and, for a cancel,
    sets its state. Takes ${ticketID}, ${note.subject}, ${note.body} and ${note.state}."""

    call: CallSpec
    article_id_path: str  # where the answer gives the new article's id ("" = not read)
    cancel_state: str  # the state a cancel sets; "" adds the note only
    notes: dict[str, NoteTemplate]  # by kind (spec_conversation.NOTE_KINDS)


@dataclass(frozen=True)
class ClosingArticleSpec:
    """closingArticleCall: a ticket's newest articles (newest first), read when it closes
    so the task keeps the agent's reason. Takes ${ticketID}."""

    call: CallSpec
    article_list_path: str
    subject_path: str
    body_path: str
    article_id_path: str
    # Where an article gives its number in the ticket (1 = the first, which TicketCreate
    # wrote); Znuny keeps it when the list is filtered or cut.
    article_number_path: str


@dataclass(frozen=True)
class StatusSpec:
    """The status call and what each OTRS state means for the task."""

    call: CallSpec
    batch: BatchSpec | None
    status_path: str
    done_values: tuple[str, ...]
    discontinue_values: tuple[str, ...]
    status_map: dict[str, str]
    state_type_map: dict[str, str]
    state_type_path: str
    ticket_number_path: str
    changed_path: str
    merge_target: MergeTargetSpec | None
    change_search: ChangeSearchSpec | None = None
    update: UpdateSpec | None = None
    closing_article: ClosingArticleSpec | None = None

    def outcome_for(self, state: str, state_type: str | None = None) -> str | None:
        """completed | discontinued | failed | pending | open, or None when the state is unmapped.

        State names are compared exactly (OTRS spells them lower-case). The state type is a
        fallback through `stateTypeMap`, for custom states of a known type.
        """
        if state in self.done_values:
            return "completed"
        if state in self.discontinue_values:
            return "discontinued"
        if state in self.status_map:
            return self.status_map[state]
        if state_type is not None:
            return self.state_type_map.get(state_type)
        return None


@dataclass(frozen=True)
class ConfigSpec:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retry_count: int = 2
    retry_wait: float = 0.5
    verify_tls: bool = True
    ca_bundle: str = ""

    @property
    def deadline(self) -> float:
        """The most one HTTP exchange may take, connecting included (client.py holds to it):
        the two timeouts bound each wait, not the whole answer."""
        return self.connect_timeout + self.read_timeout


@dataclass(frozen=True)
class Documents:
    connection: ConnectionSpec
    create: CreateTicketSpec
    status: StatusSpec
    config: ConfigSpec
