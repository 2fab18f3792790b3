"""Builds numa-exec (C, ``launcher/``) into the package before setuptools collects package data.

So ``pip install .`` from a checkout ships the binary ``gpunuma install-launcher`` copies
(``gpunuma/launcher/bin/numa-exec-<arch>``). Everything else about the package is in
pyproject.toml. Without make and a C compiler the package installs without the binary, and
``gpunuma install-launcher`` then says how to build it; the Docker image copies a binary built in
its own stage instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

LAUNCHER = Path(__file__).resolve().parent / "launcher"


class BuildPyWithLauncher(build_py):
    def run(self) -> None:
        if not (LAUNCHER / "Makefile").is_file():
            pass  # an sdist or image build without the C sources: nothing to build here
        elif shutil.which("make") and (shutil.which("musl-gcc") or shutil.which("gcc")):
            built = subprocess.run(["make", "-s", "-C", str(LAUNCHER), "native", "package"],
                                   check=False)
            if built.returncode != 0:
                sys.stderr.write("warning: numa-exec did not build (above); gpunuma install-launcher "
                                 "will say how to build it\n")
        else:
            sys.stderr.write("warning: no make and gcc: gpunuma is installed without numa-exec; "
                             "gpunuma install-launcher will say how to build it\n")
        super().run()


setup(cmdclass={"build_py": BuildPyWithLauncher})
