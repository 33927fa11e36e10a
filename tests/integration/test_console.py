"""What a user sees on the console: the suite's --help, no unactionable notices, the summary in
the job's log file, one labelled line per epoch under the parallel launcher."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["data.n=16", "data.size=32", "data.batch_size=4", "trainer.max_epochs=1",
        "model=mtl_baseline", "modulation=none", "tasks=nyud4", "~tasks.normals", "~tasks.edge",
        "tracking.qualitative=0"]
#: notices the suite silences or avoids (console.py): none may be printed
NOISE = ("litlogger", "LeafSpec", "Trying to infer the `batch_size`", "limit_train_batches=1.0",
         "limit_val_batches=1.0", "FLOPs", "anonymous setting", "is powered by Hydra")


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("densemtl-train")
    env = {**os.environ, "DENSEMTL_DATA": str(cwd / "data"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_help_describes_the_groups_and_common_commands(tmp_path):
    out = train("--help", cwd=tmp_path).stdout
    assert out.startswith("densemtl-train: train one multi-task dense-prediction run")
    conf = Path(__file__).parents[2] / "conf" / "weighting"
    weightings = sorted(p.stem for p in conf.glob("*.yaml"))
    assert f"weighting: {', '.join(weightings)}\n" in out  # every choice of the group, listed
    assert "densemtl-train -m sweep=weighting_x_seeds" in out and "densemtl-report" in out
    assert "is powered by Hydra" not in out and "\nbackbone:\n  name:" not in out  # no dump


def test_a_run_prints_no_noise_and_logs_its_summary(tmp_path):
    result = train(*TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    printed = result.stdout + result.stderr
    assert [n for n in NOISE if n in printed] == []
    assert "Results (mtl_baseline)" in result.stdout
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Results (mtl_baseline)" in log and "rmse↓" in log  # the whole table, in the file


def test_parallel_jobs_print_one_labelled_line_per_epoch(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = train("-m", *TINY, "trainer.max_epochs=2", "hydra/launcher=parallel",
                   "hydra.launcher.n_jobs=2", "seed=1,2", f"hydra.sweep.dir={tmp_path / 's'}",
                   cwd=tmp_path)
    printed = result.stdout + result.stderr
    for job, seed in ((0, 1), (1, 2)):
        for epoch in (1, 2):
            assert f"[job {job}: " in printed and f"seed={seed}] epoch {epoch}/2" in printed
    assert "it/s]" not in printed and "Epoch 0:" not in printed  # no progress bars
    cores = len(os.sched_getaffinity(0))
    for info in (tmp_path / "s").glob("*/run_info.json"):  # each job its share of the cores
        assert json.loads(info.read_text())["threads"] == max(1, cores // 2)
