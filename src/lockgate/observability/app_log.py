"""Structured application logs: one JSON object per ``logging`` record, credentials masked.

Application logs (start-up, limiter trouble, crashed handlers) go through the
standard ``logging`` module: they are rare, and libraries we use log there
too. ``JsonLogFormatter`` makes each record one JSON line, so the access log
and the application log can share a log pipeline.

The code never logs credentials on purpose; ``redact`` is the second line of
defence for the accidental case (an exception message quoting a header, a
library logging a URL with a password): bearer tokens, Lockgate API keys,
``sk-`` style provider keys and URL passwords are masked before the line is
written. It is a safety net, not a licence to log secrets.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

_SECRETS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (re.compile(r"\blg_[a-z2-7]{16}_[A-Za-z0-9]{8,}"), "lg_[redacted]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-[redacted]"),
    (re.compile(r"(?i)\b(api[-_]?key|password|secret|token)(\"?\s*[:=]\s*\"?)[^\s\",;&]{4,}"),
     r"\1\2[redacted]"),
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1[redacted]@"),
)  # fmt: skip


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[redacted]``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonLogFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, exception.

    Install it on the process's handler (``logging.basicConfig`` then
    ``handler.setFormatter(JsonLogFormatter())``); ``extra={...}`` fields that
    JSON can carry are included.
    """

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        for name, value in record.__dict__.items():
            if name not in self._STANDARD and isinstance(value, str | int | float | bool):
                line[name] = redact(value) if isinstance(value, str) else value
        return orjson.dumps(line).decode()
