"""Where a mount path lies from gpunuma's ``/opt/gpunuma``, with the shortcut for ordinary paths.

``below_launcher`` answers most paths without cleaning them (no ``opt``, no ``..``); over paths
built from the characters that matter, it must answer exactly what cleaning every path answers.
"""

from __future__ import annotations

import posixpath

from hypothesis import given, settings
from hypothesis import strategies as st

from gpunuma import names
from gpunuma.webhook.clashes import below_launcher


def _cleaned_answer(path: str) -> str | None:
    """The answer worked out another way: clean the path, then compare common prefixes."""
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    ours = names.LAUNCHER_MOUNT_PATH
    common = posixpath.commonpath([cleaned, ours])
    if cleaned == ours:
        return "at"
    return "below" if common == ours else "above" if common == cleaned else None


_PARTS = st.sampled_from(["/", ".", "..", "opt", "gpunuma", "data", "o", "pt", "x", "//", "./"])


@settings(max_examples=2000)
@given(path=st.lists(_PARTS, max_size=8).map("".join))
def test_the_shortcut_answers_as_cleaning_the_path_does(path):
    assert below_launcher(path) == _cleaned_answer(path)


def test_ordinary_and_tricky_paths():
    assert below_launcher("/data") is None
    assert below_launcher("/data/..") == "above"  # cleans to /
    assert below_launcher("") == "above"
    assert below_launcher("/./") == "above"
    assert below_launcher("/opt") == "above"
    assert below_launcher("/opt/gpunuma/") == "at"
    assert below_launcher("/x/../opt/gpunuma/cache") == "below"
    assert below_launcher("/optimal") is None
    assert below_launcher(None) == "above"
