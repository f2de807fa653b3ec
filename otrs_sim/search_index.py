"""Znuny 6.5.10's article search index (Kernel/System/Ticket/ArticleSearchIndex/DB.pm),
and how TicketSearch's article criteria match it.

Znuny does not search the article text but one row per article and field, written when
the article is created:

* Subject and Body are "filtered": split on whitespace; the characters
  ``,&<>?"!*|;[]()+$^=`` removed, one of ``':.`` dropped at each end, words without a
  letter or digit dropped; lower-cased; stop words (stopwords.py) and words shorter than
  3 or longer than 30 characters left out; a repeated word kept once; at most 1000 words.
* From, To, Cc and Bcc are only lower-cased, with newlines and tabs as spaces.

A criterion matches ``article_value LIKE '%<value>%'`` (the operation always asks for
``*`` before and after), so a phrase matches only where its words stand side by side
in the filtered text: "jdoe crm" finds "Add access for jdoe on crm", "correlation key
BR-1" does not find "the correlation key BR-1" once "key" stood earlier in the text.
"""

from __future__ import annotations

import re

from .stopwords import STOP_WORDS

# Ticket::SearchIndex::Filters, Ticket::SearchIndex::Attribute (stock values).
_FILTERS = (
    re.compile(r"[,&<>?\"!*|;\[\]()+$^=]"),
    re.compile(r"^[':.]|[':.]$"),
    re.compile(r"^[^\w]+$"),
)
WORD_LENGTH_MIN = 3
WORD_LENGTH_MAX = 30
WORD_COUNT_MAX = 1000

# The article fields TicketSearch takes (MIMEBase_<field>), and whether Znuny filters them.
FIELDS = {"From": False, "To": False, "Cc": False, "Bcc": False, "Subject": True, "Body": True}


def index_text(text: str, *, filtered: bool) -> str:
    """The article_value Znuny stores for one field of one article."""
    if not filtered:  # lower-cased; StringClean: newlines and tabs become spaces, trimmed
        return re.sub(r"\r\n|\r|\n|\t", " ", text.lower()).strip()
    kept: list[str] = []
    seen: set[str] = set()
    for count, word in enumerate(_words(text), start=1):
        if count > WORD_COUNT_MAX:
            break
        if word not in seen:
            seen.add(word)
            kept.append(word)
    return " ".join(kept)


def _words(text: str):
    for raw in re.split(r"\s+", text):
        word = raw
        for pattern in _FILTERS:
            if word:
                word = pattern.sub("", word)
        if not word:
            continue
        word = word.lower()
        if word in STOP_WORDS or not WORD_LENGTH_MIN <= len(word) <= WORD_LENGTH_MAX:
            continue
        yield word


def like_pattern(value: str) -> re.Pattern | None:
    """The LIKE a criterion becomes (``*`` and ``%`` any text; ``_`` is escaped), with the
    ``%`` the operation puts around it; None for a criterion of wildcards only, which
    Znuny skips."""
    value = value.replace("*", "%")
    if re.fullmatch(r"%{1,3}", value):
        return None
    value = f"%{value}%".replace("%%", "%").lower()
    regex = "".join(".*" if ch == "%" else re.escape(ch) for ch in value)
    return re.compile(regex, re.S)


def matches(pattern: re.Pattern, indexed: str) -> bool:
    return pattern.fullmatch(indexed) is not None


def article_index(article: dict) -> dict[str, str]:
    """Every indexed field of an article."""
    return {
        name: index_text(str(article.get(name) or ""), filtered=filtered)
        for name, filtered in FIELDS.items()
    }
