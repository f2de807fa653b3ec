"""One collector for "everything that is wrong with this input", each problem with its place.

Documents, packages and API bodies are checked completely before anyone is answered, so
an admin or a caller fixes every mistake in one round instead of one per try. They all
collect into `Problems` and hand it out in the shape their caller needs: lines for a page
or a command, a where → messages map for a form or an API answer.
"""

from __future__ import annotations

from collections.abc import Iterator


class Problems:
    """The problems found so far, in the order found; false while there are none."""

    def __init__(self) -> None:
        self._found: list[tuple[str, str]] = []

    def add(self, where: str, message: str) -> None:
        """Record one problem; `where` names its place (a JSON path, a file, a field) or is ""."""
        self._found.append((where, message))

    def __bool__(self) -> bool:
        return bool(self._found)

    def __len__(self) -> int:
        return len(self._found)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._found)

    def as_fields(self) -> dict[str, list[str]]:
        """where → its messages, for a form or an API answer that marks each wrong field."""
        fields: dict[str, list[str]] = {}
        for where, message in self._found:
            fields.setdefault(where, []).append(message)
        return fields

    def as_lines(self, prefix: str = "") -> list[str]:
        """`<prefix>: <where>: <message>` for each problem, leaving out the empty parts."""
        return [
            ": ".join(part for part in (prefix, where, message) if part)
            for where, message in self._found
        ]
