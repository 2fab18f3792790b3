"""YAML read as Kubernetes reads it, and written back changing nothing but what was edited.

``kubectl`` reads manifests with go-yaml v2 (through sigs.k8s.io/yaml), whose rules for plain
scalars are neither YAML 1.1's nor 1.2's: ``y``, ``on`` and ``no`` are booleans, ``08`` and
``1e-4`` are floats, ``0o17`` is 15, ``1:20`` and ``2024-01-01`` stay strings. A library that
re-serialises a manifest by its own rules writes ``"1e-4"`` back as ``1e-4`` and the API server
then gets a number where a string belongs.

So a stream is split into its documents' own text. ``Document.value`` is what Kubernetes decodes
(go-yaml v2's rules, ported in ``decode_plain``); ``Document.render(new_value)`` gives the
original text, byte for byte, when the value did not change, and otherwise the document edited in
place with ruamel.yaml's round-trip model: comments, key order, quoting and flow style of what was
not edited survive. Every plain scalar that is not a string to every YAML reader (go-yaml v2,
YAML 1.1, YAML 1.2) is kept as its source text, so it is written back exactly as it was read;
every string written anew is quoted when any of those readers would take it for something else.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import ScalarNode, SequenceNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.resolver import BaseResolver, VersionedResolver
from ruamel.yaml.scalarstring import LiteralScalarString
from ruamel.yaml.tag import Tag

from gpunuma.webhook.jsonvalue import same_json

__all__ = ["Document", "KubeYAMLError", "decode_plain", "plain_is_string", "read"]

_PREFIX = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = (_PREFIX + t for t in ("str", "null", "bool", "int", "float"))
_TIMESTAMP, _MERGE, _SEQ, _MAP = (_PREFIX + t for t in ("timestamp", "merge", "seq", "map"))
# A plain scalar that go-yaml reads as a string but YAML 1.1 or 1.2 would not (``1:20``, ``=``):
# kept as written, and a new string with that text is quoted.
_AMBIGUOUS = _PREFIX + "gpunuma-ambiguous"

# go-yaml v2's resolve table (resolve.go): the words it reads as booleans and nulls.
_GO_WORDS: dict[str, object] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"),
                    False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
# Go's strconv.ParseInt(s, 0, 64) syntax, after go-yaml has removed every underscore.
_GO_INT = re.compile(r"([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
# go-yaml v2's yamlStyleFloat, which a scalar must match before strconv.ParseFloat is tried.
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
# Go's ParseFloat for a scalar that starts with "." (go-yaml tries it unguarded there).
_GO_DOT_FLOAT = re.compile(r"\.[0-9](_?[0-9])*([eE][-+]?[0-9]+)?\Z")
# go-yaml's parseTimestamp quick check: four digits and a dash. Such a scalar stays a string in
# what kubectl sends, but other readers take it for a date, so a new one is quoted.
_TIMESTAMP_START = re.compile(r"[0-9]{4}-")
_YAML11 = pyyaml.resolver.Resolver()
_YAML12 = VersionedResolver(version=(1, 2))


class KubeYAMLError(ValueError):
    """The text is not YAML that Kubernetes could read; the message says where."""


def decode_plain(text: str) -> object:
    """The value go-yaml v2 gives a plain (unquoted, untagged) scalar when kubectl decodes it."""
    if text in _GO_WORDS:
        return _GO_WORDS[text]
    first = text[:1]
    if first == ".":
        if _GO_DOT_FLOAT.match(text):
            number = float(text.replace("_", ""))
            if not math.isinf(number):  # ParseFloat's range error: go-yaml keeps the string
                return number
        return text
    if first and first in "+-0123456789":
        if _TIMESTAMP_START.match(text):
            return text
        plain = text.replace("_", "")
        match = _GO_INT.match(plain)
        if match:
            sign, digits = match.groups()
            legacy_octal = len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()
            number = int(digits, 8) if legacy_octal else int(digits, 0)
            number = -number if sign == "-" else number
            # ParseInt's int64, else ParseUint's uint64 (which takes no sign).
            if -(2**63) <= number < 2**63 or (not sign and number < 2**64):
                return number
        if _GO_FLOAT.match(plain):
            number_f = float(plain)
            if not math.isinf(number_f):  # ParseFloat's range error: go-yaml keeps the string
                return number_f
    return text


def plain_is_string(text: str) -> bool:
    """True when ``text`` written unquoted is the same string to go-yaml, YAML 1.1 and 1.2."""
    return (isinstance(decode_plain(text), str) and not _TIMESTAMP_START.match(text)
            and _yaml11_tag(text) == _STR
            and str(_YAML12.resolve(ScalarNode, text, (True, False))) == _STR)


def _yaml11_tag(text: str) -> str:
    tag: str = _YAML11.resolve(pyyaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return tag


def _plain_tag(text: str) -> str:
    if text == "<<":
        return _MERGE
    value = decode_plain(text)
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if _TIMESTAMP_START.match(text):
        return _TIMESTAMP
    return _STR if plain_is_string(text) else _AMBIGUOUS


class _Resolver(BaseResolver):
    """Plain scalars typed by ``_plain_tag``; the same rules decide quoting on the way out."""

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        super().__init__(loader if loader is not None else loadumper)

    @property
    def processing_version(self) -> tuple[int, int]:
        # go-yaml v2 descends from libyaml, whose grammar is YAML 1.1's (e.g. ':' in a flow
        # collection always ends a key).
        return (1, 1)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode:
            return Tag(suffix=_plain_tag(value) if implicit[0] else _STR)
        return Tag(suffix=_SEQ if kind is SequenceNode else _MAP)


@dataclass(frozen=True, slots=True)
class _Plain:
    """A plain scalar that is not a string to every reader: its text, and go-yaml's value."""

    text: str
    value: object = field(compare=False, hash=False)


