"""Values from outside (a client's request, a layout another process wrote) quoted for a message.

A message or a log line must never echo megabytes, nor let a value's control characters reach a
terminal: :func:`short` gives the value's ``repr`` (which escapes them), cut to a few dozen
characters with its full length said. Pure; the webhook and the operator both use it.
"""

from __future__ import annotations

__all__ = ["QUOTE_CHARS", "short"]

# Quoted values are cut to this many characters.
QUOTE_CHARS = 64


def short(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters, with the full length when cut."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
