"""`${...}` substitution inside parsed JSON, so a value can never break a body or run code.

Saviynt builds request bodies by pasting values into a JSON string, so a quote or a
backslash in a user's name breaks the body, and `${...}` may hold Groovy. Here the
template is parsed JSON: each string is rendered on its own and the body is serialized
afterwards, so a value stays a value whatever it holds. Values are substituted once (a
`${` inside a value is left alone), and names are only looked up, never evaluated.
`${name|text}` stands for plain text when the variable is missing or empty, e.g.
`${endpoint.queue|Raw}` for endpoints without a queue attribute.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from .paths import PathNotFound, Reference, get_path, iter_references, split_default

Fallback = Callable[[str], Any]


class TemplateError(ValueError):
    """A variable has no value in the context (or a template is malformed)."""


def lookup(context: dict, name: str) -> Any:
    """The value of `${name}`; a dict with a "_" key stands for that value (`${endpoint}`)."""
    if not name:
        raise PathNotFound(name)  # `${}` must never stand for the whole context
    value = get_path(context, name)
    if isinstance(value, dict) and "_" in value:
        return value["_"]
    return value


def as_text(value: Any) -> str:
    """How a value reads inside a longer string: lists and objects as JSON, null as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _at(where: str, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


def _resolve(inner: str, context: dict, where: str, fallback: Fallback | None) -> Any:
    """The value of `${inner}`; `${name|text}` gives text when name is missing or empty."""
    name, default = split_default(inner)
    try:
        value = lookup(context, name)
    except PathNotFound:
        if default is not None:
            return default
        if fallback is not None:
            return fallback(name)
        raise TemplateError(_at(where, f"${{{name}}} has no value")) from None
    if default is not None and value in (None, ""):
        return default
    return value


@functools.lru_cache(maxsize=4096)
def _references(text: str) -> tuple[Reference, ...]:
    # The same document strings are rendered for every ticket: scan each one once.
    return tuple(iter_references(text))


def render_string(
    text: str,
    context: dict,
    *,
    in_url: bool = False,
    where: str = "",
    fallback: Fallback | None = None,
) -> Any:
    """Render one string. Exactly one `${x}` and nothing else keeps the value's JSON type."""
    try:
        references = _references(text)
    except ValueError as exc:
        raise TemplateError(_at(where, str(exc))) from None
    if not references:
        return text
    alone = len(references) == 1 and (references[0].start, references[0].end) == (0, len(text))
    if alone and not in_url:
        return _resolve(references[0].inner, context, where, fallback)
    pieces = []
    position = 0
    for reference in references:
        value = as_text(_resolve(reference.inner, context, where, fallback))
        pieces.append(text[position : reference.start])
        pieces.append(quote(value, safe="") if in_url else value)
        position = reference.end
    pieces.append(text[position:])
    return "".join(pieces)


def render(
    obj: Any,
    context: dict,
    *,
    where: str = "",
    fallback: Fallback | None = None,
) -> Any:
    """Render every string value inside parsed JSON. Keys are never rendered.

    `where` prefixes error messages (e.g. "CreateTicketJSON call TicketCreate httpParams");
    `fallback(name)` supplies a value for a missing variable instead of raising (previews).
    """
    if isinstance(obj, str):
        return render_string(obj, context, where=where, fallback=fallback)
    if isinstance(obj, dict):
        return {
            key: render(
                value,
                context,
                where=f"{where}.{key}" if where else key,
                fallback=fallback,
            )
            for key, value in obj.items()
        }
    if isinstance(obj, list):
        return [
            render(value, context, where=f"{where}[{index}]", fallback=fallback)
            for index, value in enumerate(obj)
        ]
    return obj


def render_url(
    url: str, context: dict, *, where: str = "", fallback: Fallback | None = None
) -> str:
    """Render a URL template, percent-encoding every substituted value (commas too: `1%2C2`)."""
    return render_string(url, context, in_url=True, where=where, fallback=fallback)


def render_headers(
    headers: dict[str, str], context: dict, *, where: str = "", fallback: Fallback | None = None
) -> dict[str, str]:
    """Render header values as text with CR and LF removed, so a value cannot add a header."""
    rendered = {}
    for key, value in headers.items():
        text = as_text(render_string(value, context, where=f"{where}.{key}", fallback=fallback))
        rendered[key] = text.replace("\r", "").replace("\n", "")
    return rendered