class _Constructor(RoundTripConstructor):
    pass


def _construct_plain(constructor: Any, node: Any) -> object:
    text = node.value
    if node.style or text == "":  # quoted under an explicit tag, or an empty (null) value
        return decode_plain(text) if text else None
    return _Plain(text, decode_plain(text))


for _tag in (_NULL, _BOOL, _INT, _FLOAT, _TIMESTAMP, _AMBIGUOUS):
    _Constructor.add_constructor(_tag, _construct_plain)


class _Representer(RoundTripRepresenter):
    pass


def _represent_plain(representer: Any, data: _Plain) -> Any:
    return representer.represent_scalar(_plain_tag(data.text), data.text)


def _represent_str(representer: Any, data: str) -> Any:
    # The resolver marks a string that must be quoted; a multi-line one reads best as a block.
    style = "|" if "\n" in data else None
    return representer.represent_scalar(_STR, data, style=style)


_Representer.add_representer(_Plain, _represent_plain)
_Representer.add_representer(str, _represent_str)


def _yaml() -> YAML:
    handler = YAML(typ="rt", pure=True)
    handler.Resolver = _Resolver
    handler.Constructor = _Constructor
    handler.Representer = _Representer
    handler.preserve_quotes = True
    handler.width = 1 << 30  # never fold a long line: users diff the output
    return handler


@dataclass
class Document:
    """One document of a stream: its own text and the value Kubernetes reads from it."""

    text: str
    value: Any
    _tree: Any = field(default=None, repr=False)
    _shared: set[int] = field(default_factory=set, repr=False)
    _explicit_end: bool = field(default=False, repr=False)  # closed by "..."

    def render(self, value: Any) -> str:
        """The text of this document holding ``value``: the original text if it is the same."""
        if same_json(self.value, value):
            return self.text
        handler = _yaml()
        mapping, sequence, offset = _guess_indent(self.text)
        handler.indent(mapping=mapping, sequence=sequence, offset=offset)
        handler.explicit_start = self.text.lstrip().startswith(("---", "%"))
        handler.explicit_end = self._explicit_end
        tree = _update(self._tree, self.value, value, self._shared)
        out = io.StringIO()
        handler.dump(tree, out)
        return out.getvalue()


