"""Secrets masked in every form they may take in a URL, a header, a body or a log line.

A secret reaches the call log raw, percent-encoded, form-encoded or JSON-escaped, and under
a key that names it (`"Password": …`, `SessionID=…`); each of those is masked here. The
client encodes a connection's secrets once (SecretForms) and reuses them for all its calls.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

MASK = "********"
# Keys whose values are secrets (case-insensitive): inside an auth block they are stored
# encrypted, in other documents a literal value is refused, and in logs they are masked.
SECRET_KEY_NAMES = frozenset(
    {
        "password",
        "passwd",
        "authorization",
        "cookie",
        "accesstoken",
        "access_token",
        "refreshtoken",
        "refresh_token",
        "clientsecret",
        "client_secret",
        "secret",
        "skey",
        "keyfilepassword",
        "apikey",
        "api_key",
        "token",
        "sessionid",
    }
)
# Shorter secrets are masked by key name only: masking "abc" everywhere would garble logs.
MIN_MASKED_LENGTH = 4
MASKED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


class SecretForms(tuple):
    """Secrets already encoded by secret_forms: a client keeps these for all its calls
    instead of encoding the same few secrets again for every string it masks."""


def secret_forms(secrets: Iterable[str]) -> SecretForms:
    """Each secret as it may appear: raw, percent-encoded, form-encoded, JSON-escaped."""
    if isinstance(secrets, SecretForms):
        return secrets
    forms: set[str] = set()
    for secret in secrets:
        text = str(secret)
        if len(text) < MIN_MASKED_LENGTH:
            continue
        escaped = {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
        forms |= {text, quote(text, safe=""), quote(text), quote_plus(text), *escaped}
    return SecretForms(sorted(forms, key=len, reverse=True))


def _hide(text: str, forms: SecretForms) -> str:
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (and its URL/JSON-encoded forms) in `text` by ********."""
    return _hide(text, secret_forms(secrets))


def _is_masked_key(key: Any, keys: frozenset[str]) -> bool:
    return str(key).lower() in keys


def mask_json(obj: Any, secrets: Iterable[str], keys: Iterable[str] = SECRET_KEY_NAMES) -> Any:
    """Parsed JSON with secret-named keys' values and every secret inside strings masked."""
    forms = secret_forms(secrets)
    lowered = frozenset(k.lower() for k in keys)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: MASK if _is_masked_key(k, lowered) and v not in (None, "") else walk(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return _hide(node, forms)
        return node

    return walk(obj)


_PARAMETER = re.compile(r"(^|[?&;])([^=&;?#\s]+)=([^&;#\s\"]*)")


def mask_query(text: str, secrets: Iterable[str], keys: Iterable[str] = SECRET_KEY_NAMES) -> str:
    """Mask secret-named `name=value` parameters in a URL, query string, form body or log line."""
    lowered = frozenset(k.lower() for k in keys)

    def hide(match: re.Match[str]) -> str:
        if not _is_masked_key(unquote_plus(match.group(2)), lowered):
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}={MASK}"

    return mask(_PARAMETER.sub(hide, text), secrets)


# The password of `scheme://user:password@host`; the documents refuse such URLs, but a
# refused form goes back to the browser with what was typed.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/?#@\s:\"']*:)[^/?#\s\"']+@")


def mask_url_passwords(text: str) -> str:
    """`user:********@host` for every `user:password@host` of a URL in `text`."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def mask_url(url: str, secrets: Iterable[str], keys: Iterable[str] = SECRET_KEY_NAMES) -> str:
    return mask_query(mask_url_passwords(url), secrets, keys)


def mask_headers(headers: Mapping[str, str], secrets: Iterable[str]) -> dict[str, str]:
    """Authorization, Cookie and X-OTRS-Header-* entirely; other values by secret."""
    masked = {}
    for name, value in headers.items():
        lower = name.lower()
        hidden = lower in MASKED_HEADERS or lower.startswith("x-otrs-header-")
        masked[name] = MASK if hidden else mask(str(value), secrets)
    return masked


def mask_body(
    text: str, secrets: Iterable[str], keys: Iterable[str], content_type: str = ""
) -> str:
    """A request or response body: as JSON when it parses, else as a form or as plain text."""
    try:
        return json.dumps(mask_json(json.loads(text), secrets, keys), ensure_ascii=False)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to walk as JSON
        if "x-www-form-urlencoded" in content_type:
            return mask_query(text, secrets, keys)
        return mask(text, secrets)


class Masker:
    """What one client masks in its call log: the connection's secrets (read once per
    client, when first needed, not once per call), every token the client has sent, and
    the keys its auth blocks name in maskInLogs besides SECRET_KEY_NAMES."""

    def __init__(self, read_secrets: Callable[[], Iterable[str]], keys: Iterable[str]) -> None:
        self._read_secrets = read_secrets
        self._known: list[str] | None = None
        self.tokens: set[str] = set()
        self._forms: tuple[int, SecretForms] | None = None  # (tokens seen, their forms)
        self.keys = SECRET_KEY_NAMES | {k.lower() for k in keys}

    def forms(self, extra: Iterable[str] = ()) -> SecretForms:
        """Everything to mask, encoded; `extra` adds secrets for one call only."""
        if self._known is None:
            self._known = list(self._read_secrets())
        extra = tuple(extra)
        if extra or self._forms is None or self._forms[0] != len(self.tokens):
            forms = secret_forms([*self._known, *self.tokens, *extra])
            if extra:
                return forms
            self._forms = (len(self.tokens), forms)
        return self._forms[1]

    def request(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        content_type: str,
        forms: SecretForms | None = None,
    ) -> dict:
        """A request's url, headers and body as the call log may show them."""
        forms = self.forms() if forms is None else forms
        text = body.decode("utf-8", errors="replace") if body else ""
        return {
            "url": mask_url(url, forms, self.keys),
            "headers": mask_headers(headers, forms),
            "body": mask_body(text, forms, self.keys, content_type) if text else "",
        }

    def body(self, text: str, forms: SecretForms) -> str:
        return mask_body(text, forms, self.keys)


class _MaskParametersFilter(logging.Filter):
    """urllib3 logs every request line, query string included, at DEBUG: mask credentials there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_query(message, ())
        if masked != message:
            record.msg, record.args = masked, ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_MaskParametersFilter())
