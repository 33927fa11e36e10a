"""Reports over hand-made run directories: grouping over seeds, mean ± std, Δm against single-task
runs or a baselines file, wandb run directories, Markdown / HTML / summary outputs."""

import base64
import csv
import json
import math
from pathlib import Path

import pytest

from densemtl.cli.report import main as report_main
from densemtl.report import write_report
from densemtl.runs import load_runs

RESOURCES = {"parameters": {"total": 2_000_000}, "multiply_adds": {"all_tasks": 3e9},
             "image_size": 32}


def make_run(root: Path, name: str, results: dict, seed: int, weighting: str = "equal",
             weights: dict | None = None, overrides: list | None = None) -> Path:
    """A finished run directory: metrics.json, run_info.json and (with weights) metrics.csv."""
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "data": {"name": "synthetic", "root": f"/data/{seed}"},
              "weighting": {"name": weighting}, "tasks": {t: {} for t in results},
              "paths": {"data_dir": str(root)}}
    (run / "metrics.json").write_text(json.dumps(
        {"name": "m", "dataset": "synthetic", "tasks": results, "config": config,
         "resources": RESOURCES, "train_seconds": 10.0 + seed}))
    (run / "run_info.json").write_text(json.dumps(
        {"overrides": (overrides or [f"weighting={weighting}"]) + [f"seed={seed}"]}))
    if weights:
        with open(run / "metrics.csv", "w", newline="") as f:
            cols = [f"train/{k}/{t}" for k in ("weight", "scale") for t in weights[0]]
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", *cols])
            for epoch, w in enumerate(weights):
                writer.writerow([epoch, epoch, *w.values(), *(2 * v for v in w.values())])
    return run


@pytest.fixture
def sweep(tmp_path):
    """Two weighting schemes × two seeds, plus single-task runs for both tasks (two seeds)."""
    root = tmp_path / "sweep"
    make_run(root, "0", {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 1.0}}, 0, "equal",
             weights=[{"semseg": 1.0, "depth": 1.0}, {"semseg": 1.0, "depth": 1.0}])
    make_run(root, "1", {"semseg": {"mIoU": 54.0}, "depth": {"rmse": 0.8}}, 1, "equal",
             weights=[{"semseg": 1.0, "depth": 1.0}, {"semseg": 1.0, "depth": 1.0}])
    make_run(root, "2", {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 1.2}}, 0, "dwa",
             weights=[{"semseg": 0.5, "depth": 1.5}, {"semseg": 0.7, "depth": 1.3}])
    make_run(root, "3", {"semseg": {"mIoU": 42.0}, "depth": {"rmse": 1.2}}, 1, "dwa",
             weights=[{"semseg": 0.9, "depth": 1.1}, {"semseg": 1.1, "depth": 0.9}])
    for seed, (miou, rmse) in enumerate([(48.0, 1.1), (52.0, 0.9)]):
        make_run(root, f"st_semseg_{seed}", {"semseg": {"mIoU": miou}}, seed, "fixed",
                 overrides=["single_task=semseg"])
        make_run(root, f"st_depth_{seed}", {"depth": {"rmse": rmse}}, seed, "fixed",
                 overrides=["single_task=depth"])
    return root


def by_label(summary_path: Path) -> dict:
    return {g["label"]: g for g in json.loads(summary_path.read_text())}


