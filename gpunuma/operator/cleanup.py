"""``gpunuma cleanup-nodes``: remove what the operator put on Nodes, after the operator is gone.

The chart runs it as a post-delete hook of ``helm uninstall``: every ``gpunuma.io/*`` label the
operator manages and the ``gpunuma.io/managed-labels`` annotation are removed from every Node with
the same merge patch the operator uses when a layout is deleted (:func:`label_patch` with nothing
desired), so labels without our prefix are never touched. A Node that fails is reported and the
others are still cleaned; the exit status says whether all were.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.labels import label_patch

__all__ = ["CleanupResult", "remove_node_labels"]

logger = logging.getLogger("gpunuma.cleanup")

PAGE = 500


@dataclass
class CleanupResult:
    cleaned: list[str] = field(default_factory=list)
    untouched: int = 0
    failed: dict[str, str] = field(default_factory=dict)


async def _nodes(client: KubeClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        path = f"{paths.NODES}?limit={PAGE}" + (f"&continue={quote(token)}" if token else "")
        page = await client.get(path) or {}
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return items


async def remove_node_labels(client: KubeClient) -> CleanupResult:
    """Remove our labels and annotation from every Node; ``ApiError`` only if Nodes cannot be listed."""
    result = CleanupResult()
    for node in await _nodes(client):
        metadata = node.get("metadata") or {}
        name = str(metadata.get("name", ""))
        patch = label_patch({}, metadata.get("labels"), metadata.get("annotations"))
        if patch is None:
            result.untouched += 1
            continue
        try:
            await client.merge_patch(paths.node(name), patch)
        except ApiError as error:
            logger.error("node %s: cannot remove gpunuma labels: %s", name, error)
            result.failed[name] = str(error)
            continue
        logger.info("node %s: removed gpunuma labels", name)
        result.cleaned.append(name)
    return result