_BOUNDARY_LOADER = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)


def read(text: str) -> tuple[str, list[Document]]:
    """The text before the first document (comments) and the documents of a YAML stream."""
    starts: list[int] = []
    explicit_ends: list[bool] = []
    # Only the documents' boundaries: libyaml's parser (YAML 1.1, as go-yaml's) finds them in a
    # fraction of the time ruamel's pure-Python one takes; its marks count characters.
    try:
        for event in pyyaml.parse(text, Loader=_BOUNDARY_LOADER):
            if isinstance(event, pyyaml.DocumentStartEvent) and event.start_mark is not None:
                starts.append(_with_directives(text, event.start_mark.index))
            elif isinstance(event, pyyaml.DocumentEndEvent):
                explicit_ends.append(bool(event.explicit))
    except pyyaml.YAMLError as exc:
        raise KubeYAMLError(str(exc)) from exc
    if not starts:
        return text, []
    documents = []
    for start, end, explicit_end in zip(starts, [*starts[1:], len(text)], explicit_ends,
                                        strict=True):
        piece = text[start:end]
        try:
            tree = _yaml().load(piece)
        except YAMLError as exc:
            raise KubeYAMLError(str(exc)) from exc
        expansion = _Expansion()
        value = _to_plain(tree, expansion)
        documents.append(Document(piece, value, tree, expansion.shared, explicit_end))
    return text[:starts[0]], documents


def _with_directives(text: str, start: int) -> int:
    """``start`` moved back over the ``%YAML``/``%TAG`` lines right before a ``---``."""
    while start > 0:
        line_start = text.rfind("\n", 0, start - 1) + 1
        if not text.startswith("%", line_start):
            break
        start = line_start
    return start


# --- The value Kubernetes reads ----------------------------------------------------------------


# Kubernetes expands aliases into copies; a few nested ones can expand a small file exponentially
# (go-yaml stops such "excessive aliasing" too), so expansion has a budget.
_EXPANSION_LIMIT = 100_000


@dataclass
class _Expansion:
    """Bookkeeping of ``_to_plain``: nodes met so far, being expanded, and met more than once."""

    count: int = 0
    """Nodes expanded a second time or more (through an alias)."""
    met: set[int] = field(default_factory=set)
    open: set[int] = field(default_factory=set)
    shared: set[int] = field(default_factory=set)


def _to_plain(node: Any, expansion: _Expansion) -> Any:
    """JSON-like value of a round-trip tree, aliases expanded into copies. Nodes met more than
    once (an anchor and its aliases) go into ``expansion.shared``: they are never edited in place.
    """
    if isinstance(node, _Plain):
        return node.value
    if isinstance(node, dict | list):
        if id(node) in expansion.open:
            raise KubeYAMLError("an alias refers to a node that contains it")
        anchor = getattr(node, "anchor", None)
        if id(node) in expansion.met or getattr(anchor, "value", None):
            # Aliased (or merged with "<<", which does not show here as a second visit).
            expansion.shared.add(id(node))
            expansion.count += 1
            if expansion.count > _EXPANSION_LIMIT:
                raise KubeYAMLError("excessive aliasing: the aliases expand to over "
                                    f"{_EXPANSION_LIMIT} nodes")
        expansion.met.add(id(node))
        expansion.open.add(id(node))
        if isinstance(node, dict):
            result: Any = {_key(key): _to_plain(value, expansion) for key, value in node.items()}
            if getattr(node, "merge", None):
                expansion.shared.add(id(node))  # its merged keys are not its own
        else:
            result = [_to_plain(item, expansion) for item in node]
        expansion.open.discard(id(node))
        return result
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, bytes):
        return node.decode("utf-8", "replace")
    return str(node) if isinstance(node, str) else getattr(node, "value", str(node))