def test_report_pools_seeds_and_takes_delta_m_against_single_task_runs(sweep, tmp_path):
    files = write_report([sweep], tmp_path / "out")
    groups = by_label(files.summary)
    assert set(groups) == {"weighting=equal", "weighting=dwa", "single_task=semseg",
                           "single_task=depth"}
    equal = groups["weighting=equal"]
    assert equal["seeds"] == [0, 1]
    assert equal["tasks"]["semseg"]["mIoU"] == pytest.approx(
        {"mean": 52.0, "std": math.sqrt(8.0), "n": 2})
    # baselines = single-task means: semseg mIoU 50, depth rmse 1.0
    gains = [((50 - 50) / 50 - (1.0 - 1.0) / 1.0) / 2 * 100,
             ((54 - 50) / 50 - (0.8 - 1.0) / 1.0) / 2 * 100]  # 0 and 14
    assert equal["delta_m_gain"]["mean"] == pytest.approx(sum(gains) / 2)
    assert equal["delta_m_gain"]["std"] == pytest.approx(math.sqrt(98.0))
    assert equal["delta_m_source"] == "single-task runs"
    dwa = groups["weighting=dwa"]["delta_m_gain"]["mean"]
    assert dwa == pytest.approx((((40 - 50) / 50 - 0.2) / 2 + ((42 - 50) / 50 - 0.2) / 2) * 50)
    assert groups["single_task=semseg"]["delta_m_gain"] is None  # Δm is a multi-task number

    md = files.markdown.read_text()
    # each column's best in bold: equal's Δm beats dwa's; its mIoU 52 beats 41 and the
    # single-task 50; its rmse 0.9 is beaten by nothing (dwa 1.2, single-task 1.0)
    # with the 95 % Student-t interval of 2 runs: mean ± t(0.975, 1) = 12.706 · std / √2
    assert ("| weighting=equal | 2 (0, 1) | semseg, depth | **+7.00 ± 9.90 [-81.94, +95.94]** |"
            in md)
    assert "| weighting=equal | **52 ± 2.8 [26.59, 77.41]** |" in md
    assert "| weighting=dwa | 41 ± 1.4 [28.29, 53.71] |" in md
    assert "| weighting=equal | **0.9 ± 0.14 [-0.3706, 2.171]** |" in md
    assert {p.name for p in files.plots} == {"training_curves.png", "delta_m_vs_resources.png",
                                             "final_metrics.png"}
    html = files.html.read_text()
    assert '<td class="best">+7.00 ± 9.90 [-81.94, +95.94]</td>' in html
    assert html.count('class="best"') == 3
    assert html.count("data:image/png;base64,") == 3 and "<img src=\"" not in html
    png = files.plots[0].read_bytes()
    assert base64.b64encode(png).decode() in html


def test_pair_seeds_takes_each_runs_delta_m_against_its_own_seeds_single_task_runs(
        sweep, tmp_path, capsys):
    assert report_main([str(sweep), "--out", str(tmp_path / "out"), "--pair-seeds"]) == 0
    equal = by_label(tmp_path / "out" / "summary.json")["weighting=equal"]
    # seed 0 against semseg 48 / depth 1.1, seed 1 against 52 / 0.9 (pooled: 50 / 1.0)
    gains = [((50 - 48) / 48 - (1.0 - 1.1) / 1.1) / 2 * 100,
             ((54 - 52) / 52 - (0.8 - 0.9) / 0.9) / 2 * 100]  # 6.63 and 7.48
    assert equal["delta_m_gain"]["mean"] == pytest.approx(sum(gains) / 2)
    assert equal["delta_m_gain"]["std"] == pytest.approx(abs(gains[0] - gains[1]) / math.sqrt(2))
    assert equal["delta_m_source"] == "single-task runs of the same seed"

    (sweep / "st_depth_1" / "metrics.json").unlink()  # seed 1 has no depth network now
    assert report_main([str(sweep), "--out", str(tmp_path / "o2"), "--pair-seeds"]) == 1
    err = capsys.readouterr().err
    assert "has seed 1, and there is no single-task run of depth with that seed" in err
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"semseg": {"mIoU": 40.0}, "depth": {"rmse": 2.0}}))
    assert report_main([str(sweep), "--out", str(tmp_path / "o3"), "--pair-seeds",
                        "--baselines", str(base)]) == 1
    assert "cannot be combined with a baselines file" in capsys.readouterr().err


def test_baselines_file_drop_convention_and_cli(sweep, tmp_path, capsys):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"semseg": {"mIoU": 40.0}, "depth": {"rmse": 2.0}}))
    out = tmp_path / "out"
    assert report_main([str(sweep), "--out", str(out), "--baselines", str(base),
                        "--delta-m", "drop"]) == 0
    groups = by_label(out / "summary.json")
    gains = [((50 - 40) / 40 + (2 - 1.0) / 2) / 2 * 100, ((54 - 40) / 40 + (2 - 0.8) / 2) / 2 * 100]
    assert groups["weighting=equal"]["delta_m_gain"]["mean"] == pytest.approx(sum(gains) / 2)
    printed = capsys.readouterr().out
    drop = -sum(gains) / 2
    assert "Δm drop (%) ↓" in printed and f"{drop:+.2f}" in printed
    assert groups["weighting=equal"]["delta_m_source"] == "--baselines"


