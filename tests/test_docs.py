"""The documentation holds together: every relative link and anchor in README.md and docs/*.md
resolves, every documented ``gpunuma`` and ``kubectl gpunuma`` command line parses, and no help text
points at a document users cannot read."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpunuma import cli
from gpunuma.kubectl import command as kubectl

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0)[1:-1], heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()
    kept = "".join(
        c for c in text
        if c in " -_" or unicodedata.category(c)[0] in "LN"
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text())):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(page: Path) -> Iterator[str]:
    prose = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    for match in LINK.finditer(prose):
        yield match.group(1)


def test_the_slug_rule_matches_githubs() -> None:
    assert slug("6. The launcher's contract (numa-exec)") == "6-the-launchers-contract-numa-exec"
    assert slug("`gpunuma inspect`") == "gpunuma-inspect"
    assert slug("Install on a cluster") == "install-on-a-cluster"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: {destination} does not exist")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    readme_links = {link.partition("#")[0] for link in links(ROOT / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme_links]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def documented_commands() -> Iterator[tuple[str, str]]:
    """(page, command line) for every gpunuma or kubectl gpunuma invocation in a shell block."""
    for page in PAGES:
        for block in re.finditer(r"^```(\w*)\n(.*?)^```[ \t]*$", page.read_text(), re.S | re.M):
            if block.group(1) not in {"", "sh", "console", "bash"}:
                continue
            text = block.group(2).replace("\\\n", " ")
            for raw in text.splitlines():
                line = raw.removeprefix("$ ").strip()
                if "gpunuma " not in line:
                    continue
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                words: list[str] = []
                redirected = False
                for word in [*lexer, ";"]:
                    if word in {">", ">>", "<", "2>", "&>"}:
                        redirected = True  # the shell's, with its file name: not the command's
                        continue
                    if redirected:
                        redirected = False
                        continue
                    if word not in {"&&", "||", "|", ";", "&"}:
                        words.append(word)
                        continue
                    while words and re.match(r"^[A-Z_]+=", words[0]):
                        words = words[1:]  # VARIABLE=value before the command
                    if words and words[0].endswith("bin/gpunuma"):
                        words[0] = "gpunuma"
                    if words[1:2] and words[1].endswith(":"):
                        words = []  # a program's output line ("gpunuma install-launcher: installed …")
                        continue
                    if words[:1] == ["gpunuma"] or words[:2] == ["kubectl", "gpunuma"]:
                        yield page.name, shlex.join(words)
                    words = []


COMMANDS = sorted(set(documented_commands()))


def test_the_docs_document_commands() -> None:
    documented = {command.split()[1] for _, command in COMMANDS if command.startswith("gpunuma")}
    assert {"inspect", "install-launcher", "inject"} <= documented
    assert any(command.startswith("kubectl gpunuma explain") for _, command in COMMANDS)


@pytest.mark.parametrize(("page", "command"), COMMANDS)
def test_every_documented_command_line_parses(page: str, command: str) -> None:
    words = shlex.split(command)
    parser = kubectl.build_parser() if words[0] == "kubectl" else cli.build_parser()
    arguments = words[2:] if words[0] == "kubectl" else words[1:]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(arguments)
    except SystemExit as exc:
        pytest.fail(f"{page}: `{command}` does not parse: {stderr.getvalue().strip()} ({exc.code})")


def help_texts() -> Iterator[str]:
    for parser in (cli.build_parser(), kubectl.build_parser()):
        yield parser.format_help()
        for action in parser._subparsers._group_actions if parser._subparsers else ():
            for sub in action.choices.values():
                yield sub.format_help()


def test_no_help_text_points_at_a_document_users_do_not_have() -> None:
    for text in help_texts():
        assert "DESIGN" not in text, text
        for page in re.findall(r"docs/[\w.-]+\.md", text):
            assert (ROOT / page).exists(), page
