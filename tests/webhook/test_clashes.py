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
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    ours = names.LAUNCHER_MOUNT_PATH
    if cleaned == ours:
        return "at"
    if cleaned.startswith(ours + "/"):
        return "below"
    if ours.startswith(cleaned.rstrip("/") + "/"):
        return "above"
    return None


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
