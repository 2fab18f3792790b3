"""``gpunuma install-launcher DIR``: put numa-exec into DIR, as the webhook's init container does.

The copy is atomic (a temporary file in DIR, made executable, then renamed over ``DIR/numa-exec``),
so a container that starts while an init container is being retried never sees half a script. It
imports only the standard library: it runs in every injected pod and must start in milliseconds.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from gpunuma.launcher import SCRIPT_NAME, script_path

__all__ = ["install", "main"]

EXIT_FAILED = 1
MODE = 0o755


class InstallError(Exception):
    """numa-exec could not be installed; the message says what to fix."""


def install(directory: Path, source: Path | None = None) -> Path:
    """Copy numa-exec (or ``source``) to ``directory/numa-exec`` atomically with mode 0755."""
    source = source or script_path()
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise InstallError(
            f"{directory} {what}; create it first "
            "(in a pod: mount the gpunuma-launcher emptyDir there)"
        )
    try:
        content = source.read_bytes()
    except OSError as exc:
        raise InstallError(
            f"cannot read {source} ({exc.strerror}); reinstall the gpunuma package"
        ) from None
    target = directory / SCRIPT_NAME
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{SCRIPT_NAME}.")
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