def _key(key: Any) -> str:
    """A mapping key as sigs.k8s.io/yaml turns it into a JSON key."""
    value = key.value if isinstance(key, _Plain) else key
    if value is None:
        raise KubeYAMLError("a mapping key is null, which JSON cannot hold")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- Editing the round-trip tree ---------------------------------------------------------------


def _fresh(value: Any) -> Any:
    """A round-trip node for a new value: new objects every time, so nothing gets an anchor."""
    if isinstance(value, dict):
        return CommentedMap((key, _fresh(item)) for key, item in value.items())
    if isinstance(value, list):
        return CommentedSeq(_fresh(item) for item in value)
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value


def _update(node: Any, old: Any, new: Any, shared: set[int]) -> Any:
    """``node`` (read as ``old``) edited in place to read as ``new``; a new node if it must be."""
    if same_json(old, new):
        return node
    if id(node) in shared:
        return _fresh(new)
    if isinstance(node, CommentedMap) and isinstance(old, dict) and isinstance(new, dict):
        keys = {_key(key): key for key in node}
        for name in [name for name in keys if name not in new]:
            del node[keys[name]]
        for name, value in new.items():
            if name not in keys:
                node[name] = _fresh(value)
            else:
                edited = _update(node[keys[name]], old[name], value, shared)
                if edited is not node[keys[name]]:
                    node[keys[name]] = edited
        return node
    if isinstance(node, CommentedSeq) and isinstance(old, list) and isinstance(new, list):
        _update_list(node, old, new, shared)
        return node
    return _fresh(new)


def _names(items: list[Any]) -> list[str] | None:
    found = [item.get("name") if isinstance(item, dict) else None for item in items]
    if all(isinstance(name, str) for name in found) and len(set(found)) == len(found):
        return found  # type: ignore[return-value]
    return None


def _update_list(node: CommentedSeq, old: list[Any], new: list[Any], shared: set[int]) -> None:
    """Edit ``node`` with the fewest insertions and deletions, keeping what stays (and its
    comments) where it is. Named items (containers, volumes, env) are matched by name."""
    old_names, new_names = _names(old), _names(new)
    if old_names is not None and new_names is not None:
        pairs = _common(old_names, new_names, lambda a, b: a == b)
    else:
        pairs = _common(old, new, same_json)
    kept_old = {i for i, _ in pairs}
    for index in sorted(set(range(len(old))) - kept_old, reverse=True):
        del node[index]
    # Now node holds the kept items in order; put each new item at its place.
    matched = dict((j, i) for i, j in pairs)
    for position, value in enumerate(new):
        if position in matched:
            i = matched[position]
            edited = _update(node[position], old[i], value, shared)
            if edited is not node[position]:
                node[position] = edited
        else:
            node.insert(position, _fresh(value))


def _common(old: list[Any], new: list[Any], equal: Any) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of ``old`` and ``new`` under ``equal``."""
    # The lists gpunuma edits are short (containers, mounts, a command); a plain table is enough.
    rows, cols = len(old), len(new)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(cols - 1, -1, -1):
            table[i][j] = (table[i + 1][j + 1] + 1 if equal(old[i], new[j])
                           else max(table[i + 1][j], table[i][j + 1]))
    pairs, i, j = [], 0, 0
    while i < rows and j < cols:
        if equal(old[i], new[j]):
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) as the document's author wrote them."""
    mapping, offset = 0, None
    previous: tuple[int, str] | None = None
    for line in _content_lines(text):
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if previous is not None and previous[1].endswith(":") and indent > previous[0]:
            if body.startswith("- ") or body == "-":
                offset = indent - previous[0] if offset is None else offset
            elif not previous[1].startswith("- ") and not mapping:
                mapping = indent - previous[0]
        previous = (indent, body)
        if mapping and offset is not None:
            break
    mapping = mapping or 2
    offset = 0 if offset is None else offset
    return mapping, offset + 2, offset


def _content_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        body = line.strip()
        if body and not body.startswith("#") and "\t" not in line[: len(line) - len(body)]:
            yield line.split(" #")[0].rstrip()
