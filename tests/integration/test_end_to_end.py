"""End-to-end runs on tiny synthetic data: the CLIs, results files, checkpoints, bad steps."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densemtl.config import compose
from densemtl.experiment import run

TINY = ["data.n=20", "data.size=32", "data.batch_size=4", "trainer=debug"]


def cli(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(name)
    env = {**os.environ, "DENSEMTL_DATA": str(cwd / "data")}
    result = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def finite_values(results: dict) -> list[float]:
    return [v for metrics in results.values() for v in metrics.values()]


def test_train_cli_writes_results_and_safe_checkpoint_that_eval_reproduces(tmp_path):
    run_dir = tmp_path / "run"
    out = cli("densemtl-train", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert "Results (astmt_accumulated)" in out.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"semseg", "human_parts", "edge", "normals", "sal", "depth"}
    values = finite_values(metrics["tasks"])
    assert values and all(math.isfinite(v) for v in values)
    # the evaluation choices behind the values, per task (synthetic defaults)
    edge = metrics["protocol"]["edge"]
    assert edge["nms"] is True and edge["ap"] == "trapezoid" and edge["thresholds"] == 99
    assert metrics["protocol"]["normals"] == {"encoding": "float", "median": "exact"}
    assert metrics["protocol"]["semseg"] == {"absent": "skip"}
    assert metrics["resources"]["parameters"]["total"] > 0
    per_task = metrics["resources"]["parameters"]["per_task"]
    assert all(n > 0 for n in per_task.values())  # SE modulation: every task owns parameters

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["config"]["model"]["name"] == "astmt_accumulated"

    eval_dir = tmp_path / "eval"
    cli("densemtl-eval", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "trainer=debug", "trainer.limit_val_batches=1.0", f"hydra.run.dir={eval_dir}",
        cwd=tmp_path)
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    train_cfg = json.loads((run_dir / "metrics.json").read_text())["config"]
    assert train_cfg["trainer"]["limit_val_batches"] == 2
    # same weights, same validation images (debug trainer sees 2 of the 2 val batches)
    for task, values in metrics["tasks"].items():
        for key, value in values.items():
            assert evaluated["tasks"][task][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_joint_baseline_with_gradient_weighting_and_delta_m(tmp_path):
    baselines = {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 1.0}}
    cfg = compose([*TINY, "model=mtl_baseline", "modulation=none", "weighting=mgda",
                   "tasks=nyud4", "~tasks.normals", "~tasks.edge",
                   f"paths.data_dir={tmp_path / 'data'}"])
    cfg.baselines = baselines
    payload = run(cfg, tmp_path / "run")
    got = payload["tasks"]
    expected_gain = ((got["semseg"]["mIoU"] - 50.0) / 50.0 - (got["depth"]["rmse"] - 1.0)) / 2
    assert payload["delta_m"]["delta_m_gain"] == pytest.approx(100 * expected_gain)
    assert payload["delta_m"]["delta_m_drop"] == pytest.approx(-100 * expected_gain)
    # MGDA's coefficients lie on the simplex every step, so their epoch means sum to 1
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/weight/semseg")]
    assert len(rows) == 1
    weights = [float(rows[0][f"train/weight/{t}"]) for t in ("semseg", "depth")]
    assert sum(weights) == pytest.approx(1.0, abs=1e-6) and min(weights) >= 0


def test_non_finite_losses_skip_steps_then_stop_clearly(tmp_path, monkeypatch):
    from densemtl.tasks.depth import Depth

    monkeypatch.setattr(Depth, "loss", lambda self, pred, target: pred.sum() * float("nan"))
    cfg = compose([*TINY, "model=mtl_baseline", "modulation=none", "tasks=fsv3",
                   "trainer.limit_train_batches=3", "max_bad_steps=2",
                   f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(RuntimeError, match=r"2 consecutive steps with non-finite losses .*depth"):
        run(cfg, tmp_path / "run")
