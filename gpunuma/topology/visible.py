"""Which of a container's GPUs an application uses, and in which order it numbers them.

DESIGN §6 step 1 as a pure function of the container's GPUs (in PCI bus order) and its
environment: ``NVIDIA_VISIBLE_DEVICES``, ``CUDA_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES``,
``HIP_VISIBLE_DEVICES`` and the rank named by ``GPUNUMA_RANK_ENV``. numa-exec applies the same rule
in C (``launcher/src/select.c``); ``tests/launcher/test_same_rule_as_python.py`` holds the two to
the same answers on generated GPU lists and environments. The rule, in short:

- ``NVIDIA_VISIBLE_DEVICES`` is the container runtime's: it picks a set that CUDA still numbers in
  bus order; ``all``/``void``/``none``/a path, and any entry that matches nothing (the runtime has
  usually applied it already, with host indices), narrow nothing.
- The other three follow CUDA's rule: indices into the visible GPUs or (unique prefixes of) UUIDs,
  in the variable's order; an invalid entry (an index past the end, a UUID matching none or
  several, a repeat, an empty entry) ends the list; an empty value means no GPU.
- A MIG UUID, or indices among NVIDIA GPUs of different models without
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, leave the application's device order unknown: that variable
  narrows nothing and the rank is not applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gpunuma.topology.model import Vendor

__all__ = ["Selection", "VisibleGpu", "select_visible"]

# numa-exec reads bytes: only ASCII letters fold, only ASCII digits are digits, these are blanks.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_BLANKS = " \t\r\n"
_DIGITS = re.compile(r"[0-9]+")
_MAX_RANK = 1 << 30


@dataclass(frozen=True, slots=True)
class VisibleGpu:
    """A GPU the container was given (an AMD partition is one entry with its GPU's bus id)."""

    bus_id: str
    vendor: Vendor
    uuid: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """The GPUs in the application's device order; ``hidden`` says why there are none when a
    variable hides them all; ``notes`` what the user may want to know."""

    gpus: tuple[VisibleGpu, ...]
    notes: tuple[str, ...] = ()
    hidden: str | None = None


def _fold(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _entries(value: str) -> list[str]:
    return [entry.strip(_BLANKS) for entry in value.split(",")]


def _by_uuid(gpus: Sequence[VisibleGpu], entry: str) -> VisibleGpu | Literal["several"] | None:
    """The GPU whose UUID starts with ``entry``; partitions of one GPU share its UUID."""
    found: VisibleGpu | None = None
    if not entry:
        return None
    for gpu in gpus:
        if not gpu.uuid or not _fold(gpu.uuid).startswith(_fold(entry)):
            continue
        if found is not None and _fold(found.uuid) != _fold(gpu.uuid):
            return "several"
        found = found or gpu
    return found


def _runtime(gpus: list[VisibleGpu], value: str | None, notes: list[str]) -> list[VisibleGpu]:
    if value is None or not gpus:
        return gpus
    whole = value.strip(_BLANKS)
    if not whole or whole.startswith("/") or _fold(whole) in ("all", "void", "none"):
        return gpus
    picked: list[VisibleGpu] = []
    for entry in _entries(value):
        hit: VisibleGpu | Literal["several"] | None
        if _DIGITS.fullmatch(entry):
            hit = gpus[int(entry)] if int(entry) < len(gpus) else None
        else:
            hit = _by_uuid(gpus, entry)
        if hit is None or hit == "several":
            notes.append(f"NVIDIA_VISIBLE_DEVICES entry {entry!r} matches "
                         f"{'several' if hit else 'none'} of the visible GPUs: not narrowing by it")
            return gpus
        if not any(hit is other for other in picked):
            picked.append(hit)
    # Identity, not equality: two partitions of one AMD GPU are equal but distinct devices.
    return [gpu for gpu in gpus if any(gpu is other for other in picked)]


def _cuda(name: str, gpus: list[VisibleGpu], value: str | None, indices_ok: bool,
          notes: list[str], hidden: list[str]) -> tuple[list[VisibleGpu], bool]:
    """CUDA's rule; the flag says the variable was given up on (the device order is unknown)."""
    if value is None or not gpus:
        return gpus, False
    if not value.strip(_BLANKS):
        hidden.append(f"{name} is empty, which hides every GPU from the application")
        return [], False
    picked: list[VisibleGpu] = []
    for position, entry in enumerate(_entries(value), start=1):
        if _fold(entry).startswith("mig-"):
            notes.append(f"{name} entry {entry!r} is a MIG device: not narrowing by {name}")
            return gpus, True
        hit: VisibleGpu | Literal["several"] | None
        if _DIGITS.fullmatch(entry):
            if not indices_ok:
                notes.append(f"{name} lists indices, but the GPUs are of different models and "
                             "CUDA_DEVICE_ORDER is not PCI_BUS_ID: not narrowing by it")
                return gpus, True
            hit = gpus[int(entry)] if int(entry) < len(gpus) else None
        else:
            hit = _by_uuid(gpus, entry)
        if hit is None or hit == "several" or any(hit is other for other in picked):
            why = f"{name} entry {position} ({entry!r}) is invalid"
            if picked:
                notes.append(f"{why}: CUDA stops there")
            else:
                hidden.append(f"{why}, and CUDA stops at the first invalid entry")
            break
        picked.append(hit)
    return picked, False


def select_visible(gpus: Sequence[VisibleGpu], environ: Mapping[str, str]) -> Selection:
    """The GPUs (given in PCI bus order) the application uses, in its device order."""
    notes: list[str] = []
    hidden: list[str] = []
    nvidia = _runtime([g for g in gpus if g.vendor == "nvidia"],
                      environ.get("NVIDIA_VISIBLE_DEVICES"), notes)
    amd = [g for g in gpus if g.vendor == "amd"]
    indices_ok = (environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
                  or len({gpu.model for gpu in nvidia}) <= 1)
    nvidia, unknown = _cuda("CUDA_VISIBLE_DEVICES", nvidia, environ.get("CUDA_VISIBLE_DEVICES"),
                            indices_ok, notes, hidden)
    amd, rocr_unknown = _cuda("ROCR_VISIBLE_DEVICES", amd, environ.get("ROCR_VISIBLE_DEVICES"),
                              True, notes, hidden)
    # HIP honours CUDA_VISIBLE_DEVICES as another name for HIP_VISIBLE_DEVICES.
    hip = "HIP_VISIBLE_DEVICES" if "HIP_VISIBLE_DEVICES" in environ else "CUDA_VISIBLE_DEVICES"
    amd, hip_unknown = _cuda(hip, amd, environ.get(hip), True, notes, hidden)
    selected = [*nvidia, *amd]

    rank_name = environ.get("GPUNUMA_RANK_ENV", "")
    if rank_name and selected:
        rank = environ.get(rank_name)
        value = rank.strip(_BLANKS) if rank is not None else ""
        if rank is None:
            notes.append(f"GPUNUMA_RANK_ENV names {rank_name}, which is not set")
        elif not _DIGITS.fullmatch(value) or int(value) > _MAX_RANK:
            notes.append(f"{rank_name}={rank} is not a rank")
        elif unknown or rocr_unknown or hip_unknown:
            notes.append(f"{rank_name}={value} not applied: the device order is unknown")
        elif int(value) >= len(selected):
            notes.append(f"{rank_name}={value} but the container has {len(selected)} GPUs")
        else:
            selected = [selected[int(value)]]
    hidden_why = hidden[0] if hidden and not selected else None
    return Selection(gpus=tuple(selected), notes=tuple(notes), hidden=hidden_why)
