"""Accounts that existed before the bridge: importing them into the access inventory.

`import_rows` takes rows (mappings with the COLUMNS as keys) for one endpoint, checks every
one, and writes them in one transaction: missing people are created, accounts and their
entitlements recorded as imported. It never duplicates an account, and importing the same
rows again changes nothing. When any row is wrong, nothing is written and the report lists
every wrong row with its line and the reason; with `partial=True` the good rows are written
and the report lists the rest. The CSV file (`parse_csv`), the admin page and
`manage.py import_accounts` are ways in; any other source of rows can call it the same way.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.db import transaction

from connections.models import Endpoint

from .. import limits
from ..models import Account, AccountEntitlement, Identity
from ..validators import email_problem, has_control, username_problem
from . import governance

log = logging.getLogger(__name__)

COLUMNS = ("username", "email", "first_name", "last_name", "account_name", "entitlements")
REQUIRED = ("username",)
# Entitlements inside their one cell are separated by this.
ENTITLEMENT_SEPARATOR = ";"


class ImportFileError(ValueError):
    """The file as a whole cannot be read (not text, no header, too large): nothing is read."""


@dataclass
class RowProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    endpoint: Endpoint
    rows: int = 0
    identities_created: list[str] = field(default_factory=list)
    accounts_created: list[str] = field(default_factory=list)
    entitlements_added: int = 0
    unchanged: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    written: bool = False

    def __str__(self) -> str:
        verb = "imported" if self.written else "would import"
        text = (
            f"{self.endpoint}: {self.rows} row(s); {verb} {len(self.accounts_created)} new "
            f"account(s), {self.entitlements_added} entitlement(s), "
            f"{len(self.identities_created)} new person(s); {self.unchanged} already known"
        )
        if self.problems:
            text += f"; {len(self.problems)} wrong row(s)"
        return text


@dataclass
class _Row:
    line: int
    username: str
    email: str
    first_name: str
    last_name: str
    account_name: str
    entitlements: list[str]


def _text(row: Mapping, name: str) -> str:
    value = row.get(name)
    return "" if value is None else str(value).strip()


def _check_row(row: Mapping, line: int, endpoint: Endpoint) -> tuple[_Row | None, list[str]]:
    if row.get("problem"):
        return None, [str(row["problem"])]
    problems: list[str] = []
    username = _text(row, "username")
    if not username:
        problems.append("the username is empty")
    elif len(username) > limits.USERNAME:
        problems.append(f"the username is longer than {limits.USERNAME} characters")
    elif username_problem(username):
        problems.append(username_problem(username))
    email = _text(row, "email")
    # The raw cell, not the stripped one: a line break at either end is still a line break.
    raw_email = "" if row.get("email") is None else str(row.get("email"))
    if email and email_problem(raw_email.strip(" ")):
        problems.append(email_problem(raw_email.strip(" ")))
    names = {}
    for name in ("first_name", "last_name"):
        names[name] = _text(row, name)
        if len(names[name]) > limits.PERSON_NAME:
            problems.append(f"{name.replace('_', ' ')} is longer than {limits.PERSON_NAME}")
        elif has_control(names[name]):
            problems.append(f"{name.replace('_', ' ')} holds a line break or a control character")
    account_name = _text(row, "account_name") or username
    if len(account_name) > limits.ACCOUNT_NAME:
        problems.append(f"the account name is longer than {limits.ACCOUNT_NAME} characters")
    elif has_control(account_name):
        problems.append("the account name holds a line break or a control character")
    raw = row.get("entitlements") or []
    cells = raw.split(ENTITLEMENT_SEPARATOR) if isinstance(raw, str) else [str(e) for e in raw]
    entitlements = list(dict.fromkeys(e.strip() for e in cells if e.strip()))
    offered = set(endpoint.entitlements or [])
    unknown = [e for e in entitlements if offered and e not in offered]
    if unknown:
        problems.append(f"{endpoint} does not offer: {', '.join(unknown)[:200]}")
    if any(len(e) > limits.ENTITLEMENT or has_control(e) for e in entitlements):
        problems.append(
            f"an entitlement is longer than {limits.ENTITLEMENT} characters or holds a line break"
        )
    if problems:
        return None, problems
    return _Row(
        line, username, email, names["first_name"], names["last_name"], account_name, entitlements
    ), []


def import_rows(
    *,
    endpoint: Endpoint,
    rows: Iterable[Mapping],
    actor: str,
    partial: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Check `rows` and record their accounts on `endpoint` (see the module docstring).

    A row may carry "line" (its line in the file); otherwise rows count from 1. `actor`
    names who imported, for the log.
    """
    report = ImportReport(endpoint=endpoint)
    good: list[_Row] = []
    seen_accounts: dict[str, int] = {}
    seen_people: dict[str, int] = {}
    for index, row in enumerate(rows, start=1):
        report.rows += 1
        line = int(row.get("line") or index)
        checked, problems = _check_row(row, line, endpoint)
        if checked is not None:
            first = seen_accounts.get(checked.account_name)
            if first is not None:
                problems.append(
                    f"the account {checked.account_name!r} already appears on line {first}"
                )
            other = seen_people.get(checked.username.lower())
            if first is None and other is not None:
                problems.append(
                    f"{checked.username} already has an account on line {other}; one person "
                    f"has one account on {endpoint}"
                )
        if problems:
            report.problems.append(
                RowProblem(line, "; ".join(problem.rstrip(".") for problem in problems))
            )
            continue
        assert checked is not None
        seen_accounts[checked.account_name] = line
        seen_people[checked.username.lower()] = line
        good.append(checked)

    names = [r.username for r in good]
    people = {
        i.username: i
        for start in range(0, len(names), 500)
        for i in Identity.objects.filter(username__in=names[start : start + 500])
    }
    active = {
        a.name: a
        for a in Account.objects.filter(endpoint=endpoint, active=True).select_related("identity")
    }
    held_by_person = {a.identity_id: a for a in active.values()}
    plan: list[tuple[_Row, Account | None]] = []
    for ok in good:
        account = active.get(ok.account_name)
        person = people.get(ok.username)
        if account is not None and account.identity.username != ok.username:
            report.problems.append(
                RowProblem(
                    ok.line,
                    f"the account {ok.account_name!r} on {endpoint} belongs to "
                    f"{account.identity.username}, not {ok.username}",
                )
            )
            continue
        held = held_by_person.get(person.pk) if person else None
        if account is None and held is not None:
            report.problems.append(
                RowProblem(
                    ok.line,
                    f"{ok.username} already has the account {held.name!r} on {endpoint}",
                )
            )
            continue
        plan.append((ok, account))
    report.problems.sort(key=lambda p: p.line)
    granted: dict[int, set[str]] = {}
    for account_id, entitlement in AccountEntitlement.objects.filter(
        account__endpoint=endpoint, account__active=True
    ).values_list("account_id", "entitlement"):
        granted.setdefault(account_id, set()).add(entitlement)
    if (report.problems and not partial) or dry_run:
        _count(report, plan, people, granted, write=False)
        return report
    with transaction.atomic():
        _count(report, plan, people, granted, write=True)
    report.written = True
    log.info("account import by %s: %s", actor, report)
    return report


