"""The Node label patch: exactly our keys change, foreign labels are never touched."""

from __future__ import annotations

import pytest

from gpunuma import names
from gpunuma.operator.labels import label_patch, managed_keys

OURS = {names.LABEL_GPU_COUNT: "8", names.LABEL_LAYOUT: "4-4"}
MANAGED = {names.ANNOTATION_MANAGED_LABELS: f"{names.LABEL_GPU_COUNT},{names.LABEL_LAYOUT}"}


def test_a_node_without_our_labels_gets_them_and_the_managed_list() -> None:
    patch = label_patch(OURS, {"kubernetes.io/hostname": "n1"}, {})
    assert patch == {"metadata": {
        "labels": OURS,
        "annotations": {names.ANNOTATION_MANAGED_LABELS: "gpunuma.io/gpu-count,gpunuma.io/layout"},
    }}


def test_a_node_that_already_has_the_labels_gets_no_patch() -> None:
    assert label_patch(OURS, {**OURS, "zone": "a"}, MANAGED) is None


def test_a_changed_value_is_the_only_label_in_the_patch() -> None:
    desired = {**OURS, names.LABEL_LAYOUT: "8-0"}
    assert label_patch(desired, {**OURS, "zone": "a"}, MANAGED) == {
        "metadata": {"labels": {names.LABEL_LAYOUT: "8-0"}}
    }


def test_a_key_that_left_the_layout_is_removed() -> None:
    desired = {names.LABEL_GPU_COUNT: "8"}
    patch = label_patch(desired, {**OURS, "zone": "a"}, MANAGED)
    assert patch == {"metadata": {
        "labels": {names.LABEL_LAYOUT: None},
        "annotations": {names.ANNOTATION_MANAGED_LABELS: names.LABEL_GPU_COUNT},
    }}


def test_a_known_key_is_removed_even_when_the_managed_annotation_was_lost() -> None:
    patch = label_patch({names.LABEL_GPU_COUNT: "8"}, OURS, {})
    assert patch is not None
    assert patch["metadata"]["labels"] == {names.LABEL_LAYOUT: None}


def test_a_foreign_key_in_a_tampered_managed_list_is_never_removed() -> None:
    annotations = {names.ANNOTATION_MANAGED_LABELS: "zone,kubernetes.io/hostname,gpunuma.io/layout"}
    patch = label_patch({}, {"zone": "a", "kubernetes.io/hostname": "n1", **OURS}, annotations)
    assert patch is not None
    assert set(patch["metadata"]["labels"]) == {names.LABEL_LAYOUT, names.LABEL_GPU_COUNT}
    assert patch["metadata"]["annotations"] == {names.ANNOTATION_MANAGED_LABELS: None}
    assert managed_keys(annotations) == {names.LABEL_LAYOUT}


def test_a_label_someone_else_set_under_our_prefix_but_not_managed_is_left_alone() -> None:
    labels = {"gpunuma.io/team-note": "x", **OURS}
    assert label_patch(OURS, labels, MANAGED) is None


def test_desired_labels_without_our_prefix_are_refused() -> None:
    with pytest.raises(ValueError, match="must start with"):
        label_patch({"zone": "a"}, {}, {})
