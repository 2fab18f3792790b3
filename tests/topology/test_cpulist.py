"""cpulists as the kernel writes them, and the garbage we must refuse to guess at."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpunuma.topology import CpuListError, format_cpulist, parse_cpulist


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-3,8,10-11\n", {0, 1, 2, 3, 8, 10, 11}),
        ("0-55,112-167", set(range(56)) | set(range(112, 168))),
        ("5", {5}),
        ("  0-1 \n", {0, 1}),
        ("", set()),
        ("\n", set()),
        ("0 - 2 , 4", {0, 1, 2, 4}),
    ],
)
def test_kernel_cpulists_parse_to_cpu_sets(text: str, expected: set[int]) -> None:
    assert parse_cpulist(text) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("0-", "''"),
        ("a", "'a'"),
        ("3-1", "'3-1'"),
        ("0,,1", "empty entry"),
        ("0-99999999", "99999999"),
        ("1.5", "'1.5'"),
        ("-1", "''"),
        ("0-3:2", "'3:2'"),
    ],
)
def test_garbage_is_refused_with_a_message_that_quotes_it(text: str, named: str) -> None:
    with pytest.raises(CpuListError) as caught:
        parse_cpulist(text)
    assert named in str(caught.value)


def test_a_descending_range_message_says_how_to_write_it() -> None:
    with pytest.raises(CpuListError, match="write it as '1-3'"):
        parse_cpulist("3-1")


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        ({0, 1, 2, 3, 8, 10, 11}, "0-3,8,10-11"),
        ({4, 5}, "4-5"),
        ({7}, "7"),
        (set(), ""),
        ([3, 1, 2, 2], "1-3"),
    ],
)
def test_cpu_sets_format_the_way_sysfs_shows_them(cpus: set[int], expected: str) -> None:
    assert format_cpulist(cpus) == expected


def test_negative_cpu_ids_cannot_be_formatted() -> None:
    with pytest.raises(CpuListError, match="negative"):
        format_cpulist([-1, 0])


@given(st.sets(st.integers(min_value=0, max_value=1023), max_size=200))
def test_formatting_then_parsing_gives_back_the_same_cpus(cpus: set[int]) -> None:
    text = format_cpulist(cpus)
    assert parse_cpulist(text) == cpus
    assert format_cpulist(parse_cpulist(text + "\n")) == text


def test_the_largest_real_machine_parses() -> None:
    assert len(parse_cpulist("0-8191")) == 8192


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("0-65535," * 100 + "0", "65535"),  # the review's 1 KiB layout: 6.5 M insertions before
        ("8192", "8192"),
        ("0-4095,0-4095,0", "more than 8192 CPUs"),  # repeats count: the work is bounded
        ("0," * 9000 + "0", "more than 8192 CPUs"),
        ("0-" + "9" * 5000, "above 8191"),  # a 5000-digit number is not converted whole
    ],
)
def test_a_cpulist_larger_than_a_real_machine_is_refused(text: str, named: str) -> None:
    with pytest.raises(CpuListError, match="Linux machine") as caught:
        parse_cpulist(text)
    assert named in str(caught.value)
    assert len(str(caught.value)) < 400, "the message must not echo the whole input"
