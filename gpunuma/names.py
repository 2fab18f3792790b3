"""The names gpunuma promises to users (DESIGN §3): label and annotation keys, the CRD, env vars.

Users write these into manifests, selectors and scripts, so they are defined once, here, and every
component imports them. Changing one is a breaking change.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "gpunuma.io/"

# Node labels, written by the operator only.
LABEL_GPU_COUNT: Final = PREFIX + "gpu-count"
LABEL_NUMA_COUNT: Final = PREFIX + "numa-count"
LABEL_GPU_NUMA_COUNT: Final = PREFIX + "gpu-numa-count"
LABEL_MAX_GPUS_PER_NUMA: Final = PREFIX + "max-gpus-per-numa"
LABEL_LAYOUT: Final = PREFIX + "layout"
LABEL_NUMA_GPU_MAP: Final = PREFIX + "numa-gpu-map"
LABEL_VENDOR: Final = PREFIX + "vendor"
LABEL_SOURCE: Final = PREFIX + "source"
LABEL_STALE: Final = PREFIX + "stale"
ANNOTATION_MANAGED_LABELS: Final = PREFIX + "managed-labels"

# Pod annotations and labels.
ANNOTATION_INJECT: Final = PREFIX + "inject"
ANNOTATION_POLICY: Final = PREFIX + "policy"
ANNOTATION_CONTAINERS: Final = PREFIX + "containers"
ANNOTATION_INJECTED: Final = PREFIX + "injected"
ANNOTATION_WRAPPED: Final = PREFIX + "wrapped"
ANNOTATION_SKIPPED: Final = PREFIX + "skipped"
# Containers without `command` that the agent binds through their cgroup's cpuset (webhook).
ANNOTATION_CGROUP_BOUND: Final = PREFIX + "cgroup-bound"
# Pod-level outcome the operator writes from what the agent observed: full, cpu-only or none.
ANNOTATION_BINDING: Final = PREFIX + "binding"
ANNOTATION_WARNINGS: Final = PREFIX + "warnings"
# "true": some container runs under numa-exec; "false": the webhook changed the pod but bound none
# of its containers (all skipped), and its warnings are in ANNOTATION_WARNINGS.
LABEL_MANAGED: Final = PREFIX + "managed"
ANNOTATION_PLACEMENT: Final = PREFIX + "placement"
ANNOTATION_NUMA_NODES: Final = PREFIX + "numa-nodes"
ANNOTATION_CPUSET: Final = PREFIX + "cpuset"

# Namespace label that opts every GPU pod of the namespace in.
LABEL_NAMESPACE_INJECT: Final = PREFIX + "inject"
NAMESPACE_INJECT_ENABLED: Final = "enabled"

# Policies of numa-exec (DESIGN §6).
POLICIES: Final = ("preferred", "strict", "cpu-only")
DEFAULT_POLICY: Final = "preferred"

# Labels the chart puts on the webhook's Deployment and MutatingWebhookConfiguration.
WEBHOOK_LABELS: Final = {"app.kubernetes.io/part-of": "gpunuma", "app.kubernetes.io/component": "webhook"}

# The custom resource.
CRD_GROUP: Final = "gpunuma.io"
CRD_VERSION: Final = "v1alpha1"
CRD_KIND: Final = "GPUNumaLayout"
CRD_PLURAL: Final = "gpunumalayouts"
CRD_SHORT_NAME: Final = "gnl"

# The launcher, as the webhook injects it.
LAUNCHER_VOLUME: Final = "gpunuma-launcher"
LAUNCHER_INIT_CONTAINER: Final = "gpunuma-launcher"
LAUNCHER_MOUNT_PATH: Final = "/opt/gpunuma"
LAUNCHER_PATH: Final = LAUNCHER_MOUNT_PATH + "/numa-exec"
