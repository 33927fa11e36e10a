"""``densemtl-resources --plot`` reads sweeps as ``densemtl-report`` does and takes the same Δm."""

import json
from pathlib import Path

import pytest

from densemtl.cli.resources import main as resources_main
from densemtl.report import load_groups, write_report
from densemtl.report.plots import delta_m_points

RESOURCES = {"parameters": {"total": 2_500_000}, "multiply_adds": {"all_tasks": 1.5e9},
             "image_size": 32}


def make_run(root: Path, name: str, results: dict, seed: int, overrides: list[str]) -> None:
    """A finished run directory as a run writes it (metrics.json, run_info.json), without Δm:
    trained without baselines=."""
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "data": {"name": "synthetic"}, "tasks": {t: {} for t in results},
              "weighting": {"name": overrides[0].split("=")[-1]}}
    (run / "metrics.json").write_text(json.dumps(
        {"tasks": results, "config": config, "resources": RESOURCES, "train_seconds": 1.0}))
    (run / "run_info.json").write_text(json.dumps({"overrides": [*overrides, f"seed={seed}"]}))


@pytest.fixture
def sweep(tmp_path):
    """Equal weighting × two seeds and single-task runs of both tasks, none with a stored Δm."""
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    make_run(root, "0", {"semseg": {"mIoU": 55.0}, "depth": {"rmse": 0.9}}, 0, ["weighting=equal"])
    make_run(root, "1", {"semseg": {"mIoU": 45.0}, "depth": {"rmse": 1.3}}, 1, ["weighting=equal"])
    make_run(root, "2", {"semseg": {"mIoU": 50.0}}, 0, ["single_task=semseg"])
    make_run(root, "3", {"depth": {"rmse": 1.0}}, 0, ["single_task=depth"])
    return root


def test_plot_accepts_a_sweep_and_takes_delta_m_from_its_single_task_runs(sweep, tmp_path):
    png = tmp_path / "fig5.png"
    assert resources_main(["--plot", str(png), str(sweep)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    # drops by hand: ((55-50)/50 - (0.9-1)/1)/2 = +10 % gain, ((45-50)/50 - 0.3)/2 = -20 %
    (point,) = delta_m_points(load_groups([sweep]), "drop")
    assert point[:3] == ("weighting=equal", 2.5, 1.5)
    assert point[3] == pytest.approx(-(10.0 - 20.0) / 2) and point[4] == pytest.approx(21.2132)
    # the report's number for the same sweep is the same number
    summary = json.loads(write_report([sweep], tmp_path / "report").summary.read_text())
    equal = next(g for g in summary if g["label"] == "weighting=equal")
    assert -equal["delta_m_gain"]["mean"] == pytest.approx(point[3])


def test_plot_without_any_delta_m_says_what_to_pass(sweep, tmp_path, capsys):
    for single in ("2", "3"):
        for f in (sweep / single).iterdir():
            f.unlink()
        (sweep / single).rmdir()
    assert resources_main(["--plot", str(tmp_path / "x.png"), str(sweep)]) == 1
    err = capsys.readouterr().err
    assert "no Δm for the multi-task configurations ['weighting=equal']" in err
    assert "--baselines" in err and not (tmp_path / "x.png").exists()
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"semseg": {"mIoU": 50.0}, "depth": {"rmse": 1.0}}))
    assert resources_main(["--plot", str(tmp_path / "x.png"), str(sweep),
                           "--baselines", str(base)]) == 0
