"""ATRC search curves in the report: search.json pooled over seeds (hand-computed means), the
PNG section written by write_report."""

import json
from pathlib import Path

import numpy as np

from densemtl.report import write_report
from densemtl.report.plots import search_curves
from tests.unit.report.test_report import make_run


def write_search(run: Path, entropies: list[float], fixed: list[int], alpha: list[float]) -> None:
    """A search.json with one self block (4 candidates) and one cross block (5 candidates)."""
    history = [{"step": s + 1, "temperature": 1.0, "entropy_weight": 0.0, "entropy": e, "fixed": f}
               for s, (e, f) in enumerate(zip(entropies, fixed))]
    blocks = {
        "semseg<-semseg": {"candidates": ["none", "global", "local", "t_label"],
                           "softmax_alpha": [0.25] * 4, "fixed": None, "fixed_at_step": None},
        "semseg<-depth": {"candidates": ["none", "global", "local", "t_label", "s_label"],
                          "softmax_alpha": alpha, "fixed": None, "fixed_at_step": None},
    }
    (run / "search.json").write_text(json.dumps({"blocks": blocks, "history": history}))


def test_search_curves_mean_over_seeds_and_report_section(tmp_path):
    root = tmp_path / "sweep"
    results = {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 1.0}}
    a = make_run(root, "0", results, 0, overrides=["experiment=atrc/synthetic_search"])
    b = make_run(root, "1", results, 1, overrides=["experiment=atrc/synthetic_search"])
    write_search(a, [1.5, 1.4, 1.2], [0, 0, 1], [0.6, 0.1, 0.1, 0.1, 0.1])
    write_search(b, [1.6, 1.2], [0, 2], [0.2, 0.2, 0.2, 0.2, 0.2])
    c = search_curves([a, b, tmp_path])  # a directory without search.json is skipped
    assert c["runs"] == 2
    np.testing.assert_array_equal(c["steps"], [1, 2])  # steps both runs logged
    np.testing.assert_allclose(c["entropy"], [1.55, 1.3])
    np.testing.assert_allclose(c["fixed"], [0.0, 1.0])
    cands, alpha = c["blocks"]["semseg<-depth"]
    assert cands[-1] == "s_label"
    np.testing.assert_allclose(alpha, [0.4, 0.15, 0.15, 0.15, 0.15])
    assert search_curves([tmp_path]) is None
    files = write_report([root], tmp_path / "report")
    assert tmp_path / "report" / "atrc_search.png" in files.plots
    assert "ATRC search" in files.markdown.read_text()
