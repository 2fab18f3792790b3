"""Process logging for the long-running components: a level, a format, and kopf's noise left out.

Every component logs to stderr, one record per line: ``json`` (an object with ``time``, ``level``,
``logger``, ``message`` and, for errors, ``exception``) for log collectors, or ``plain`` text for
people. The operator keeps kopf's own formatters (they add the Kubernetes object a line is about)
and only takes the level and :class:`DropHandlerSuccesses` from here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from gpunuma.settings import LOG_LEVELS, LoggingSettings

__all__ = ["DropHandlerSuccesses", "JsonFormatter", "configure", "level_number"]

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}; choose from {', '.join(LOG_LEVELS)}")
    return number


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the message is rendered with its arguments."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class DropHandlerSuccesses(logging.Filter):
    """Leaves out kopf's "Handler '…' succeeded." lines.

    kopf logs one at INFO for every handler call on every object: in a short run of the operator
    they were 97 of 112 lines, and they say nothing an operator's user acts on. Failures, retries
    and everything gpunuma logs itself still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith("Handler ") and message.endswith(" succeeded."))


def configure(settings: LoggingSettings) -> None:
    """Log records at the level and above to stderr in the format (replaces root handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number(settings.level))
