"""gunicorn's access log, one line per request whatever the request holds.

gunicorn writes its atoms as they are: `%(U)s` is PATH_INFO, already percent-decoded, so a
request for `/api/v1/x%0ay` wrote a raw line break into the log and a forged second line
after it. The Procfile runs gunicorn with `--logger-class otrsbridge.access_log.AccessLogger`:

- `%(U)s` is the path as the client sent it (the path of RAW_URI, which gunicorn only
  accepts as printable ASCII), so `%0a` stays `%0a`; without RAW_URI, PATH_INFO encoded
  again. The query string stays out, as before: a webhook may carry its token there.
- every other text atom (a header, the user agent) has its control characters escaped.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from gunicorn.glogging import Logger

# C0 and C1 controls and DEL: what a terminal or a log reader would act on.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """`\\n` for a line feed, `\\x1b` for an escape: the text on one line, readable."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def logged_path(environ: dict[str, Any]) -> str:
    """The request's path as it appeared on the wire, without the query string."""
    raw = environ.get("RAW_URI")
    if raw:
        return escape_controls(raw.split("?", 1)[0].split("#", 1)[0])
    # WSGI hands PATH_INFO over as latin-1 text of the raw bytes.
    path = environ.get("PATH_INFO", "")
    return quote(path.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=-._~")


class AccessLogger(Logger):
    """gunicorn's Logger with an escaped path and escaped text atoms."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        escaped = {
            key: escape_controls(value) if isinstance(value, str) else value
            for key, value in atoms.items()
        }
        escaped["U"] = logged_path(environ)
        return escaped
