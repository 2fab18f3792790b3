"""``gpunuma_build_info``: the version every component reports on its ``/metrics``.

The Prometheus convention for build information: a gauge that is always 1, whose labels carry the
facts, so that ``count by (version) (gpunuma_build_info)`` shows a rollout's progress.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Gauge

from gpunuma import __version__

__all__ = ["register_build_info"]


def register_build_info(registry: CollectorRegistry, component: str) -> None:
    Gauge(
        "gpunuma_build_info", "Always 1; labels: the component, gpunuma's version and Python's",
        ["component", "version", "python"], registry=registry,
    ).labels(component, __version__, platform.python_version()).set(1)
