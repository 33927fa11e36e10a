"""Experiment tracking: run grouping, learning rates, Δm and qualitative grids in every logger."""

import csv
import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from densemtl.config import compose
from densemtl.experiment import build_module, build_tasks, run
from densemtl.training.callbacks import prediction_grids, tile
from densemtl.training.logging import run_info

TINY = ["data.n=16", "data.size=32", "data.batch_size=4", "trainer=debug", "model=mtl_baseline",
        "modulation=none", "tasks=nyud4", "~tasks.normals", "~tasks.edge"]
BASELINES = {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 1.0}}


def csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_run_info_groups_and_tags_by_dataset_architecture_weighting_and_sweep():
    info = run_info(compose(["experiment=astmt/pascal_r26_sea", "weighting=dwa", "seed=3"]))
    assert info["architecture"] == "astmt/seresnet26/se_encoder_decoder+adversarial"
    assert info["group"] == "pascal_r26_sea" and info["sweep"] is None and info["seed"] == 3
    assert info["tags"] == ["dataset:synthetic", "model:astmt", "backbone:seresnet26",
                            "modulation:se_encoder_decoder", "weighting:dwa", "adversarial"]
    info = run_info(compose(["sweep=weighting_x_seeds", "tracking.tags=[nightly]"]))
    assert info["group"] == "weighting_x_seeds"
    assert info["tags"][-2:] == ["sweep:weighting_x_seeds", "nightly"]
    assert run_info(compose(["tracking.group=mine"]))["group"] == "mine"


def test_prediction_grid_shows_image_label_and_prediction_in_the_task_colours():
    cfg = compose(TINY)
    tasks = build_tasks(cfg)
    module = build_module(cfg, tasks)
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 3, 16, 24), "semseg": torch.randint(0, 21, (2, 16, 24)),
             "depth": torch.rand(2, 1, 16, 24) + 0.5}
    module.net.train()
    grids = prediction_grids(module, batch, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), min_side=0)
    assert module.net.training  # restored
    big = prediction_grids(module, batch, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # ≥ 192 px panels
    assert big["semseg"].shape == (2 * 16 * 12 + 2, 3 * 24 * 12 + 2 * 2, 3)  # 12 = ⌈192 / 16⌉
    assert np.array_equal(big["semseg"][::12, ::12][:16, :24], grids["semseg"][:16, :24])
    module.net.eval()
    with torch.no_grad():
        preds = module.net(batch["image"], ["semseg", "depth"])
    gap = 2
    decoded = {t: tasks[t].decode(preds[t]) for t in tasks}
    # depth: one colour scale over the grid's labels and predictions; semseg: fixed colours
    depth_range = tasks["depth"].colour_range([*batch["depth"], *decoded["depth"]])
    both = torch.cat([batch["depth"], decoded["depth"]])
    valid = both[tasks["depth"].valid_mask(both)[:, None].expand_as(both)]
    assert depth_range == pytest.approx((float(valid.min()), float(valid.max())))
    colour = {"semseg": tasks["semseg"].colorize,
              "depth": lambda label: tasks["depth"].colorize(label, depth_range)}
    for t, grid in grids.items():
        assert grid.shape == (2 * 16 + gap, 3 * 24 + 2 * gap, 3) and grid.dtype == np.uint8
        for i in range(2):
            rows = slice(i * (16 + gap), i * (16 + gap) + 16)
            cell = lambda j, g=grid, r=rows: g[r, j * (24 + gap): j * (24 + gap) + 24]  # noqa: E731
            pixels = (batch["image"][i] * 0.25 + 0.5).clamp(0, 1) * 255
            assert np.array_equal(cell(0), pixels.round().byte().permute(1, 2, 0).numpy())
            assert np.array_equal(cell(1), colour[t](batch[t][i]))
            assert np.array_equal(cell(2), colour[t](decoded[t][i]))
        assert (grid[16:16 + gap] == 255).all()  # separator
    with pytest.raises(ValueError, match=r"grid tile \(0, 1\)"):
        tile([[np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)]])


def test_csv_and_tensorboard_get_learning_rates_delta_m_and_prediction_grids(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = compose([*TINY, "logger=tensorboard", "trainer.max_epochs=2", "tracking.qualitative=3",
                   f"paths.data_dir={tmp_path / 'data'}"])
    cfg.baselines = BASELINES
    payload = run(cfg, tmp_path / "run")
    out = tmp_path / "run"
    rows = csv_rows(out / "metrics.csv")
    lrs = [float(r["step/lr/net"]) for r in rows if r.get("step/lr/net")]
    # poly schedule over 4 iterations (2 epochs × 2 batches): lr·(1 − i/4)^0.9
    lr = cfg.optimizer.lr
    assert lrs == pytest.approx([lr * (1 - i / 4) ** 0.9 for i in range(4)], rel=1e-6)
    deltas = [float(r["val/delta_m_gain"]) for r in rows if r.get("val/delta_m_gain")]
    assert len(deltas) == 2  # two epochs; the last one's results are the final ones (no re-run)
    assert deltas[-1] == pytest.approx(payload["delta_m"]["delta_m_gain"], rel=1e-6)
    drops = [float(r["val/delta_m_drop"]) for r in rows if r.get("val/delta_m_drop")]
    assert drops == pytest.approx([-d for d in deltas])
    for task in ("semseg", "depth"):
        names = sorted(p.name for p in (out / "qualitative" / task).iterdir())
        assert names == ["epoch_0000.png", "epoch_0001.png"]
        picture = imread(out / "qualitative" / task / "epoch_0001.png")
        assert picture.shape[:2] == (3 * 192 + 2 * 2, 3 * 192 + 2 * 2)  # 32-px panels × 6
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    info = json.loads((out / "run_info.json").read_text())
    assert info == {**payload["run"], "status": "finished", "status_details": []}
    assert info["weighting"] == "fixed"


def test_bad_baselines_fail_before_training(tmp_path):
    cfg = compose([*TINY, f"paths.data_dir={tmp_path / 'data'}"])
    cfg.baselines = {"semseg": {"mIoU": 50.0}, "depth": {"abs_rel": 1.0}}
    with pytest.raises(KeyError, match="baseline for task 'depth' lacks metric 'rmse'"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_wandb_offline_run_lands_in_the_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose([*TINY, "logger=wandb", "tracking.qualitative=2",
                   f"paths.data_dir={tmp_path / 'data'}"])
    run(cfg, tmp_path / "run")
    import wandb

    wandb.finish()
    (wandb_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("run-*.wandb"))
    media = wandb_run / "files" / "media" / "images" / "val" / "qualitative"
    assert {p.name.split("_")[0] for p in media.rglob("*.png")} == {"semseg", "depth"}
    assert f"wandb sync {wandb_run}" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.csv").is_file()  # the report's source, always written
