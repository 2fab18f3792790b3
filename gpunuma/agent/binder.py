"""The cgroup mechanism: binds the containers the webhook could not wrap, through their cpuset.

Runs in the agent's event loop. An inotify watch on every kubepods/QoS/pod directory of the cpuset
hierarchy reports a new container directory the moment the runtime creates it; the binder then
waits for the container's first process, reads from its mountinfo which pod and container it is
(:func:`~gpunuma.agent.cgroups.container_of_mountinfo`), asks ``resolve`` whether that container
was selected (the webhook's ``gpunuma.io/cgroup-bound`` annotation) and for its GPUs' CPUs and
nodes, and writes the cpuset. A container that was not selected is remembered as such and its
files are never opened for writing.

Re-applying: each bound container's ``cpuset.cpus`` and ``cpuset.mems`` are watched too, so a
runtime or kubelet that rewrites them is answered at once; :meth:`CgroupBinder.recheck`, called on
every agent pass, also catches what produces no event (a parent's change narrowing a child).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpunuma.agent.cgroupfs import CgroupGone, CpusetHierarchy
from gpunuma.agent.cgroups import (
    container_of_dirname,
    cpuset_plan,
    is_kube_dirname,
    pod_uid_of_dirname,
)
from gpunuma.agent.cgroups import container_of_mountinfo as _container_of_mountinfo
from gpunuma.agent.inotify import (
    IN_CREATE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Inotify,
)
from gpunuma.agent.procinfo import read_comm
from gpunuma.topology import format_cpulist

__all__ = ["BindRequest", "Bound", "CgroupBinder", "Resolve"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BindRequest:
    """What a selected container is bound to: its policy and its GPUs' CPUs and NUMA nodes."""

    namespace: str
    pod: str
    container: str
    policy: str
    local_cpus: frozenset[int]
    gpu_nodes: frozenset[int]


# (pod UID, container name) → the request, or None when the container was not selected.
Resolve = Callable[[str, str], Awaitable[BindRequest | None]]


@dataclass(slots=True)
class Bound:
    """A container the binder owns: what it wrote (None: left alone), and why not when nothing."""

    request: BindRequest
    cpus: frozenset[int] | None
    mems: frozenset[int] | None
    reason: str = ""
    applied: int = 0  # how many times written (1 at start; more when something reset it)


