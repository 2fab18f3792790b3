"""numa-exec as a file: shellcheck clean, executable, free of what it promises to avoid."""

from __future__ import annotations

import os
import re
import subprocess

from tests.conftest import require_tool
from tests.launcher.conftest import SCRIPT


def script_lines() -> list[str]:
    return SCRIPT.read_text().splitlines()


def test_shellcheck_finds_nothing() -> None:
    shellcheck = require_tool("shellcheck")

    result = subprocess.run([shellcheck, "--shell=sh", str(SCRIPT)], capture_output=True,
                            text=True, check=False)

    assert result.returncode == 0, result.stdout


def test_every_disabled_shellcheck_check_says_why() -> None:
    disables = [line for line in script_lines() if "shellcheck disable=" in line]

    for line in disables:
        assert re.search(r"disable=SC\d+(,SC\d+)*\s+#\s*\S.{10,}", line), line


def test_the_script_is_an_executable_posix_sh_script() -> None:
    assert script_lines()[0] == "#!/bin/sh"
    assert os.access(SCRIPT, os.X_OK)


def split_script() -> tuple[str, str]:
    """The shell code (comments dropped) and the awk program embedded in it."""
    text = SCRIPT.read_text()
    start = text.index("gn_awk='") + len("gn_awk='")
    end = text.index("\n'\n", start)
    shell = text[:start] + text[end:]
    code = [
        line.split(" #", 1)[0] for line in shell.splitlines() if not line.lstrip().startswith("#")
    ]
    return "\n".join(code), text[start:end]


def test_the_script_never_evaluates_and_writes_no_files() -> None:
    shell, awk = split_script()

    assert not re.search(r"\beval\b", shell)
    assert "<<" not in shell  # here-documents are temporary files in some shells
    for target in re.findall(r"[0-9]?>>?\s*([^\s);]+)", shell):
        assert target in ("&2", "&1", "/dev/null"), target
    # awk only reads: no print or printf into a file or a pipe, no system().
    for line in awk.splitlines():
        if re.search(r"\bprintf?\b", line):
            assert ">" not in line.split("print", 1)[1], line
            assert "|" not in line, line
    assert "system(" not in awk
