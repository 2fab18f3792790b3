"""One way for a test to wait for something that happens in another task or process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], within: float = 5.0, message: str = "") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that; fail
    after ``within`` seconds. A bounded loop: a broken component fails the test, never hangs it.
    KeyError, AssertionError and TypeError from ``check`` count as "not yet"."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        with contextlib.suppress(KeyError, AssertionError, TypeError):
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        if loop.time() > deadline:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            assert result, message or f"condition not met within {within} s"
            return result
        await asyncio.sleep(0.02)