def test_training_curves_average_the_seeds(sweep):
    from densemtl.report.groups import group_runs
    from densemtl.report.plots import epoch_mean_curve

    groups = {g.label: g for g in group_runs(load_runs([sweep]))}
    epochs, mean, std = epoch_mean_curve(groups["weighting=dwa"], "weight", "semseg")
    assert list(epochs) == [0, 1]
    assert mean == pytest.approx([0.7, 0.9]) and std == pytest.approx([0.2, 0.2])
    _, scale, _ = epoch_mean_curve(groups["weighting=dwa"], "scale", "depth")
    assert scale == pytest.approx([2.6, 2.2])


def test_wandb_run_dir_maps_to_its_run_and_bad_inputs_are_named(sweep, tmp_path):
    wandb_run = sweep / "0" / "wandb" / "offline-run-20250101_000000-abc"
    wandb_run.mkdir(parents=True)
    runs = load_runs([wandb_run, sweep / "0"])
    assert [r.path for r in runs] == [sweep / "0"]  # the same run, once
    orphan = tmp_path / "x" / "wandb" / "offline-run-1"
    orphan.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no metrics.json"):
        load_runs([orphan])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    assert report_main([str(tmp_path / "x"), "--out", str(tmp_path / "o")]) == 1


def test_groups_without_overrides_are_labelled_by_the_differing_config(tmp_path):
    for i, (scheme, seed) in enumerate([("equal", 0), ("equal", 1), ("gls", 0)]):
        run = make_run(tmp_path, str(i), {"sal": {"maxF": 0.5 + i}}, seed, scheme)
        (run / "run_info.json").unlink()
    files = write_report([tmp_path], tmp_path / "out")
    groups = by_label(files.summary)
    assert set(groups) == {"weighting=equal", "weighting=gls"}
    assert groups["weighting=equal"]["tasks"]["sal"]["maxF"]["mean"] == pytest.approx(1.0)


def test_confidence_interval_matches_the_t_table() -> None:
    from densemtl.runs.summary import confidence_interval, fmt

    # values 1, 2, 3: mean 2, std 1; t(0.975, 2) = 4.303 (any t table) → 2 ± 4.303 / √3
    lo, hi = confidence_interval(2.0, 1.0, 3)
    assert (lo, hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)))
    assert fmt(2.0, 1.0, 3) == "2 ± 1 [-0.4841, 4.484]"
    assert fmt(2.0, 1.0, 3, ci=False) == "2 ± 1" and fmt(2.0) == "2"
    # a wider level gives a wider interval; more runs with the same spread a narrower one
    assert confidence_interval(2.0, 1.0, 3, level=0.99)[0] < lo
    assert confidence_interval(2.0, 1.0, 10)[0] > lo


def test_corrupt_metrics_json_is_named_and_left_out_and_the_rest_reported(sweep, tmp_path,
                                                                          capsys):
    truncated = sweep / "1" / "metrics.json"
    truncated.write_text(truncated.read_text()[:40])  # a write cut short
    foreign = sweep / "3" / "metrics.json"
    foreign.write_text(json.dumps({"tasks": {"semseg": {"mIoU": "high"}}}))  # wrong schema
    out = tmp_path / "out"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "warning: left out" in line]
    assert len(warned) == 2
    assert f"left out {truncated}: unreadable JSON (Unterminated string" in warned[0]
    assert f"left out {foreign}: tasks.semseg.mIoU='high' is not a number" in warned[1]
    groups = by_label(out / "summary.json")
    # the other seed of each scheme still reports, alone
    assert groups["weighting=equal"]["runs"] == [str(sweep / "0")]
    assert groups["weighting=equal"]["tasks"]["semseg"]["mIoU"]["mean"] == 50.0
    assert groups["weighting=dwa"]["runs"] == [str(sweep / "2")]
    md = (out / "report.md").read_text()
    assert f"Left out, unreadable results: {truncated}: unreadable JSON" in md


def test_report_with_no_readable_run_fails_naming_the_files(tmp_path, capsys):
    run = make_run(tmp_path / "sweep", "0", {"semseg": {"mIoU": 50.0}}, 0)
    (run / "metrics.json").write_text("[1, 2]")
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"no readable run: {run / 'metrics.json'}: no 'tasks' mapping" in err
    with pytest.warns(UserWarning, match=r"skipping a run: .*metrics.json: no 'tasks'"):
        make_run(tmp_path / "sweep", "1", {"semseg": {"mIoU": 50.0}}, 1)
        assert [r.name for r in load_runs([tmp_path / "sweep"])] == ["1"]
