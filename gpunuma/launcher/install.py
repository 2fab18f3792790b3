"""``gpunuma install-launcher DIR``: put numa-exec into DIR from the main image.

The launcher image's own ``/numa-exec --install DIR`` is what the webhook injects; this command does
the same from the gpunuma image, with the binary the package carries for this machine's
architecture. The copy is atomic (a temporary file in DIR, made executable, then renamed over
``DIR/numa-exec``), so a container that starts while an init container is being retried never sees
half a file. It imports only the standard library.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

from gpunuma.launcher import BINARY_NAME, binary_path, machine_architecture

__all__ = ["InstallError", "install", "main", "packaged_binary"]

EXIT_FAILED = 1
MODE = 0o755


class InstallError(Exception):
    """numa-exec could not be installed; the message says what to fix."""


def packaged_binary(machine: str | None = None) -> Path:
    """The numa-exec this package carries for ``machine`` (default: this one), or a clear error."""
    architecture = machine_architecture(machine)
    if architecture is None:
        raise InstallError(
            f"numa-exec is built for amd64 and arm64, not {machine or platform.machine()}; "
            "run the pod on one of those"
        )
    path = binary_path(architecture)
    if not path.is_file():
        raise InstallError(
            f"this gpunuma package has no numa-exec for {architecture} ({path}); build it with "
            "`make -C launcher native package` in a source checkout (gcc or musl-gcc), "
            "or use the launcher image, whose /numa-exec --install DIR does the same"
        )
    return path


def install(directory: Path, source: Path | None = None) -> Path:
    """Copy numa-exec (or ``source``) to ``directory/numa-exec`` atomically with mode 0755."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise InstallError(
            f"{directory} {what}; create it first "
            "(in a pod: mount the gpunuma-launcher emptyDir there)"
        )
    source = source or packaged_binary()
    try:
        content = source.read_bytes()
    except OSError as exc:
        raise InstallError(
            f"cannot read {source} ({exc.strerror}); reinstall the gpunuma package"
        ) from None
    target = directory / BINARY_NAME
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{BINARY_NAME}.")
    except OSError as exc:
        raise InstallError(
            f"cannot write into {directory} ({exc.strerror}); mount it writable for this container"
        ) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            # mkstemp creates 0600; set the mode on the open file so the umask plays no part.
            os.fchmod(stream.fileno(), MODE)
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InstallError(f"cannot install {target} ({exc.strerror})") from None
    return target


def main(directory: Path) -> int:
    """The CLI entry: one line on stderr and a non-zero status when it fails."""
    try:
        target = install(directory)
    except InstallError as exc:
        print(f"gpunuma install-launcher: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"gpunuma install-launcher: installed {target}")
    return 0
