"""What in a pod collides with what gpunuma adds: its names, and its mount at ``/opt/gpunuma``.

Renaming or overwriting a user's volume or container, or mounting where the runtime cannot, would
break the pod in ways the user could not see: each check returns the reason, with the fix, and the
mutation denies the pod (``strict``) or leaves it unbound with a warning. Pure.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from gpunuma import names
from gpunuma.webhook.edits import has_named, is_launcher
from gpunuma.webhook.podshape import named_list

__all__ = ["below_launcher", "mount_clash", "name_clash"]


def name_clash(
    containers: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]],
    volumes: Sequence[Mapping[str, Any]],
    spec: Mapping[str, Any],
) -> str | None:
    """A denial when the pod already uses our names for something of its own.

    Renaming or overwriting a user's volume or container would break the pod in ways the user
    could not see, so such a pod is refused with a message instead.
    """
    ours = names.LAUNCHER_INIT_CONTAINER
    ephemeral = named_list(spec, "ephemeralContainers")
    if has_named(containers, ours) or has_named(ephemeral, ours):
        return (f"the pod has a container named {ours!r}, a name gpunuma needs for its init "
                f"container: rename that container, or opt the pod out with "
                f"{names.ANNOTATION_INJECT}: \"false\"")
    for container in init_containers:
        if container["name"] == ours and not is_launcher(container):
            return (f"the pod has an init container named {ours!r} that gpunuma did not create: "
                    f"rename it, or opt the pod out with {names.ANNOTATION_INJECT}: \"false\"")
    for volume in volumes:
        if volume["name"] == names.LAUNCHER_VOLUME and set(volume) != {"name", "emptyDir"}:
            return (f"the pod has a volume named {names.LAUNCHER_VOLUME!r} that is not gpunuma's "
                    f"emptyDir: rename it, or opt the pod out with {names.ANNOTATION_INJECT}: "
                    "\"false\"")
    return None


# How to get past a mount clash, the same for every one.
_CLASH_FIX = (f"move it, or leave the container out with {names.ANNOTATION_CONTAINERS}, or the "
              f"pod with {names.ANNOTATION_INJECT}: \"false\"")
# Volume sources the kubelet mounts read-only, whatever the mount says.
_READ_ONLY_SOURCES = frozenset(("configMap", "secret", "downwardAPI", "projected"))


def mount_clash(container: Mapping[str, Any], volumes: Sequence[Mapping[str, Any]]) -> str | None:
    """Why gpunuma's mount cannot be added to ``container`` without breaking it, or None.

    The API server refuses a mount path used twice in a container or shared with a block
    device's path; the container runtime cannot create a mount point inside our read-only
    volume (a mount below ``/opt/gpunuma``), inside a device file, or inside a read-only volume
    mounted above it. Paths are compared cleaned (``/opt/gpunuma/`` is ``/opt/gpunuma``).
    """
    name, fix = container["name"], _CLASH_FIX
    for mount in named_list(container, "volumeMounts"):
        where = below_launcher(mount.get("mountPath"))
        if where is None and mount["name"] != names.LAUNCHER_VOLUME:
            continue  # nearly every mount
        if mount["name"] == names.LAUNCHER_VOLUME and where == "at":
            continue  # ours, from an earlier pass
        if mount["name"] == names.LAUNCHER_VOLUME or where in ("at", "below"):
            return (f"container {name!r} mounts {mount['name']!r} at "
                    f"{mount.get('mountPath')!r}, where gpunuma mounts its volume "
                    f"{names.LAUNCHER_VOLUME!r} at {names.LAUNCHER_MOUNT_PATH!r}: {fix}")
        if where == "above" and (mount.get("readOnly") is True or any(
                volume["name"] == mount["name"] and not _READ_ONLY_SOURCES.isdisjoint(volume)
                for volume in volumes)):
            return (f"container {name!r} mounts the read-only volume {mount['name']!r} at "
                    f"{mount.get('mountPath')!r}, so {names.LAUNCHER_MOUNT_PATH!r} cannot be "
                    f"created for gpunuma's mount: {fix}")
    for device in named_list(container, "volumeDevices"):
        where = below_launcher(device.get("devicePath"))
        if device["name"] == names.LAUNCHER_VOLUME or where is not None:
            return (f"container {name!r} has the block device {device['name']!r} at "
                    f"{device.get('devicePath')!r}, which overlaps {names.LAUNCHER_MOUNT_PATH!r} "
                    f"where gpunuma mounts its volume: {fix}")
    return None


def below_launcher(path: object) -> str | None:
    """Where ``path`` lies from /opt/gpunuma: "at", "below", "above" (an ancestor) or None."""
    text = str(path or "")
    if "opt" not in text and ".." not in text and text.strip("/."):
        # Cleaning only drops components: with no "opt" the path is not ours or below it, and
        # with a name left and no ".." to drop it, it is not "/" (every mount's common case).
        return None
    cleaned = posixpath.normpath("/" + text.lstrip("/"))
    ours = names.LAUNCHER_MOUNT_PATH
    if cleaned == ours:
        return "at"
    if cleaned.startswith(ours + "/"):
        return "below"
    if ours.startswith(cleaned.rstrip("/") + "/"):
        return "above"
    return None
