"""Warnings and denials for the user who created the pod: one line each, quoted values cut short.

Pure. ``warning_line`` makes a whole line (``gpunuma inject`` prints it as it is); admission cuts it
to what the API server passes on whole (``admission_warning``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["WARNING_LIMIT", "admission_warning", "quote", "some", "warning_line"]


# Kubernetes may truncate admission warnings longer than this; keep them whole and readable.
WARNING_LIMIT = 120
# Names listed in a warning or a denial; the rest are counted.
_NAMES_SHOWN = 5


def quote(value: str, limit: int = 24) -> str:
    """A user's string made safe and short for a warning line: printable, quoted, truncated."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def some(values: Sequence[str], limit: int = 24) -> str:
    """The first few values quoted, and how many more there are."""
    shown = ", ".join(quote(value, limit) for value in values[:_NAMES_SHOWN])
    more = len(values) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def warning_line(text: str) -> str:
    """``text`` as one warning for the user: prefixed and on one line, whole.

    ``gpunuma inject`` prints it as it is; admission cuts it with ``admission_warning``.
    """
    return "gpunuma: " + " ".join(text.split())


def admission_warning(line: str) -> str:
    """``line`` cut to WARNING_LIMIT characters, which the API server passes on whole."""
    return line if len(line) <= WARNING_LIMIT else line[: WARNING_LIMIT - 1] + "…"
