"""Whether this replica may act in the periodic loop: kopf's peering object, read and judged.

The judgement itself is pure (:func:`peering.is_active_peer`); this module does the read.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gpunuma.kubeapi import ApiError, KubeClient
from gpunuma.operator import paths
from gpunuma.operator.peering import is_active_peer
from gpunuma.settings import OperatorSettings

__all__ = ["Leadership"]

logger = logging.getLogger("gpunuma.operator")


@dataclass
class Leadership:
    settings: OperatorSettings
    client: KubeClient
    identity: str
    priority: int
    clock: Callable[[], dt.datetime]
    # Whether kopf's keep-alive has put this replica in the peering object (always, standalone).
    joined: bool = False

    async def is_active(self) -> bool:
        """Only the replica kopf's peering lets run acts in the periodic loop."""
        if self.settings.standalone:
            self.joined = True
            return True
        try:
            peering = await self.client.get(paths.peering(self.settings.peering_name))
        except ApiError as exc:
            logger.warning("peering: %s; skipping this round", exc)
            return False
        if peering is None:
            # Peering is mandatory when not standalone: kopf keeps its handlers paused until the
            # ClusterKopfPeering exists, and so does the loop (no two replicas acting at once).
            logger.warning("peering: ClusterKopfPeering %r not found; waiting for it",
                           self.settings.peering_name)
            return False
        status = peering.get("status")
        self.joined = isinstance(status, Mapping) and self.identity in status
        if not self.joined:
            # kopf has not announced this replica yet; until it has, a replica started at the
            # same moment may not have been announced either, and both would think they lead.
            return False
        return is_active_peer(status, self.identity, self.priority, self.clock())
