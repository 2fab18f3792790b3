"""The container image, checked without Docker: pinned dependencies, non-root user, entrypoint, context.

Docker cannot run here, so these tests read the Dockerfile, .dockerignore and constraints.txt and
check them against what they must agree with: pyproject.toml, the installed dependency tree, the
chart, and the paths the webhook mounts into pods.
"""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import metadata

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from gpunuma import __version__, names
from tests.chart.render import CHART, REPO


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def pinned() -> dict[str, Version]:
    pins = {}
    for raw in (REPO / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            operators = [specifier.operator for specifier in requirement.specifier]
            assert operators == ["=="], f"not an exact pin: {line}"
            specifiers = list(requirement.specifier)
            pins[canonicalize_name(requirement.name)] = Version(specifiers[0].version)
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def dependency_closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the runtime dependencies pull in, as installed in this environment."""
    seen: set[str] = set()
    stack = list(requirements)
    while stack:
        requirement = stack.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        stack.extend(Requirement(text) for text in metadata.distribution(requirement.name).requires or [])
    return seen


def test_every_runtime_dependency_is_pinned_to_a_version_pyproject_allows() -> None:
    pins = pinned()
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency in pyproject.toml but not pinned in constraints.txt"
        assert pins[name] in requirement.specifier, f"{name}=={pins[name]} violates {requirement}"


def test_every_transitive_runtime_dependency_is_pinned_too() -> None:
    missing = dependency_closure(runtime_requirements()) - set(pinned())
    assert missing == set(), f"unpinned transitive dependencies: {sorted(missing)}"


def test_the_constraints_hold_no_test_or_build_tools() -> None:
    assert not set(pinned()) & {"pytest", "mypy", "ruff", "hypothesis", "kmock", "setuptools", "pip"}


def test_the_image_installs_with_the_constraints() -> None:
    runs = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN"]
    assert any("--constraint constraints.txt ." in run for run in runs)
    copied = " ".join(arguments for keyword, arguments in dockerfile_instructions() if keyword == "COPY")
    assert "constraints.txt" in copied


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), "USER must be numeric (runAsNonRoot can only verify numbers)"
    assert int(user) != 0
    assert group.isdigit()
    assert int(group) != 0
    # The chart's restricted pods rely on it: they pin no UID, so OpenShift can assign its own.
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    restricted = helpers.split('define "gpunuma.restrictedPodSecurityContext"')[1].split("end")[0]
    assert "runAsNonRoot: true" in restricted
    assert "runAsUser" not in restricted


def test_the_entrypoint_is_the_gpunuma_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoints = [arguments for keyword, arguments in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints == ['["gpunuma"]']
    assert scripts["gpunuma"] == "gpunuma.cli:main"


def test_the_environment_is_not_hidden_by_the_launcher_mount() -> None:
    # install-launcher may run this image with an emptyDir mounted at LAUNCHER_MOUNT_PATH. (The
    # launcher image's stages come first and name that path on purpose: it is where they install.)
    instructions = dockerfile_instructions()
    python_start = next(i for i, (keyword, arguments) in enumerate(instructions)
                        if keyword == "FROM" and arguments.startswith("${PYTHON_IMAGE}"))
    paths = {
        word.strip('",:;[]').split("=")[-1]
        for _, arguments in instructions[python_start:]
        for word in arguments.replace(":", " ").split()
        if "/" in word
    }
    assert "/usr/local/gpunuma/bin" in paths
    hidden = {path for path in paths
              if path == names.LAUNCHER_MOUNT_PATH or path.startswith(names.LAUNCHER_MOUNT_PATH + "/")}
    assert hidden == set()


def test_both_python_stages_use_the_same_python_base() -> None:
    froms = [arguments.split()[0] for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    # The launcher's build and image stages come first (tests/launcher/test_image.py).
    assert froms == ["${BUILD_IMAGE}", "scratch", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def included_by_dockerignore(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    included = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        matches = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if matches or fnmatch.fnmatch(parts[-1], pattern):
            included = negate
    return included


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    for needed in ("constraints.txt", "pyproject.toml", "README.md", "gpunuma/cli.py",
                   "gpunuma/kubectl/command.py"):
        assert included_by_dockerignore(needed), needed
    for left_out in (".git/HEAD", "tests/conftest.py", "charts/gpunuma/values.yaml", "benchmarks/x.py",
                     "gpunuma/__pycache__/cli.cpython-311.pyc"):
        assert not included_by_dockerignore(left_out), left_out


def test_the_chart_deploys_the_image_of_this_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert values["image"]["repository"] == "ghcr.io/gpunuma/gpunuma"
    from gpunuma.settings import DEFAULT_LAUNCHER_IMAGE

    expected = f"{values['launcher']['image']['repository']}:{chart['appVersion']}"
    assert expected == DEFAULT_LAUNCHER_IMAGE
