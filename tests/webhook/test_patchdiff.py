"""The JSON-patch differ on its own: every patch applies (with the ``jsonpatch`` library, an
independent RFC 6902 implementation) and yields exactly the target document, as JSON."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.webhook.differ import diff

NAMED = (("spec", "containers"), ("spec", "volumes"))


def _apply(before: dict[str, Any], operations: list[dict[str, Any]]) -> Any:
    result = jsonpatch.apply_patch(copy.deepcopy(before), operations)
    return json.loads(json.dumps(result))


def _same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_equal_documents_need_no_operations() -> None:
    document = {"spec": {"containers": [{"name": "a", "image": "x"}]}, "n": 1}
    assert diff(document, copy.deepcopy(document), NAMED) == []


def test_a_shared_part_is_not_walked_and_an_added_key_is_one_add() -> None:
    shared = {"name": "a", "image": "x"}
    before = {"spec": {"containers": [shared]}}
    after = {"spec": {"containers": [shared], "hostNetwork": True}}
    assert diff(before, after) == [{"op": "add", "path": "/spec/hostNetwork", "value": True}]


def test_true_and_one_are_different_json() -> None:
    assert diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert diff({"a": 1}, {"a": 1.0}) == [{"op": "replace", "path": "/a", "value": 1.0}]


def test_keys_with_slash_and_tilde_are_escaped() -> None:
    before: dict[str, Any] = {"metadata": {"annotations": {}}}
    after = {"metadata": {"annotations": {"gpunuma.io/x~y": "1"}}}
    operations = diff(before, after)
    assert operations == [{"op": "add", "path": "/metadata/annotations/gpunuma.io~1x~0y",
                           "value": "1"}]
    assert _apply(before, operations) == after


def test_a_named_item_inserted_at_the_front_is_one_add_not_a_replacement() -> None:
    app = {"name": "app", "image": "x"}
    before = {"spec": {"containers": [app]}}
    launcher = {"name": "launcher", "image": "l"}
    after = {"spec": {"containers": [launcher, app]}}
    operations = diff(before, after, NAMED)
    assert operations == [{"op": "add", "path": "/spec/containers/0", "value": launcher}]
    assert _apply(before, operations) == after


def test_reordered_named_items_are_moved() -> None:
    a, b = {"name": "a"}, {"name": "b"}
    before = {"spec": {"volumes": [a, b]}}
    after = {"spec": {"volumes": [b, a]}}
    operations = diff(before, after, NAMED)
    assert [op["op"] for op in operations] == ["move"]
    assert _apply(before, operations) == after


def test_the_inputs_are_not_modified() -> None:
    before = {"spec": {"containers": [{"name": "a"}]}}
    after = {"spec": {"containers": [{"name": "b"}, {"name": "a", "args": ["x"]}]}}
    snapshot = copy.deepcopy((before, after))
    diff(before, after, NAMED)
    assert (before, after) == snapshot


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "x", "~/"]))
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "b", "c/d", "e~"]), inner,
                                            max_size=3)),
    max_leaves=10,
)
_named_item = st.builds(lambda name, value: {"name": name, "v": value},
                        st.sampled_from(["p", "q", "r", "s"]), _scalars)
_named_list = st.lists(_named_item, max_size=4, unique_by=lambda item: item["name"])


@settings(max_examples=150, deadline=None)
@given(before=_json, after=_json)
def test_any_two_documents_patch_into_each_other(before: Any, after: Any) -> None:
    wrapped_before, wrapped_after = {"doc": before}, {"doc": after}
    assert _same_json(_apply(wrapped_before, diff(wrapped_before, wrapped_after)), wrapped_after)


@settings(max_examples=150, deadline=None)
@given(old=_named_list, new=_named_list, extra=_json)
def test_named_lists_align_and_patch_into_the_target(old: list[Any], new: list[Any],
                                                     extra: Any) -> None:
    before = {"spec": {"containers": old, "other": extra}}
    # The target keeps some items as the very same objects, as the mutation does.
    by_name = {item["name"]: item for item in old}
    after = {"spec": {"containers": [by_name.get(item["name"], item) for item in new]}}
    assert _same_json(_apply(before, diff(before, after, NAMED)), after)
