"""The node agent (DESIGN §7): publishes the node's GPUNumaLayout and its GPU allocations.

- :mod:`~gpunuma.agent.allocations`: pure mapping of the kubelet's PodResources to allocations;
- :mod:`~gpunuma.agent.podresources`: async gRPC client of the kubelet's PodResources API;
- :mod:`~gpunuma.agent.publisher`: the CR's shape, and writes only when something changed;
- :mod:`~gpunuma.agent.service`: the loop, ``/healthz`` and ``/metrics``, ``run_agent``;
- observed bindings: :mod:`~gpunuma.agent.nodepods` (the node's Pods: UIDs, container ids),
  :mod:`~gpunuma.agent.observer` (finds each container's processes and reads them),
  :mod:`~gpunuma.agent.procinfo` (``/proc`` readers), :mod:`~gpunuma.agent.observe` (pure judging);
- the cgroup mechanism: :mod:`~gpunuma.agent.cgroups` (pure: names, the cpuset plan, the CPU
  manager checkpoint), :mod:`~gpunuma.agent.cgroupfs` (the host's cpuset files),
  :mod:`~gpunuma.agent.inotify` (ctypes inotify), :mod:`~gpunuma.agent.binder` (watches and binds);
- the Kubernetes API client is the shared :mod:`gpunuma.kubeapi`.

Submodules are imported where used, so that importing the package loads neither gRPC nor aiohttp.
"""