def _count(
    report: ImportReport,
    plan: list[tuple[_Row, Account | None]],
    people: dict[str, Identity],
    granted: dict[int, set[str]],
    *,
    write: bool,
) -> None:
    """Fill the report's counts from the plan, writing the rows in bulk when `write`."""
    endpoint = report.endpoint
    new_people = [
        Identity(
            username=row.username,
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
        )
        for row, _ in plan
        if row.username not in people
    ]
    report.identities_created = [p.username for p in new_people]
    if write:
        governance.link_new_identities(new_people)
        new_people = Identity.objects.bulk_create(new_people, batch_size=500)
    people.update({p.username: p for p in new_people})
    new_accounts: list[Account] = []
    grants: list[tuple[_Row, Account | None, list[str]]] = []
    for row, account in plan:
        held = granted.get(account.pk, set()) if account is not None else set()
        missing = [e for e in row.entitlements if e not in held]
        report.entitlements_added += len(missing)
        if account is None:
            report.accounts_created.append(row.account_name)
            account = Account(
                identity=people[row.username],
                endpoint=endpoint,
                name=row.account_name,
                origin=Account.Origin.IMPORT,
            )
            new_accounts.append(account)
        elif not missing:
            report.unchanged += 1
        grants.append((row, account, missing))
    if not write:
        return
    Account.objects.bulk_create(new_accounts, batch_size=500)
    AccountEntitlement.objects.bulk_create(
        [
            AccountEntitlement(account=account, entitlement=e)
            for _, account, missing in grants
            for e in missing
        ],
        batch_size=500,
    )


# --- the CSV file --------------------------------------------------------------------------------


def parse_csv(data: bytes) -> list[dict]:
    """The rows of an account CSV, each with its "line" in the file.

    Raises ImportFileError naming what is wrong with the file as a whole: too large, binary,
    not UTF-8, no header, unknown or missing columns, too many rows. A row whose values do
    not match the header gets a "problem" key instead (import_rows reports it).
    """
    if len(data) > limits.IMPORT_MAX_BYTES:
        raise ImportFileError(
            f"The file has {len(data):,} bytes; an import takes at most "
            f"{limits.IMPORT_MAX_BYTES:,} (split it into several files)."
        )
    if b"\x00" in data:
        raise ImportFileError("The file is binary (it holds NUL bytes), not CSV text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFileError(
            f"The file is not UTF-8 text (line {line}, byte "
            f"{exc.start + 1} cannot be read); save it as UTF-8 CSV."
        ) from None
    if not text.strip():
        raise ImportFileError("The file is empty.")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower().replace(" ", "_") for h in next(reader)]
    except csv.Error as exc:
        raise ImportFileError(f"Line 1 (the header) is not CSV: {exc}.") from None
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if unknown or missing or duplicated:
        parts = []
        if unknown:
            parts.append(f"unknown column(s): {', '.join(repr(h[:40]) for h in unknown[:10])}")
        if missing:
            parts.append(f"missing column(s): {', '.join(missing)}")
        if duplicated:
            parts.append(f"column(s) named twice: {', '.join(duplicated)}")
        raise ImportFileError(
            f"The header (line 1) does not fit: {'; '.join(parts)}. The columns are "
            f"{', '.join(COLUMNS)} (only username is required)."
        )
    rows: list[dict] = []
    line = reader.line_num + 1
    try:
        for values in reader:
            start, line = line, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= limits.IMPORT_MAX_ROWS:
                raise ImportFileError(
                    f"The file has more than {limits.IMPORT_MAX_ROWS:,} rows; split it into several files."
                )
            row: dict = {"line": start}
            if len(values) != len(header):
                row["username"] = ""
                row["problem"] = f"it has {len(values)} values, the header names {len(header)}"
            else:
                row.update(zip(header, values, strict=True))
            rows.append(row)
    except csv.Error as exc:
        raise ImportFileError(f"Line {line} is not CSV: {exc}.") from None
    return rows
