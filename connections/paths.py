"""JSON paths, `${...}` references, `@NAME@` placeholders and strict JSON parsing.

The scanning that spec (validation), templating (rendering) and packages (import variables)
share, so each of them reads a path or a reference exactly the same way.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
_PATH_SEGMENT = re.compile(r"([^\[\]]*)((?:\[-?\d+\])*)")
_INDEX = re.compile(r"\[(-?\d+)\]")


# --- paths ----------------------------------------------------------------------------------


class PathNotFound(LookupError):
    """A JSON path does not lead to a value in the given data."""

    def __init__(self, path: str) -> None:
        super().__init__(f"nothing at path {path!r}")
        self.path = path


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[str | int, ...]:
    """Split `Ticket[0].State` or `odata~dot#error.code` into keys and list indexes.

    `~dot#` stands for a literal dot inside a key (Saviynt's convention). Raises ValueError
    for a path that is not of this shape.
    """
    if path == "":
        return ()
    steps: list[str | int] = []
    for raw in path.split("."):
        match = _PATH_SEGMENT.fullmatch(raw)
        if match is None or (match.group(1) == "" and not match.group(2)):
            raise ValueError(f"{path!r} is not a valid path (expected keys like a.b[0].c)")
        if match.group(1):
            steps.append(match.group(1).replace("~dot#", "."))
        steps.extend(int(i) for i in _INDEX.findall(match.group(2)))
    return tuple(steps)


def get_path(data: Any, path: str) -> Any:
    """Return the value at `path` in parsed JSON; raise PathNotFound when there is none."""
    node = data
    for step in parse_path(path):
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                raise PathNotFound(path)
        elif not isinstance(node, dict) or step not in node:
            raise PathNotFound(path)
        node = node[step]
    return node


def is_valid_path(path: str) -> bool:
    try:
        parse_path(path)
    except ValueError:
        return False
    return True


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


# --- ${...} references and @NAME@ placeholders ----------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One `${...}` inside a string: where it starts and ends, and the text between the braces."""

    start: int
    end: int
    inner: str


def iter_references(text: str) -> Iterator[Reference]:
    """Yield each `${...}` in `text`, matching nested braces; raise ValueError if one never closes."""
    position = 0
    while (start := text.find("${", position)) != -1:
        depth = 0
        for index in range(start + 1, len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == 0:
                    yield Reference(start, index + 1, text[start + 2 : index])
                    position = index + 1
                    break
        else:
            raise ValueError(f"{text[start : start + 40]!r}: ${{ is never closed")


def iter_strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield (json.path, string) for every string value inside parsed JSON."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from iter_strings(value, join_path(path, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from iter_strings(value, join_path(path, index))


def find_placeholders(obj: Any) -> set[str]:
    """The `@NAME@` placeholders (names without the @) left anywhere in a document."""
    return {name for _, text in iter_strings(obj) for name in _PLACEHOLDER.findall(text)}


def resolve_placeholders(obj: Any, values: dict[str, str]) -> Any:
    """Replace `@NAME@` by `values[NAME]` everywhere; unknown names stay for validation to report.

    An `httpParams` JSON string is parsed first and resolved inside, so a value holding a
    quote cannot break it; a string that does not parse is substituted as text, and
    validation then reports why it does not parse.
    """
    if isinstance(obj, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), obj)
    if isinstance(obj, list):
        return [resolve_placeholders(value, values) for value in obj]
    if isinstance(obj, dict):
        resolved = {}
        for key, value in obj.items():
            if key == "httpParams" and isinstance(value, str) and value.strip():
                try:
                    value = loads_strict(value)
                except ValueError:
                    pass
            resolved[key] = resolve_placeholders(value, values)
        return resolved
    return obj


def split_default(inner: str) -> tuple[str, str | None]:
    """`endpoint.queue|Raw` → ("endpoint.queue", "Raw"): the text after the first `|` is
    used when the variable is missing or empty. No `|`: no default (None)."""
    name, bar, default = inner.partition("|")
    return (name, default) if bar else (inner, None)


# --- strict JSON ----------------------------------------------------------------------------

# How deep any JSON the bridge reads may nest: documents, packages, zip members and API
# bodies alike, declared once. Real documents nest less than ten levels; the bound keeps
# every recursive walk over parsed JSON (json's own, ours, pydantic's) far from Python's
# recursion limit, where it would end in a RecursionError instead of a message.
MAX_JSON_DEPTH = 32


def max_json_chars() -> int:
    """The longest JSON text the bridge reads: a document is never larger than a package."""
    return int(settings.PACKAGE_MAX_BYTES)


# A JSON string (skipped whole, brackets inside it do not count) or a bracket.
_JSON_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def loads_strict(text: str, *, allow_nul: bool = False) -> Any:
    """json.loads that refuses trailing data, duplicate keys, NaN/Infinity, a text longer
    than max_json_chars(), nesting deeper than MAX_JSON_DEPTH and (unless `allow_nul`) a
    NUL character, which PostgreSQL cannot store, in any key or string.

    Raises ValueError with a message that says where, like "not valid JSON at line 1
    column 450 (extra data)" or "nested too deeply at a.b[0].c (more than 32 levels)".
    """
    limit = max_json_chars()
    if len(text) > limit:
        raise ValueError(
            f"{len(text):,} characters, more than the {limit:,} allowed (PACKAGE_MAX_BYTES)"
        )
    try:
        data = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as exc:
        reason = exc.msg[:1].lower() + exc.msg[1:]
        raise ValueError(
            f"not valid JSON at line {exc.lineno} column {exc.colno} ({reason})"
        ) from None
    except RecursionError:
        raise ValueError(_too_deep_in_text(text)) from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    problem = check_tree(data, allow_nul=allow_nul)
    if problem:
        raise ValueError(problem)
    return data


def check_tree(data: Any, *, allow_nul: bool = False) -> str:
    """What is wrong with parsed JSON that loads_strict would refuse ("" when nothing):
    nesting deeper than MAX_JSON_DEPTH or, unless `allow_nul`, a NUL in a key or string.

    Walks with its own stack, so a tree too deep for recursion is still measured.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            children: list[tuple[str | int, Any]] = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            if not allow_nul and isinstance(node, str) and "\x00" in node:
                return f"{path or 'the value'}: contains a NUL character (\\u0000), which cannot be stored"
            continue
        if depth >= MAX_JSON_DEPTH:
            return f"nested too deeply at {path} (more than {MAX_JSON_DEPTH} levels)"
        for key, _ in children:
            if not allow_nul and isinstance(key, str) and "\x00" in key:
                return f"{path or 'the top level'}: the key {key!r} contains a NUL character, which cannot be stored"
        # Reversed onto the stack, so the first problem reported is the first in the text.
        stack.extend((value, join_path(path, key), depth + 1) for key, value in reversed(children))
    return ""


def _too_deep_in_text(text: str) -> str:
    """Where JSON too deep for the parser first goes deeper than MAX_JSON_DEPTH."""
    depth = 0
    for match in _JSON_BRACKET.finditer(text):
        bracket = match.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - text.rfind("\n", 0, match.start())
                return (
                    f"nested too deeply at line {line} column {column} "
                    f"(more than {MAX_JSON_DEPTH} levels)"
                )
        elif bracket in "]}":
            depth -= 1
    return f"nested too deeply (more than {MAX_JSON_DEPTH} levels)"
