"""The Pod Security Standards (baseline and restricted, "latest") as pure checks over a pod spec.

Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ so the chart
tests can say which rule a pod breaks, not just that it breaks one. Each violation names the
rule and where it was found. Restricted includes baseline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
})
VOLUME_NON_SOURCE_KEYS = frozenset({"name"})


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            yield f"{field}[{container.get('name', '?')}]", container


def baseline_violations(spec: dict[str, Any]) -> list[str]:
    found: list[str] = []
    pod_context = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(f"host namespaces: spec.{key}=true")
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        found.append("HostProcess: spec.securityContext.windowsOptions.hostProcess=true")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"HostPath volumes: volume {volume['name']} ({volume['hostPath'].get('path')})")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctls: {sysctl.get('name')} is not in the safe set")
    if (pod_context.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append("seccomp: spec.securityContext.seccompProfile is Unconfined")
    found.extend(_selinux("spec.securityContext", pod_context))
    for where, container in _containers(spec):
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f"privileged containers: {where}")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"HostProcess: {where}")
        added = set((context.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            found.append(f"capabilities: {where} adds {sorted(added - BASELINE_CAPABILITIES)}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"host ports: {where} uses hostPort {port['hostPort']}")
        if context.get("procMount", "Default") != "Default":
            found.append(f"/proc mount type: {where} sets procMount={context['procMount']}")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"seccomp: {where} is Unconfined")
        profile = (context.get("appArmorProfile") or {}).get("type")
        if profile not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"AppArmor: {where} uses {profile}")
        found.extend(_selinux(where, context))
    return found


def _selinux(where: str, context: dict[str, Any]) -> list[str]:
    options = context.get("seLinuxOptions") or {}
    found = []
    if options.get("type", "") not in SELINUX_TYPES:
        found.append(f"SELinux: {where} sets type {options['type']}")
    for key in ("user", "role"):
        if options.get(key):
            found.append(f"SELinux: {where} sets {key}")
    return found


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    found = baseline_violations(spec)
    pod_context = spec.get("securityContext") or {}
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - VOLUME_NON_SOURCE_KEYS
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume types: volume {volume['name']} is {sorted(kinds)}")
    if pod_context.get("runAsUser") == 0:
        found.append("running as non-root user: spec.securityContext.runAsUser=0")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    for where, container in _containers(spec):
        context = container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"privilege escalation: {where} does not set allowPrivilegeEscalation=false")
        run_as_non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if run_as_non_root is not True:
            found.append(f"running as non-root: {where} does not have runAsNonRoot=true")
        if context.get("runAsUser") == 0:
            found.append(f"running as non-root user: {where} sets runAsUser=0")
        seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"seccomp: {where} has no RuntimeDefault or Localhost profile")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"capabilities: {where} does not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"capabilities: {where} adds more than NET_BIND_SERVICE")
    return found
