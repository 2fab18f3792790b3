"""gpunuma: binds GPU containers on Kubernetes to the NUMA nodes local to their GPUs.

The package is layered; dependencies point one way: ``cli`` → ``agent``, ``operator``, ``webhook``,
``launcher`` → ``discovery`` → ``topology``. Importing ``gpunuma`` itself stays cheap (no Kubernetes
client, no kopf), because the launcher installer runs it in every injected pod's init container.
"""

__version__ = "0.1.0"
