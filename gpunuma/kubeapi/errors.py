"""The one error every API call raises, and when it is worth retrying."""

from __future__ import annotations

import json

__all__ = ["RETRYABLE_STATUSES", "ApiError", "error_from"]

# Statuses worth a prompt retry: a vanished object (deleted under us: re-created), conflicts,
# throttling, and the API server or its etcd being unwell. Others (403, 422…) need a fix.
RETRYABLE_STATUSES = frozenset({404, 409, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """A Kubernetes API call that failed; ``status`` 0 means no usable HTTP answer.

    ``reason`` is the Status object's reason (``Forbidden``, ``AlreadyExists``…) when it has one;
    ``method`` and ``path`` name the call in the message.
    """

    def __init__(
        self, status: int, message: str, *, reason: str = "", method: str = "", path: str = "",
    ) -> None:
        where = f"{method} {path}: " if method else ""
        answer = f"HTTP {status} {reason}".rstrip() + ": " if status else ""
        super().__init__(where + answer + message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRYABLE_STATUSES


def error_from(status: int, text: str, method: str, path: str) -> ApiError:
    """The :class:`ApiError` of an HTTP error answer: the Status object's message, if it is one."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("message"):  # a Status object
        return ApiError(status, str(document["message"]), reason=str(document.get("reason") or ""),
                        method=method, path=path)
    return ApiError(status, text[:300], method=method, path=path)
