"""``kubectl gpunuma``: what gpunuma did in this cluster, and why (a kubectl plugin).

- ``nodes``: GPU nodes with their layout, GPUs per NUMA node, source and staleness, from the
  GPUNumaLayouts (the agent's truth) and the Node labels (what the operator applied);
- ``pods [-n NS | -A]``: managed pods, their wrapped containers, NUMA nodes and cpuset;
- ``explain POD [-n NS]``: why a pod was or was not bound, step by step, ending with the line
  numa-exec wrote into the container's log.

The tables (:mod:`render`) and the explanation (:mod:`explain`) are pure functions of the API
objects (tested without a cluster); :mod:`api` is the only part that talks to the API server;
:mod:`command` parses the flags and dispatches.
"""

from __future__ import annotations

from gpunuma.kubectl.api import ClusterError, KubeApi
from gpunuma.kubectl.command import main
from gpunuma.kubectl.explain import excluded_namespaces, explain
from gpunuma.kubectl.render import format_table, node_rows, pod_rows

__all__ = [
    "ClusterError",
    "KubeApi",
    "excluded_namespaces",
    "explain",
    "format_table",
    "main",
    "node_rows",
    "pod_rows",
]
