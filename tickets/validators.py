"""What a username and an email address may look like, stated once.

A username becomes part of console links (/identities/<username>/) and of tickets; an
address is handed to the mail server. Both enter through the console form, the API, the
admin and the services that create an Identity, and each of those asks here, so none of
them can let through what another refuses. The completion email asks again before sending,
for addresses stored before these rules (or typed into Django's own user admin).

Each check returns the problem as a sentence ("" when there is none), which the services
and the API put in their answers; `validate_username` and `validate_email_address` are
the same checks as Django validators, for forms.
"""

from __future__ import annotations

import re
import unicodedata

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from . import limits

# One part of a username: the allowed characters, but never "." or ".." alone, so no
# part of a link built from it can climb out of /identities/.
_PART = r"(?:[A-Za-z0-9_@+\-][A-Za-z0-9._@+\-]*|\.[A-Za-z0-9_@+\-][A-Za-z0-9._@+\-]*|\.\.[A-Za-z0-9._@+\-]+)"
# Parts joined by / or \ (DOMAIN/user, DOMAIN\user). ASCII on purpose: the same pattern is
# published in the OpenAPI document, where a JSON Schema regex knows no Unicode classes.
USERNAME_PATTERN = rf"^{_PART}(?:[/\\]{_PART})*$"
_USERNAME = re.compile(USERNAME_PATTERN)
_USERNAME_CHARACTER = re.compile(r"[A-Za-z0-9._@+\-/\\]")
USERNAME_RULE = (
    "a username is letters (a-z, A-Z), digits and . _ @ + -, with / or \\ between its "
    "parts (DOMAIN/user)"
)

# Unicode categories that have no place in an address or a username: controls (CR, LF,
# NUL…), format characters, and line and paragraph separators.
_CONTROL_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}


def has_control(value: str) -> bool:
    return any(unicodedata.category(char) in _CONTROL_CATEGORIES for char in value)


def username_problem(value: str) -> str:
    """Why `value` cannot be a username, as a sentence; "" when it can."""
    if _USERNAME.fullmatch(value):
        return ""
    if has_control(value) or any(char.isspace() for char in value):
        reason = "it holds a space, a line break or another control character"
    elif any(part in (".", "..") for part in re.split(r"[/\\]", value)):
        reason = "no part of it may be . or .."
    elif not _USERNAME_CHARACTER.fullmatch(value[:1]) or value[:1] in "/\\":
        reason = "it must start with a letter, a digit or one of . _ @ + -"
    elif value[-1:] in "/\\" or re.search(r"[/\\]{2}", value):
        reason = "it may not end with / or \\, nor hold two of them in a row"
    else:
        wrong = next((c for c in value if not _USERNAME_CHARACTER.fullmatch(c)), value[:1])
        reason = f"{wrong!r} is not allowed"
    return f"{value[:40]!r} is not a username: {reason}; {USERNAME_RULE}."


def email_problem(value: str) -> str:
    """Why `value` cannot be an email address we send to, as a sentence; "" when it can."""
    if len(value) > limits.EMAIL:
        return f"An email address has at most {limits.EMAIL} characters."
    if has_control(value) or any(char.isspace() for char in value):
        return (
            f"{value!r} is not an email address: it holds a space, a line break or another "
            "control character."
        )
    try:
        validate_email(value)
    except ValidationError:
        return f"{value!r} is not an email address."
    return ""


def validate_username(value: str) -> None:
    """username_problem as a Django validator."""
    problem = username_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid_username")


def validate_email_address(value: str) -> None:
    """email_problem as a Django validator."""
    problem = email_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid_email")
