"""The gpunuma operator (kopf): GPUNumaLayout → Node labels, allocations → pod annotations,
stale-heartbeat detection and the webhook's TLS certificates (DESIGN §8).

The deciding logic is pure and lives in ``labels``, ``staleness``, ``status``, ``placement``,
``certificates`` and ``peering``; ``controller`` applies it through the shared API client in
:mod:`gpunuma.kubeapi`; ``handlers`` connects it to kopf and ``run`` is the ``gpunuma operator``
command. Importing this package does not import kopf.
"""
