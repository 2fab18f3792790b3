"""Linux cpulist strings ("0-55,112-167") to sets of CPU ids and back.

The kernel writes cpulists as ascending, comma-separated ids and inclusive ranges, followed by a
newline; an empty string means no CPUs (a memory-only NUMA node). We accept what the kernel writes
plus surrounding whitespace, and reject anything else with a message that quotes the bad part, since
a silently misread cpulist would pin a workload to the wrong CPUs.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CpuListError", "format_cpulist", "parse_cpulist"]

# Far above any real machine (the kernel's NR_CPUS tops out at 8192), low enough that a typo such as
# "0-999999999" cannot make us build a billion-element set.
MAX_CPU_ID = 65535


class CpuListError(ValueError):
    """A cpulist string that is not in the kernel's format."""


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse a kernel cpulist such as ``"0-3,8,10-11\\n"`` into a set of CPU ids."""
    stripped = text.strip()
    if not stripped:
        return frozenset()
    cpus: set[int] = set()
    for part in stripped.split(","):
        item = part.strip()
        if not item:
            raise CpuListError(f"cpulist {stripped!r} has an empty entry; expected e.g. '0-3,8'")
        low_text, dash, high_text = item.partition("-")
        low = _parse_cpu_id(low_text, stripped)
        high = _parse_cpu_id(high_text, stripped) if dash else low
        if high < low:
            raise CpuListError(
                f"cpulist {stripped!r} has the descending range {item!r}; write it as '{high}-{low}'"
            )
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def _parse_cpu_id(text: str, whole: str) -> int:
    item = text.strip()
    if not item.isdecimal() or not item.isascii():
        raise CpuListError(
            f"cpulist {whole!r} has {item!r} where a CPU number was expected; expected e.g. '0-3,8'"
        )
    value = int(item)
    if value > MAX_CPU_ID:
        raise CpuListError(f"cpulist {whole!r} names CPU {value}, above the maximum {MAX_CPU_ID}")
    return value


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
