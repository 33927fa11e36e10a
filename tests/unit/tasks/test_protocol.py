"""Evaluation protocols as config values: defaults per dataset / experiment, passed to the
metrics, recorded by ``Task.protocol()``."""

from __future__ import annotations

import pytest
import torch

from densemtl.config import compose
from densemtl.tasks import build_task, build_tasks


def test_dataset_and_experiment_defaults():
    pascal = build_tasks(compose(["data=pascal_context", "tasks=pascal5"]))
    assert pascal["semseg"].protocol() == {"absent": "zero"}
    assert pascal["human_parts"].protocol() == {"absent": "zero"}
    assert pascal["edge"].protocol()["nms"] is True  # the task default (ATRC's script)
    assert pascal["normals"].protocol() == {"encoding": "float", "median": "exact"}
    astmt = build_tasks(compose(["experiment=real/pascal_r26_mtl"]))
    assert astmt["edge"].protocol() == {"max_dist": 0.0075, "thresholds": 99, "nms": False,
                                        "ap": "trapezoid", "ods": "interpolated (findBestRPF)"}
    assert build_tasks(compose(["experiment=real/nyud_r50_sea"]))["edge"].protocol()["nms"] is False
    assert build_tasks(compose(["data=nyud", "tasks=nyud4"]))["semseg"].absent == "zero"
    synthetic = build_tasks(compose())
    assert synthetic["semseg"].protocol() == {"absent": "skip"}


def test_absent_class_mode_changes_miou_by_hand():
    # 3 classes, class 2 in neither prediction nor GT. GT 0 0 1 1, prediction 0 0 1 0:
    # class 0: 2 hits, union 3 → 2/3; class 1: 1 hit, union 2 → 1/2.
    # skip: (2/3 + 1/2)/2; zero: (2/3 + 1/2 + 0)/3.
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 0]]])
    for absent, expected in (("skip", (2 / 3 + 1 / 2) / 2), ("zero", (2 / 3 + 1 / 2) / 3)):
        metric = build_task("semseg", num_classes=3, absent=absent).make_metric()
        metric.update(pred, target)
        assert metric.compute()["mIoU"].item() == pytest.approx(100 * expected)
    with pytest.raises(ValueError, match="absent must be one of"):
        build_task("semseg", absent="nan")


def test_edge_options_reach_the_metric_and_bad_values_are_refused():
    metric = build_task("edge", nms=False, ap="bsds").make_metric()
    assert metric.nms is False and metric.ap == "bsds"
    with pytest.raises(ValueError, match="nms='yes': expected bool"):
        build_task("edge", nms="yes")
    with pytest.raises(ValueError, match="ap must be"):
        build_task("edge", ap="voc")
    normals = build_task("normals", quantize_8bit="trunc", median="histogram")
    assert normals.protocol() == {"encoding": "trunc", "median": "histogram"}
    assert normals.make_metric().encoding == "trunc"
