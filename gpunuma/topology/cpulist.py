"""Linux cpulist strings ("0-55,112-167") to sets of CPU ids and back.

The kernel writes cpulists as ascending, comma-separated ids and inclusive ranges, followed by a
newline; an empty string means no CPUs (a memory-only NUMA node). We accept what the kernel writes
plus surrounding whitespace, and reject anything else with a message that quotes the bad part, since
a silently misread cpulist would pin a workload to the wrong CPUs.
"""

from __future__ import annotations

from collections.abc import Iterable

from gpunuma.quote import short

__all__ = ["MAX_CPUS", "CpuListError", "format_cpulist", "parse_cpulist"]

# No Linux machine has more CPUs: the kernel's NR_CPUS tops out at 8192 (x86-64 and arm64 alike).
# A cpulist is bounded by it twice: no id at or above it, and no more ids in all (ranges counted
# with their repeats), so that a hostile layout ("0-65535," a hundred times: 1 KiB) costs at most
# MAX_CPUS set insertions per cpulist instead of millions.
MAX_CPUS = 8192
MAX_CPU_ID = MAX_CPUS - 1


class CpuListError(ValueError):
    """A cpulist string that is not in the kernel's format."""


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a kernel cpulist such as ``"0-3,8,10-11\\n"`` into a set of CPU ids."""
    stripped = text.strip()
    if not stripped:
        return frozenset()
    whole = short(stripped)
    cpus: set[int] = set()
    named = 0
    for part in stripped.split(","):
        item = part.strip()
        if not item:
            raise CpuListError(f"cpulist {whole} has an empty entry; expected e.g. '0-3,8'")
        low_text, dash, high_text = item.partition("-")
        low = _parse_cpu_id(low_text, whole)
        high = _parse_cpu_id(high_text, whole) if dash else low
        if high < low:
            raise CpuListError(
                f"cpulist {whole} has the descending range {short(item)}; write it as "
                f"'{high}-{low}'"
            )
        named += high - low + 1
        if named > MAX_CPUS:
            raise CpuListError(
                f"cpulist {whole} names more than {MAX_CPUS} CPUs, more than a Linux machine can "
                "have (NR_CPUS); it is not a real machine's cpulist"
            )
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def _parse_cpu_id(text: str, whole: str) -> int:
    item = text.strip()
    if not item.isdecimal() or not item.isascii():
        raise CpuListError(
            f"cpulist {whole} has {short(item)} where a CPU number was expected; "
            "expected e.g. '0-3,8'"
        )
    if len(item) > 5 or int(item) > MAX_CPU_ID:
        raise CpuListError(
            f"cpulist {whole} names CPU {short(item)}, above {MAX_CPU_ID}, the highest CPU id a "
            "Linux machine can have (NR_CPUS is at most 8192)"
        )
    return int(item)



def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPU ids as the kernel does: ascending, every run of consecutive ids as a range.

    The kernel collapses every run of consecutive ids, including a run of two ("4-5"), so we do too:
    the output of this function is byte-identical to what ``/sys`` would show for the same set.
    """
    ordered = sorted(set(cpus))
    if ordered and ordered[0] < 0:
        raise CpuListError(f"CPU ids cannot be negative: {ordered[0]}")
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        start = ordered[index]
        end = start
        while index + 1 < len(ordered) and ordered[index + 1] == end + 1:
            index += 1
            end = ordered[index]
        parts.append(str(start) if start == end else f"{start}-{end}")
        index += 1
    return ",".join(parts)
