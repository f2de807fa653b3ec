"""Logging filters of the console's log (wired in settings.LOGGING).

A refused or missing page (403, 404, 400) is an answer the console gave on purpose, not a
fault: Django logs it with the exception that produced it, which prints a traceback for
every visitor who followed a link beyond their role. One line says all there is to say.
"""

from __future__ import annotations

import logging


class AnswersWithoutTraceback(logging.Filter):
    """Keep a 4xx answer's log record, without the exception traceback attached to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
