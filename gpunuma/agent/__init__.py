"""The node agent (DESIGN §7): publishes the node's GPUNumaLayout and its GPU allocations.

- :mod:`~gpunuma.agent.allocations`: pure mapping of the kubelet's PodResources to allocations;
- :mod:`~gpunuma.agent.podresources`: async gRPC client of the kubelet's PodResources API;
- :mod:`~gpunuma.agent.publisher`: the CR's shape, and writes only when something changed;
- :mod:`~gpunuma.agent.service`: the loop, ``/healthz`` and ``/metrics``, ``run_agent``;
- the Kubernetes API client is the shared :mod:`gpunuma.kubeapi`.

Submodules are imported where used, so that importing the package loads neither gRPC nor aiohttp.
"""
