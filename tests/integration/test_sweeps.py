"""Sweep presets and launchers: a parallel 2-job multirun that the report aggregates, the SLURM
submission script, an Optuna search, the ASTMT ablation rows and the ATRC synthetic study rows."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from densemtl.config import compose, conf_dir

TINY = ["data.n=16", "data.size=32", "data.batch_size=4", "trainer=debug", "~tasks.normals",
        "~tasks.edge"]


def cli(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(name)
    env = {**os.environ, "DENSEMTL_DATA": str(cwd / "data"), **(env or {})}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_parallel_two_job_multirun_is_aggregated_by_the_report(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    out = cli("densemtl-train", "-m", "sweep=weighting_x_seeds", "weighting=equal,uncertainty",
              "seed=0", *TINY, "hydra/launcher=parallel", f"hydra.sweep.dir={sweep}",
              cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Sweep {sweep}: 2 runs with results, 0 without" in out.stdout
    runs = {json.loads((d / "run_info.json").read_text())["weighting"]: d
            for d in sweep.iterdir() if (d / "metrics.json").is_file()}
    assert set(runs) == {"equal", "uncertainty"}
    info = json.loads((runs["equal"] / "run_info.json").read_text())
    assert info["sweep"] == "weighting_x_seeds" and "sweep:weighting_x_seeds" in info["tags"]

    report = cli("densemtl-report", str(sweep), "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    groups = {g["label"]: g for g in json.loads((tmp_path / "report/summary.json").read_text())}
    assert set(groups) == {"weighting=equal", "weighting=uncertainty"}
    for scheme, run_dir in runs.items():
        metrics = json.loads((run_dir / "metrics.json").read_text())["tasks"]
        got = groups[f"weighting={scheme}"]["tasks"]
        assert got["depth"]["rmse"]["mean"] == pytest.approx(metrics["depth"]["rmse"])
        assert got["semseg"]["mIoU"]["n"] == 1
    assert (tmp_path / "report" / "training_curves.png").stat().st_size > 10_000


def test_slurm_launcher_writes_the_submission_script(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    captured = tmp_path / "submitted.sh"
    stub = bin_dir / "sbatch"  # no cluster: keep the script, refuse the submission
    stub.write_text(f'#!/bin/sh\ncp "$1" {captured}\necho "stub: no cluster" >&2\nexit 1\n')
    stub.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit checks that it exists
    (bin_dir / "srun").chmod(0o755)
    sweep = tmp_path / "sweep"
    out = cli("densemtl-train", "-m", "sweep=weighting_x_seeds", "weighting=equal,dwa", "seed=0",
              *TINY, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
              "hydra.launcher.timeout_min=90", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
              env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert out.returncode != 0 and "no cluster" in out.stderr
    script = captured.read_text()
    options = dict(re.findall(r"#SBATCH --([\w-]+)=?(\S*)", script))
    assert options["array"] == "0-1%2"  # two jobs (array_parallelism 32, capped at the count)
    assert options["partition"] == "gpu" and options["time"] == "90"
    assert options["gpus-per-node"] == "1" and options["cpus-per-task"] == "8"
    assert options["mem"] == "32GB" and options["job-name"] == "densemtl_weighting_x_seeds"
    # each array task unpickles its job from the sweep's .submitit folder and runs it
    assert f"-m submitit.core._submit {sweep / '.submitit'}/%j" in script


def test_optuna_search_maximises_the_objective_over_its_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    out = cli("densemtl-train", "-m", "sweep=optuna_lr", "hydra.sweeper.n_trials=2",
              "tracking.objective=depth/rmse", "hydra.sweeper.direction=minimize",
              "tasks=nyud4", "model=mtl_baseline", "modulation=none", *TINY,
              f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rmse = [json.loads(p.read_text())["tasks"]["depth"]["rmse"]
            for p in sweep.glob("*/metrics.json")]
    assert len(rmse) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(rmse))


def test_astmt_ablation_rows_are_the_paper_rows():
    preset = yaml.safe_load((conf_dir() / "sweep" / "astmt_ablation.yaml").read_text())
    rows = [r.strip() for r in preset["hydra"]["sweeper"]["params"]["+sweep/astmt_rows"].split(",")]
    files = sorted(p.stem for p in (conf_dir() / "sweep" / "astmt_rows").glob("*.yaml"))
    assert sorted(rows) == files and len(rows) == 11
    assert preset["hydra"]["sweeper"]["params"]["seed"] == "0,1,2"
    seen = {}
    for row in rows:
        cfg = compose([f"+sweep/astmt_rows={row}"])
        mod = cfg.modulation
        seen[row] = (cfg.single_task, cfg.model.name, mod.se, mod.adapters,
                     cfg.adversarial.enabled, list(cfg.tasks))
    pascal5 = ["semseg", "human_parts", "edge", "normals", "sal"]
    assert {seen[f"single_task_{t}"][0] for t in pascal5} == set(pascal5)
    assert seen["mtl"] == (None, "mtl_baseline", "none", False, False, pascal5)
    assert seen["se_decoder"][2] == "decoder" and seen["se"][2] == "encoder_decoder"
    assert seen["adapters"][3] is True
    assert seen["sea"][2:5] == ("encoder_decoder", False, True)
    assert compose(["+sweep/astmt_rows=se_decoder"]).model.schedule == "per_task"  # the papers'
    acc = compose(["+sweep/astmt_rows=se_decoder_accumulated"])
    assert (acc.model.schedule, acc.model.execution, acc.modulation.se) == (
        "accumulated", "shared_encoder", "decoder")


def test_single_vs_multi_is_the_ablations_baselines_over_six_seeds():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def params(name):  # the sweeper's parameters, the inherited ones included
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose("train", [f"sweep={name}"], return_hydra_config=True)
        return cfg.hydra.sweeper.params

    short_params, full_params = params("single_vs_multi"), params("astmt_ablation")
    rows = [r.strip() for r in short_params["+sweep/astmt_rows"].split(",")]
    ablation = [r.strip() for r in full_params["+sweep/astmt_rows"].split(",")]
    assert sorted(rows) == sorted(r for r in ablation if r == "mtl" or r.startswith("single"))
    assert len(rows) == 6 and short_params["seed"] == "0,1,2,3,4,5"
    assert full_params["seed"] == "0,1,2"
    for row in rows:  # every job is the ablation's job of that row
        short = compose(["sweep=single_vs_multi", f"+sweep/astmt_rows={row}"])
        full = compose(["sweep=astmt_ablation", f"+sweep/astmt_rows={row}"])
        assert short.tracking.sweep == "single_vs_multi" and short.data.size == 64
        short.tracking.sweep = full.tracking.sweep
        assert short == full
    assert compose(["sweep=single_vs_multi", "+sweep/astmt_rows=mtl"]).model.loop == "joint"


def test_atrc_synthetic_study_rows_and_sizes(monkeypatch):
    monkeypatch.setenv("ATRC_GENOTYPE", "/v/voted.json")
    preset = yaml.safe_load((conf_dir() / "sweep" / "atrc_synthetic.yaml").read_text())
    params = preset["hydra"]["sweeper"]["params"]
    rows = [r.strip() for r in params["+sweep/atrc_rows"].split(",")]
    files = sorted(p.stem for p in (conf_dir() / "sweep" / "atrc_rows").glob("*.yaml"))
    assert sorted(rows) == files and len(rows) == 11 and params["seed"] == "0,1,2"
    seen = {}
    for row in rows:
        cfg = compose(["sweep=atrc_synthetic", f"+sweep/atrc_rows={row}"])
        seen[row] = (cfg.single_task, cfg.model.loop, cfg.model.genotype, cfg.model.gt_regions)
        assert (cfg.data.n, cfg.data.size, cfg.trainer.max_epochs) == (240, 48, 5)
        assert cfg.model.encoder == "hrnet_tiny" and list(cfg.tasks) == [
            "semseg", "depth", "normals", "edge"]
    nyud4 = ["semseg", "depth", "normals", "edge"]
    assert [seen[f"single_task_{t}"][0] for t in nyud4] == nyud4
    assert seen["mtl"][2] == "all_none" and seen["atrc"][2] == "/v/voted.json"
    assert {seen[r][2] for r in ("global", "local", "t_label", "s_label")} == {
        "all_global", "all_local", "all_t_label", "all_s_label"}
    assert seen["s_label_gt"][2:] == ("all_s_label", True) and seen["s_label"][3] is False
    search = compose(["sweep=atrc_synthetic_search"])
    assert search.model.loop == "atrc_search" and search.data.size == 48
    assert search.trainer.max_epochs == 5
