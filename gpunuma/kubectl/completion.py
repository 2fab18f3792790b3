"""Shell completion for ``kubectl gpunuma``, through kubectl's own completion (kubectl ≥ 1.26).

kubectl completes a plugin's words by running ``kubectl_complete-<plugin> ARGS… WORD`` from PATH,
where WORD is the word being completed (empty for a new word), and reading Cobra's ``__complete``
answer: one candidate a line, optionally ``candidate<TAB>description``, then ``:<directive>``.
The console script ``kubectl_complete-gpunuma`` is this module's :func:`main`. It completes
subcommands, flags and ``-o`` values without contacting the cluster: a completion must answer at
once, so pod names are not offered (that would be a request to the API server on every <TAB>).
The subcommands are defined here, the lightest module of the plugin, and the parser reads them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "OUTPUTS", "complete", "main"]

# Cobra's ShellCompDirective values.
NO_FILE_COMPLETION = 4

# The subcommands and what each shows (the parser's help reads them too).
COMMANDS = {
    "nodes": "GPU nodes: layout, GPUs per NUMA node (GPU indices), source, staleness",
    "pods": "managed pods: policy, NUMA nodes, cpuset (wrapped containers under -o wide)",
    "explain": "why a pod was or was not bound",
}
# What -o takes: the two tables, and the two machine-readable forms.
OUTPUTS = ("table", "wide", "json", "yaml")
# The flags: tests/kubectl/test_completion.py holds this list to the parser's.
FLAGS = {
    "--kubeconfig": "kubeconfig file", "--context": "kubeconfig context",
    "--namespace": "namespace of pods", "--all-namespaces": "pods of every namespace",
    "--selector": "label selector", "--output": "table, wide, json or yaml", "--help": "usage",
    "--gpu-resources": "resource names that mean GPU (explain)", "--version": "the plugin's version",
}
TAKES_VALUE = {"--kubeconfig", "--context", "-n", "--namespace", "-l", "--selector", "-o", "--output",
               "--gpu-resources"}


def complete(args: Sequence[str]) -> list[str]:
    """Candidate lines (before the directive) for the last word of ``args``."""
    words = list(args) or [""]
    current, before = words[-1], words[:-1]
    previous = before[-1] if before else ""
    if previous in ("-o", "--output"):
        return [value for value in OUTPUTS if value.startswith(current)]
    if current.startswith("--output="):
        return [f"--output={value}" for value in OUTPUTS if f"--output={value}".startswith(current)]
    if current.startswith("-"):
        return [f"{flag}\t{text}" for flag, text in FLAGS.items() if flag.startswith(current)]
    if previous in TAKES_VALUE:
        return []
    positional = [word for index, word in enumerate(before)
                  if not word.startswith("-") and (index == 0 or before[index - 1] not in TAKES_VALUE)]
    if not positional:
        return [f"{name}\t{text}" for name, text in COMMANDS.items() if name.startswith(current)]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    lines = complete(sys.argv[1:] if argv is None else argv)
    sys.stdout.write("".join(f"{line}\n" for line in lines) + f":{NO_FILE_COMPLETION}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
