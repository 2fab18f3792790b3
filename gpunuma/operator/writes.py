"""Merge patches sent at most once per view of an object.

After a write, the watch event carrying its result can arrive later than another event that
triggers a reconcile; that reconcile still sees the old view and would send the same patch again.
:class:`PatchOnce` remembers the last patch per object together with the view it was computed
from, and skips an identical patch against an identical view. The view changes as soon as any
newer state of the object is observed; a failed write is not remembered, so the next event or
round retries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpunuma.kubeapi import KubeClient

__all__ = ["PatchOnce", "without_transition_times"]


@dataclass
class _Sent:
    patch: dict[str, Any]
    basis: object


@dataclass
class PatchOnce:
    client: KubeClient
    sent: dict[tuple[str, str], _Sent] = field(default_factory=dict)

    async def merge_patch(
        self, key: tuple[str, str], path: str, patch: dict[str, Any], basis: object,
    ) -> dict[str, Any] | None:
        """Send ``patch`` unless it already succeeded against ``basis``; the patched object, or
        None when nothing was sent."""
        timeless = without_transition_times(patch)
        previous = self.sent.get(key)
        if previous is not None and previous.patch == timeless and previous.basis == basis:
            return None
        body = await self.client.merge_patch(path, patch)
        self.sent[key] = _Sent(timeless, basis)
        return body

    def forget(self, key: tuple[str, str]) -> None:
        self.sent.pop(key, None)


def without_transition_times(value: Any) -> Any:
    """A status patch minus ``lastTransitionTime``: two computed a second apart are the same."""
    if isinstance(value, dict):
        return {k: without_transition_times(v) for k, v in value.items()
                if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [without_transition_times(item) for item in value]
    return value