@dataclass
class CgroupBinder:
    """Watches the hierarchy, binds selected containers, keeps them bound; see the module doc."""

    hierarchy: CpusetHierarchy
    procfs_root: Path
    resolve: Resolve
    # How long to wait for a new container's first process and its mounts.
    start_timeout: float = 30.0
    poll: float = 0.005
    bound: dict[Path, Bound] = field(default_factory=dict)
    ignored: set[Path] = field(default_factory=set)
    paused: str | None = None  # why the binder stands aside (the kubelet's static CPU manager)
    _inotify: Inotify | None = None
    _watches: dict[int, Path] = field(default_factory=dict)
    _pending: dict[Path, asyncio.Task[None]] = field(default_factory=dict)

    def start(self) -> None:
        """Watch the hierarchy and look at every container already there."""
        self._inotify = Inotify()
        asyncio.get_running_loop().add_reader(self._inotify.fileno(), self._on_events)
        self.rescan()

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        for task in list(self._pending.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None

    def pause(self, reason: str | None) -> None:
        """Stand aside (``reason``) or resume (None). Standing aside writes nothing, undoes nothing."""
        if reason != self.paused:
            logger.warning("cgroup binding: %s", reason) if reason else logger.info(
                "cgroup binding: resumed")
        resumed = self.paused is not None and reason is None
        self.paused = reason
        if resumed:
            self.rescan()

    def binding_of(self, directory: Path) -> Bound | None:
        return self.bound.get(directory)

    def rescan(self) -> None:
        """Watch every kube directory and consider every container directory not yet seen."""
        for directory in [self.hierarchy.root, *self.hierarchy.kube_directories()]:
            self._watch_directory(directory)
            if pod_uid_of_dirname(directory.name) is not None:
                for child in _children(directory):
                    self._consider(child)

    def recheck(self) -> None:
        """Re-apply what something reset; forget containers that ended; try again those that
        could not be bound (their GPUs not reported by the kubelet yet, say)."""
        for directory in list(self.bound):
            if not directory.is_dir():
                del self.bound[directory]
                continue
            bound = self.bound[directory]
            if bound.cpus is None and directory not in self._pending:
                self._track(directory, self._retry(directory, bound))
                continue
            self._reapply(directory)
        self.ignored = {directory for directory in self.ignored if directory.is_dir()}

    async def idle(self) -> None:
        """Wait until no new container is being handled (for tests and the benchmark)."""
        while self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    # -- events -----------------------------------------------------------------------------

    def _watch_directory(self, directory: Path) -> None:
        assert self._inotify is not None
        if directory in self._watches.values():
            return
        try:
            watch = self._inotify.add_watch(directory, IN_CREATE | IN_ONLYDIR)
        except OSError:
            return  # gone already
        self._watches[watch] = directory

    def _on_events(self) -> None:
        assert self._inotify is not None
        for event in self._inotify.read():
            if event.mask & IN_Q_OVERFLOW:
                self.rescan()
                continue
            directory = self._watches.get(event.watch)
            if directory is None:
                continue
            if event.mask & IN_IGNORED:
                del self._watches[event.watch]
                continue
            if event.mask & IN_MODIFY:
                # A bound container's cpuset file: the watch is on the container directory.
                if directory in self.bound:
                    self._reapply(directory)
                continue
            if event.mask & IN_CREATE and event.mask & IN_ISDIR:
                child = directory / event.name
                if pod_uid_of_dirname(directory.name) is not None:
                    self._consider(child)
                elif is_kube_dirname(child.name) or pod_uid_of_dirname(child.name) is not None:
                    self._adopt(child)

    def _adopt(self, directory: Path) -> None:
        """Watch a new kube directory and what was created in it before the watch took hold."""
        self._watch_directory(directory)
        is_pod = pod_uid_of_dirname(directory.name) is not None
        for child in _children(directory):
            if is_pod:
                self._consider(child)
            elif is_kube_dirname(child.name) or pod_uid_of_dirname(child.name) is not None:
                self._adopt(child)

    def _consider(self, directory: Path) -> None:
        if (container_of_dirname(directory.name) is None or directory in self.bound
                or directory in self.ignored or directory in self._pending):
            return
        self._track(directory, self._bind_new(directory))

    def _track(self, directory: Path, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``directory``, one at a time per directory (see :meth:`idle`)."""
        task = asyncio.get_running_loop().create_task(work)
        self._pending[directory] = task

        def done(_: asyncio.Task[None]) -> None:
            self._pending.pop(directory, None)

        task.add_done_callback(done)

    # -- binding ----------------------------------------------------------------------------

    async def _bind_new(self, directory: Path) -> None:
        try:
            identity = await self._identify(directory)
            if identity is None:
                self.ignored.add(directory)
                return
            request = await self.resolve(*identity)
            if request is None:
                self.ignored.add(directory)  # not selected: never written
                return
            self._apply(directory, request)
        except CgroupGone:
            pass  # the container ended before it was bound: normal
        except Exception:  # one container's failure must not stop the binder
            logger.exception("cgroup binding of %s failed", directory)

    async def _retry(self, directory: Path, bound: Bound) -> None:
        request = bound.request
        try:
            fresh = await self.resolve(pod_uid_of_dirname(directory.parent.name) or "",
                                       request.container)
            if fresh is not None and (fresh.gpu_nodes, fresh.local_cpus) != (
                    request.gpu_nodes, request.local_cpus):
                self._apply(directory, fresh)
        except CgroupGone:
            self.bound.pop(directory, None)
        except Exception:
            logger.exception("cgroup binding of %s failed", directory)

    async def _identify(self, directory: Path) -> tuple[str, str] | None:
        """(pod UID, container name) of a new container, once its first process has its mounts."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        delay = self.poll
        while True:
            for pid in self.hierarchy.procs(directory):
                if self._is_sandbox(pid):
                    return None  # the pod's "pause" container: never a container to bind
                identity = self._mount_identity(pid)
                if identity is not None:
                    return identity
            if loop.time() > deadline or not _is_dir(directory):
                return None
            # The mounts follow the cgroup within milliseconds; a slower start (hooks) is polled
            # ever less often, so that waiting costs next to nothing.
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _is_sandbox(self, pid: int) -> bool:
        return read_comm(self.procfs_root, pid) == "pause"

    def _mount_identity(self, pid: int) -> tuple[str, str] | None:
        try:
            text = (self.procfs_root / str(pid) / "mountinfo").read_text(errors="replace")
        except OSError:
            return None
        return _container_of_mountinfo(text)

    def _apply(self, directory: Path, request: BindRequest) -> None:
        if self.paused is not None:
            return
        allowed_cpus, allowed_mems = self.hierarchy.effective(directory.parent)
        plan = cpuset_plan(policy=request.policy, local_cpus=request.local_cpus,
                           allowed_cpus=allowed_cpus, gpu_nodes=request.gpu_nodes,
                           allowed_mems=allowed_mems)
        self.hierarchy.write(directory, cpus=plan.cpus, mems=plan.mems)
        previous = self.bound.get(directory)
        self.bound[directory] = Bound(request, plan.cpus, plan.mems, plan.reason,
                                      (previous.applied if previous else 0) + 1)
        self._watch_files(directory)
        if plan.cpus is None:
            logger.warning("cgroup binding: %s/%s %s left unbound: %s", request.namespace,
                           request.pod, request.container, plan.reason)
        else:
            logger.info("cgroup binding: %s/%s %s → CPUs %s%s", request.namespace, request.pod,
                        request.container, plan.cpus_text,
                        f", memory nodes {plan.mems_text}" if plan.mems is not None else "")

    def _watch_files(self, directory: Path) -> None:
        assert self._inotify is not None
        if directory in self._watches.values():
            return
        try:
            # A watch on the directory sees writes to its files (IN_MODIFY carries the name).
            watch = self._inotify.add_watch(directory, IN_MODIFY)
        except OSError:
            return
        self._watches[watch] = directory

    def _reapply(self, directory: Path) -> None:
        bound = self.bound[directory]
        if self.paused is not None or bound.cpus is None:
            return
        try:
            cpus = self.hierarchy.configured_cpus(directory)
            mems = self.hierarchy.configured_mems(directory)
            if cpus == format_cpulist(bound.cpus) and (
                    bound.mems is None or mems == format_cpulist(bound.mems)):
                return  # our own write, or nothing changed
            logger.info("cgroup binding: %s/%s %s was reset to CPUs %s, re-applying",
                        bound.request.namespace, bound.request.pod, bound.request.container, cpus)
            self._apply(directory, bound.request)
        except CgroupGone:
            self.bound.pop(directory, None)
        except OSError as error:
            logger.warning("cgroup binding: re-applying %s failed: %s", directory, error)


def _is_dir(directory: Path) -> bool:
    # cgroupfs answers from memory: no reason to leave the event loop for it.
    return directory.is_dir()


def _children(directory: Path) -> list[Path]:
    try:
        return [child for child in directory.iterdir() if child.is_dir()]
    except OSError:
        return []
