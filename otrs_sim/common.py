"""What every GenericInterface operation shares, as Znuny's
Kernel/GenericInterface/Operation/Common.pm does: the ``Context`` an operation runs
in, the ``Result`` it returns, the ``{"Error": ...}`` answer (ReturnError), Auth()
and the value helpers every check uses.

Business errors are ordinary results whose data is ``{"Error": {...}}`` - the
transport sends them with HTTP 200, exactly like Znuny.  ``Result.fault`` is the rare
"operation returned Success => 0" case that Znuny answers with HTTP 500 and a
faultcode/faultstring JSON body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .protocol import perl_true
from .store import Store


@dataclass
class Context:
    """What an operation needs besides its data."""

    store: Store
    session_ttl: float
    session_max_ttl: float
    remote_addr: str = ""
    user_agent: str = ""


@dataclass
class Result:
    data: dict | None = None
    fault: str | None = None
    committed: bool = False  # a write happened (drop_after_commit applies)
    state_changes: list[int] = field(default_factory=list)  # TicketIDs for the webhook


def error(code: str, message: str) -> Result:
    return Result(data={"Error": {"ErrorCode": code, "ErrorMessage": message}})


def trim(values: dict) -> dict:
    """Znuny strips leading/trailing whitespace from every string value."""
    return {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}


def as_text(value) -> str:
    """A value as Perl interpolates it into a string: undef is the empty string."""
    return "" if value is None else str(value)


def authenticate(ctx: Context, data: dict):
    """Common.pm Auth(): a non-empty SessionID alone decides; else UserLogin+Password;
    else CustomerUserLogin+Password (no customer users exist here, so that fails)."""
    session_id = data.get("SessionID")
    if perl_true(session_id):
        if not isinstance(session_id, str):
            return None
        return ctx.store.check_session(session_id, ctx.session_ttl, ctx.session_max_ttl)
    login = data.get("UserLogin")
    if perl_true(login) and isinstance(login, str):
        return ctx.store.authenticate(login, as_text(data.get("Password")))
    return None


def authenticate_for_write(ctx: Context, op: str, data: dict) -> tuple[Result | None, dict]:
    """TicketCreate/Update's Auth(): (error or None, user).

    Unlike the read operations they first check that credentials are present, with
    their own messages, and word a refused login differently.
    """
    problem = _credentials_missing(op, data)
    if problem:
        return problem, {}
    user = authenticate(ctx, data)
    if user is None:
        return error(f"{op}.AuthFail", f"{op}: User could not be authenticated!"), {}
    return None, user


def _credentials_missing(op: str, data: dict) -> Result | None:
    if not (
        perl_true(data.get("UserLogin"))
        or perl_true(data.get("CustomerUserLogin"))
        or perl_true(data.get("SessionID"))
    ):
        return error(
            f"{op}.MissingParameter",
            f"{op}: UserLogin, CustomerUserLogin or SessionID is required!",
        )
    if perl_true(data.get("UserLogin")) or perl_true(data.get("CustomerUserLogin")):
        if not perl_true(data.get("Password")):
            return error(f"{op}.MissingParameter", f"{op}: Password or SessionID is required!")
    return None
