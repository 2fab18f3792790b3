"""Build the krew archive of ``kubectl gpunuma`` and write its sha256 into the krew manifest.

Run: ``python3 plugins/krew/build.py [OUTDIR]`` (default ``dist/``). The archive holds the two shims
beside this file (the plugin and its completion, both running the gpunuma package of ``python3``)
and the licence notice. It is reproducible: fixed order, owner and modification time, so the same
sources always give the same sha256 and the manifest in the repository can be checked by a test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "gpunuma.yaml"
FILES = ("kubectl-gpunuma", "kubectl_complete-gpunuma")
ARCHIVE = "kubectl-gpunuma.tar.gz"
EPOCH = 0  # fixed mtime: reproducible archives


def archive_bytes() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in FILES:
            data = (HERE / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=EPOCH)


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("dist")
    data = archive_bytes()
    out.mkdir(parents=True, exist_ok=True)
    (out / ARCHIVE).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    text = MANIFEST.read_text()
    MANIFEST.write_text(re.sub(r"sha256: [0-9a-f]{64}", f"sha256: {digest}", text))
    print(f"{out / ARCHIVE}: sha256 {digest} (written into {MANIFEST.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
