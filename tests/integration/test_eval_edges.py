"""``densemtl-eval-edges`` on tiny trees written here in the published formats: hand-worked
scores, the same numbers as ``EdgeFMeasure`` on the same maps, workers = one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from densemtl.cli.eval_edges import main, score_directory
from densemtl.data.formats import write_image, write_mat, write_npy
from densemtl.data.pascal_context import laplacian_edges
from densemtl.metrics.edge import EdgeFMeasure


def _line_case() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two 30×40 images. GT: column 10, rows 5..24 (20 px) in both.

    a: the line at v = 204 (0.8) plus 5 isolated pixels at v = 102 (0.4) far from it;
    b: rows 5..14 of the line at 204, rows 15..24 at 77 (0.302).
    """
    gt = np.zeros((30, 40), dtype=np.uint8)
    gt[5:25, 10] = 1
    a = (gt * 204).astype(np.uint8)
    a[[2, 8, 14, 20, 26], 30] = 102
    b = np.zeros_like(gt)
    b[5:15, 10], b[15:25, 10] = 204, 77
    return {"a": a, "b": b}, {"a": gt, "b": gt}


def _write(tmp_path: Path, gt_format: str) -> tuple[Path, Path]:
    preds, gts = _line_case()
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    for name, pred in preds.items():
        write_image(pred_dir / f"{name}.png", pred)
        if gt_format == "png":
            write_image(gt_dir / f"{name}.png", gts[name] * 255)
        else:
            write_npy(gt_dir / f"{name}.npy", gts[name].astype(np.float32))
    return pred_dir, gt_dir


@pytest.mark.parametrize("gt_format", ["png", "npy"])
def test_scores_by_hand(tmp_path, gt_format):
    # thresholds .25, .5, .75; max_dist .0075 → radius .375 px: only coinciding pixels match.
    #   a: t=.25: 25 predictions, 20 matched (P .8, R 1); t=.5, .75: 20/20.
    #   b: t=.25: 20/20; t=.5, .75: 10 predictions, all matched (R .5).
    #   sums: t=.25: P 40/45, R 40/40; t=.5, .75: P 30/30, R 30/40 → F 16/17 (.9412), 6/7.
    #   OIS: a picks .5 (F 1), b picks .25 (F 1) → 100. No NMS (the maps are already thin).
    pred_dir, gt_dir = _write(tmp_path, gt_format)
    result = score_directory(pred_dir, gt_dir, max_dist=0.0075, nms=False, thresholds=3)
    s = result["scores"]
    assert result["images"] == 2 and result["protocol"]["nms"] is False
    f_low = 2 * (40 / 45) / (1 + 40 / 45)
    assert s["oisF"] == pytest.approx(100.0)
    assert s["odsF"] >= 100 * f_low - 1e-9 and s["odsF"] < 100 * f_low + 0.5  # interpolated
    plain = score_directory(pred_dir, gt_dir, max_dist=0.0075, nms=False, thresholds=3,
                            ap="bsds")["scores"]
    # BSDS AP: precision 1 for recall levels ≤ .75 (76 levels), 40/45 up to .99 (24) → /101
    assert plain["AP"] == pytest.approx(100 * (76 + 24 * 40 / 45) / 101)


def test_same_numbers_as_the_metric_and_workers_agree(tmp_path):
    pred_dir, gt_dir = _write(tmp_path, "png")
    preds, gts = _line_case()
    metric = EdgeFMeasure(max_dist=0.0075, thresholds=9, nms=True)
    for name in sorted(preds):
        metric.update(torch.tensor(preds[name] / 255.0)[None, None],
                      torch.tensor(gts[name], dtype=torch.float32)[None, None])
    expected = {k: v.item() for k, v in metric.compute().items()}
    one = score_directory(pred_dir, gt_dir, 0.0075, nms=True, thresholds=9)["scores"]
    two = score_directory(pred_dir, gt_dir, 0.0075, nms=True, thresholds=9, workers=2)["scores"]
    assert one == two
    assert one == pytest.approx(expected, rel=1e-6)  # the metric reports float32


def test_pascal_label_maps_are_scored_through_their_laplacian_edges(tmp_path):
    # a LabelMap with three regions; the prediction is its own edge map, so P = R = 1
    label_map = np.ones((24, 32), dtype=np.uint16)
    label_map[:, 16:] = 2
    label_map[14:, :10] = 3
    edges = laplacian_edges(label_map)
    assert edges.sum() > 20
    write_mat(tmp_path / "gt" / "x.mat", {"LabelMap": label_map})
    write_image(tmp_path / "pred" / "x.png", edges * 255)
    s = score_directory(tmp_path / "pred", tmp_path / "gt", 0.0075, nms=False, thresholds=5)
    assert s["scores"]["odsF"] == pytest.approx(100.0)


def test_console_script_prints_and_writes_json_and_refuses_one_sided_ids(tmp_path, capsys):
    pred_dir, gt_dir = _write(tmp_path, "npy")
    exe = Path(sys.executable).with_name("densemtl-eval-edges")
    out = subprocess.run([str(exe), str(pred_dir), str(gt_dir), "--max-dist", "0.0075",
                          "--no-nms", "--thresholds", "3", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ODS F" in out.stdout and "OIS F 100.00" in out.stdout
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["images"] == 2 and saved["scores"]["oisF"] == pytest.approx(100.0)
    # a GT directory that also holds other splits' labels: --split picks the ids
    write_npy(gt_dir / "c.npy", np.zeros((30, 40), np.float32))
    assert main([str(pred_dir), str(gt_dir), "--max-dist", "0.0075"]) == 1
    assert "1 id(s) without a prediction" in capsys.readouterr().err
    (tmp_path / "val.txt").write_text("a\nb\n")
    assert main([str(pred_dir), str(gt_dir), "--max-dist", "0.0075", "--split",
                 str(tmp_path / "val.txt"), "--no-nms", "--thresholds", "3"]) == 0
    assert "OIS F 100.00" in capsys.readouterr().out
    (gt_dir / "b.npy").unlink()
    assert main([str(pred_dir), str(gt_dir), "--max-dist", "0.0075"]) == 1
    assert "1 id(s) without ground truth" in capsys.readouterr().err
    (gt_dir / "c.npy").unlink()
    write_image(gt_dir / "b.png", np.full((30, 40), 7, dtype=np.uint8))
    assert main([str(pred_dir), str(gt_dir), "--max-dist", "0.0075"]) == 1
    assert "0/1 or 0/255" in capsys.readouterr().err
