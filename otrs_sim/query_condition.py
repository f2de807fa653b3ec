"""Znuny's search-string language for text criteria (Kernel/System/DB.pm QueryCondition),
as TicketSearch applies it to Title, TicketNumber, CustomerID and CustomerUserLogin.

A value is not one LIKE pattern but a small expression: ``&&`` (or ``+`` or ``AND``)
and ``||`` (or ``OR``) join words, parentheses group, ``!`` before a word negates it,
``"…"`` quotes a phrase, ``*`` is ``%`` (``_`` is no wildcard); a word with a wildcard is a LIKE, one without
is an equality (both without case, as MySQL compares). Mixing ``&&`` and ``||`` on one
level matches nothing; unbalanced parentheses match nothing.

The port below follows the Perl step by step and builds the same SQL shape, with each
word's test standing where Znuny writes ``st.title LIKE '…'``; Python then evaluates it
(its ``and``/``or`` bind like SQL's).
"""

from __future__ import annotations

import re
from collections.abc import Callable

SPECIAL = "()&|"


class BrokenQuery(Exception):
    """The SQL Znuny would build is not valid: the whole search fails."""


def _normalise(value: str) -> tuple[str, dict[str, str]]:
    value = value.strip()
    if not re.match(r"\(", value) or not re.search(r"(?<!\\)\)$", value):
        value = f"({value})"
    phrases: dict[str, str] = {}

    def keep(found: re.Match) -> str:
        marker = f"###{len(phrases) + 1}###"
        phrases[marker] = found.group(1)
        return marker

    value = re.sub(r'"(.+?)"', keep, value)
    value = re.sub(r"(?<!\\)\(\s*(?<!\\)\)", "", value)
    value = re.sub(r"\s+", " ", value)
    value = value.replace("+", "&&")
    value = re.sub(r"(\s|(?<!\\)\)|(?<!\\)\()AND(\s|(?<!\\)\(|(?<!\\)\))", r"\1&&\2", value)
    value = re.sub(r"(\s|(?<!\\)\)|(?<!\\)\()OR(\s|(?<!\\)\(|(?<!\\)\))", r"\1||\2", value)
    value = value.replace("*", "%")
    value = re.sub(r"%\s*%", "%", value)
    value = value.replace("%!%", "!%").replace("%!", "!%")
    value = re.sub(r"(&&|\|\|)(?<!\\)\)$", ")", value)
    value = re.sub(r"^(?<!\\)\((&&|\|\|)", "(", value)
    value = re.sub(r"\s((?<!\\)\(|(?<!\\)\)|\||(?<!\\)&)", r"\1", value)
    value = re.sub(r"((?<!\\)\(|(?<!\\)\)|\||(?<!\\)&)\s", r"\1", value)
    return value, phrases


def _word_test(word: str, negated: bool) -> Callable[[str], bool]:
    folded = word.lower()
    if "%" in word:
        # Znuny's Quote(…, "Like") escapes "_": only "%" is a wildcard.
        regex = re.compile("".join(".*" if ch == "%" else re.escape(ch) for ch in folded), re.S)

        def test(text: str) -> bool:
            return regex.fullmatch(text.lower()) is not None
    else:

        def test(text: str) -> bool:
            return text.lower().rstrip(" ") == folded.rstrip(" ")  # MySQL pads with spaces

    return (lambda text: not test(text)) if negated else test


def query_condition(value: str) -> Callable[[str], bool]:
    """A test of a field's text for one criterion value; raises BrokenQuery when the SQL
    Znuny would build cannot run."""
    chars, phrases = _normalise(value)
    sql = ""
    tests: list[Callable[[str], bool]] = []
    word, negated, backslash = "", False, False
    opened = closed = 0
    for pos, ch in enumerate(chars):
        following = chars[pos + 1] if pos + 1 < len(chars) else ""
        if backslash:
            word += ch
            backslash = False
            continue
        if ch == "\\" and following and (following in SPECIAL or following == "\\"):
            backslash = True
            continue
        if word == "" and ch == "!":
            negated = True
            continue
        if ch in "&|":
            if pos >= 1 and chars[pos - 1] == ch:
                continue
            if not following or following != ch:
                word += ch
                continue
        elif ch not in SPECIAL:
            word += ch
            continue
        if word != "":
            word = word.replace("\\", "")
            word = phrases.get(word, word)
            word = word.replace("*", "%").replace("%%", "%").replace("%%", "%")
            tests.append(_word_test(word, negated))
            sql += f"(_t[{len(tests) - 1}]) "
            word, negated = "", False
        if following:
            if ch == "&" and following == "&":
                if sql.endswith(" OR "):
                    return lambda text: False  # Znuny: "1=0", both AND and OR
                if not sql.endswith(" AND "):
                    sql += " AND "
            elif ch == "|" and following == "|":
                if sql.endswith(" AND "):
                    return lambda text: False
                if not sql.endswith(" OR "):
                    sql += " OR "
        if ch == "(":
            if sql and not re.search(r"(?: (?:AND|OR) |\(\s*)$", sql):
                sql += " AND "
            sql += ch
            opened += 1
        if ch == ")":
            sql += ch
            after = chars[pos + 1 : pos + 3]
            if pos < len(chars) - 1 and following != ")" and after not in ("&&", "||"):
                sql += " AND "
            closed += 1
    if opened != closed:
        return lambda text: False
    expression = sql.replace(" AND ", " and ").replace(" OR ", " or ")
    try:
        code = compile(expression, "<query>", "eval")
    except SyntaxError:
        raise BrokenQuery(value) from None

    def evaluate(text: str) -> bool:
        values = [test(text) for test in tests]
        return bool(eval(code, {"__builtins__": {}}, {"_t": values}))

    if not tests:
        raise BrokenQuery(value)  # "()" is no SQL condition
    return evaluate
