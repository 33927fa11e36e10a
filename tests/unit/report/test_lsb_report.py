"""Rank table of repeated trials (LSB Table S-3) and the loss-weight grid search report."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from densemtl.cli.report import main as report_main
from densemtl.config import compose, conf_dir
from densemtl.experiment import build_module, build_tasks
from densemtl.report.gridsearch import best_weights
from densemtl.report.groups import group_runs
from densemtl.report.ranks import rank_columns, rank_table
from densemtl.runs import load_runs

TASKS3 = ("lsb_depth", "lsb_normals", "lsb_semseg")


def write_run(path: Path, results: dict, weighting: dict, seed: int = 0, **config) -> Path:
    """A finished run directory as ``experiment.finish`` writes it (metrics.json only)."""
    path.mkdir(parents=True)
    cfg = {"seed": seed, "weighting": weighting, "data": {"name": "synthetic"}, **config}
    (path / "metrics.json").write_text(json.dumps({"name": "x", "dataset": "synthetic",
                                                   "tasks": results, "config": cfg}))
    return path


def lsb_results(delta1, rmse, pct_30, mean, miou, acc) -> dict:
    return {"lsb_depth": {"delta1": delta1, "rmse": rmse},
            "lsb_normals": {"pct_30": pct_30, "mean": mean},
            "lsb_semseg": {"mIoU": miou, "pixel_acc": acc}}


# -- ranks -----------------------------------------------------------------------------------------


def test_rank_columns_reproduces_the_rmse_ranks_of_table_s3():
    # RMSE of the 25 trials in supplement Table S-3 (equal, uncert, DWA, GLS, proposed × 5)
    rmse = [0.801, 0.793, 0.790, 0.799, 0.796, 0.775, 0.792, 0.789, 0.788, 0.798,
            0.792, 0.794, 0.801, 0.799, 0.783, 0.778, 0.782, 0.793, 0.782, 0.788,
            0.772, 0.792, 0.793, 0.778, 0.776]
    paper = [24.5, 17, 12, 22.5, 20, 2, 14, 11, 9.5, 21, 14, 19, 24.5, 22.5, 8,
             4.5, 6.5, 17, 6.5, 9.5, 1, 14, 17, 4.5, 3]
    ranks = rank_columns(np.array(rmse)[:, None], [False])
    assert ranks[:, 0].tolist() == paper
    # higher-is-better flips the order; ties still share the average rank
    assert rank_columns(np.array([[0.5], [0.7], [0.7], [0.2]]), [True])[:, 0].tolist() == \
        [3, 1.5, 1.5, 4]
    with pytest.raises(ValueError, match="finite"):
        rank_columns(np.array([[np.nan], [1.0]]), [True])


def test_rank_table_min_max_average_and_algorithm_means(tmp_path):
    # two algorithms × two seeds; every metric's order worked out by hand below
    rows = {("equal", 0): lsb_results(0.60, 0.80, 0.44, 40.0, 20.0, 55.0),
            ("equal", 1): lsb_results(0.59, 0.79, 0.45, 39.0, 21.0, 56.0),
            ("lsb", 0): lsb_results(0.62, 0.77, 0.45, 39.5, 22.0, 57.0),
            ("lsb", 1): lsb_results(0.61, 0.81, 0.43, 41.0, 19.0, 54.0)}
    for (alg, seed), res in rows.items():
        write_run(tmp_path / f"{alg}_{seed}", res, {"name": alg}, seed=seed)
    table = rank_table(group_runs(load_runs([tmp_path])))
    ranks = {(t.algorithm, t.seed): t.ranks for t in table.trials}
    # δ1↑ .60 .59 .62 .61 -> 3 4 1 2; rmse↓ .80 .79 .77 .81 -> 3 2 1 4;
    # δ30↑ .44 .45 .45 .43 -> 3 1.5 1.5 4; mean↓ 40 39 39.5 41 -> 3 1 2 4;
    # mIoU↑ 20 21 22 19 -> 3 2 1 4; acc↑ 55 56 57 54 -> 3 2 1 4
    assert ranks[("weighting=equal", 0)] == [3, 3, 3, 3, 3, 3]
    assert ranks[("weighting=equal", 1)] == [4, 2, 1.5, 1, 2, 2]
    assert ranks[("weighting=lsb", 0)] == [1, 1, 1.5, 2, 1, 1]
    assert ranks[("weighting=lsb", 1)] == [2, 4, 4, 4, 4, 4]
    lsb0 = next(t for t in table.trials if t.algorithm == "weighting=lsb" and t.seed == 0)
    assert (lsb0.min_rank, lsb0.max_rank, lsb0.average_rank) == (1, 2, pytest.approx(7.5 / 6))
    assert table.algorithm_mean_rank == {
        "weighting=equal": pytest.approx((18 + 12.5) / 12),
        "weighting=lsb": pytest.approx((7.5 + 22) / 12)}
    # mean performance per algorithm, ranked: equal (.595,.795,.445,39.5,20.5,55.5) vs
    # lsb (.615,.79,.44,40.25,20.5,55.5): lsb wins δ1 and rmse, equal δ30 and mean, ties else
    averages = {r.algorithm: r.ranks for r in table.averages}
    assert averages == {"weighting=equal": [2, 2, 1, 1, 1.5, 1.5],
                        "weighting=lsb": [1, 1, 2, 2, 1.5, 1.5]}
    markdown = table.to_markdown()
    assert "| weighting=lsb | 0 | 0.62 (1) | 0.77 (1) | 0.45 (1.5) | 39.5 (2) | 22 (1) | " \
           "57 (1) | 1 | 2 | 1.25 | 2.46 |" in markdown


def test_ranks_cli_writes_the_table_and_rejects_mixed_task_sets(tmp_path, capsys):
    write_run(tmp_path / "runs" / "a", lsb_results(.6, .8, .4, 40, 20, 50), {"name": "equal"})
    write_run(tmp_path / "runs" / "b", lsb_results(.7, .7, .5, 30, 30, 60), {"name": "lsb"})
    out = tmp_path / "ranks.md"
    assert report_main(["ranks", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "| weighting=lsb | 0 | 0.7 (1) |" in out.read_text()
    write_run(tmp_path / "runs" / "c", {"depth": {"rmse": 1.0}, "semseg": {"mIoU": 3.0}},
              {"name": "dwa"})
    assert report_main(["ranks", str(tmp_path / "runs")]) == 1
    assert "must share one task set" in capsys.readouterr().err


# -- grid search -----------------------------------------------------------------------------------


def grid_runs(root: Path) -> None:
    """Multi-task grid points A (1,1,1) and B (10,1,1), two seeds each, plus single-task nets."""
    a = {"lsb_depth": 1.0, "lsb_normals": 1.0, "lsb_semseg": 1.0}
    b = {**a, "lsb_depth": 10.0}
    for seed, (ra, rb) in enumerate([((1.0, 30.0, 50.0), (0.8, 36.0, 55.0)),
                                     ((1.2, 30.0, 52.0), (0.8, 36.0, 45.0))]):
        for name, w, (rmse, mean, miou) in (("a", a, ra), ("b", b, rb)):
            res = {"lsb_depth": {"rmse": rmse}, "lsb_normals": {"mean": mean},
                   "lsb_semseg": {"mIoU": miou}}
            write_run(root / "multi" / f"{name}{seed}", res, {"name": "fixed", "weights": w},
                      seed=seed)
    singles = {"lsb_depth": ("rmse", [1.0, 0.9, 1.1]), "lsb_normals": ("mean", [31, 30, 29]),
               "lsb_semseg": ("mIoU", [40.0, 50.0, 45.0])}
    for task, (metric, values) in singles.items():
        for w, v in zip((0.1, 1.0, 10.0), values):
            write_run(root / "single" / f"{task}_{w}", {task: {metric: v}},
                      {"name": "fixed", "weights": [w]}, single_task=task)


def test_gridsearch_picks_by_seed_mean_metric_and_by_delta_m(tmp_path):
    grid_runs(tmp_path)
    # mIoU: A = (50 + 52)/2 = 51 beats B = (55 + 45)/2 = 50, though B holds the single best run
    choice = best_weights([tmp_path / "multi"], by="lsb_semseg/mIoU")
    assert choice.weights == {"lsb_depth": 1.0, "lsb_normals": 1.0, "lsb_semseg": 1.0}
    assert choice.score == pytest.approx(51.0) and len(choice.runs) == 2
    # rmse (lower is better): B = 0.8 beats A = 1.1
    assert best_weights([tmp_path / "multi"], by="lsb_depth/rmse").weights["lsb_depth"] == 10.0
    # Δm against the single-task means (rmse 1.0, mean 30, mIoU 45):
    # A: seed0 (0 + 0 + 11.11)/3, seed1 (−20 + 0 + 15.56)/3 -> mean 1.111 %
    # B: seed0 (20 − 20 + 22.22)/3, seed1 (20 − 20 + 0)/3 -> mean 3.704 %
    choice = best_weights([tmp_path / "multi", tmp_path / "single"], by="delta_m")
    assert choice.weights["lsb_depth"] == 10.0
    assert choice.score == pytest.approx((22.222222 / 3 + 0.0) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="no Δm for"):
        best_weights([tmp_path / "multi"], by="delta_m")
    with pytest.raises(ValueError, match="--by 'semseg/mIoU'"):
        best_weights([tmp_path / "multi"], by="semseg/mIoU")


def test_gridsearch_single_task_source_takes_each_tasks_best_net(tmp_path):
    grid_runs(tmp_path)
    choice = best_weights([tmp_path / "single"], source="single-task")
    # depth rmse↓ best at 1.0 (0.9); normals mean↓ best at 10 (29); mIoU↑ best at 1.0 (50)
    assert choice.weights == {"lsb_depth": 1.0, "lsb_normals": 10.0, "lsb_semseg": 1.0}


def test_gridsearch_config_is_ready_to_use(tmp_path, monkeypatch):
    grid_runs(tmp_path)
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    out = conf / "weighting" / "grid_best.yaml"
    code = report_main(["gridsearch", str(tmp_path / "multi"), str(tmp_path / "single"),
                        "--out", str(out)])
    assert code == 0
    assert yaml.safe_load(out.read_text()) == {
        "name": "fixed", "weights": {"lsb_depth": 10.0, "lsb_normals": 1.0, "lsb_semseg": 1.0}}
    assert "Δm gain" in out.read_text()
    monkeypatch.setenv("DENSEMTL_CONF", str(conf))
    cfg = compose(["experiment=lsb/nyuv2_mnet_multi_decoder", "weighting=grid_best",
                   "model.decoder_width=16"])
    module = build_module(cfg, build_tasks(cfg))
    assert module.weighting.weights.tolist() == [10.0, 1.0, 1.0]


def test_gridsearch_without_grid_runs_fails_clearly(tmp_path, capsys):
    write_run(tmp_path / "r", lsb_results(.6, .8, .4, 40, 20, 50), {"name": "lsb"})
    assert report_main(["gridsearch", str(tmp_path), "--out", str(tmp_path / "w.yaml")]) == 1
    assert "no multi-task weighting=fixed runs" in capsys.readouterr().err


def _sweep_jobs(preset: str) -> list[dict[str, object]]:
    """The jobs a sweep preset's ``hydra.sweeper.params`` expand to (basic sweeper: product)."""
    params = yaml.safe_load((conf_dir() / "sweep" / f"{preset}.yaml").read_text())
    parsed = OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in params["hydra"]["sweeper"]["params"].items()])
    jobs = [{}]
    for override in parsed:
        values = list(override.sweep_iterator()) if override.is_sweep_override() else \
            [override.value()]
        jobs = [{**j, override.key_or_group: v} for j in jobs for v in values]
    return jobs


def test_grid_presets_expand_to_log_spaced_weight_grids():
    multi = _sweep_jobs("loss_weight_grid")
    assert len(multi) == 27
    assert {tuple(j[f"weighting.weights.{t}"] for t in TASKS3) for j in multi} == {
        (a, b, c) for a in (0.1, 1.0, 10.0) for b in (0.1, 1.0, 10.0) for c in (0.1, 1.0, 10.0)}
    single = _sweep_jobs("loss_weight_grid_single_task")
    assert sorted((j["single_task"], j["weighting.weights"][0]) for j in single) == sorted(
        (t, w) for t in TASKS3 for w in (0.1, 1.0, 10.0))
    study = _sweep_jobs("lsb_study")
    assert len(study) == 18 and {j["weighting"] for j in study} == {
        "equal", "uncertainty", "dwa", "gls", "gradnorm", "lsb"}
