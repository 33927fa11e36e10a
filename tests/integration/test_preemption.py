"""A user's run killed or preempted (real processes, real signals): what is left, and
``densemtl-train resume=<run dir>`` continuing it."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from densemtl.training.checkpoint import load_checkpoint

#: 4 epochs of 4 batches, the epoch-end checkpoint only (no timed one)
TINY = ["data.n=20", "data.size=32", "data.batch_size=4", "trainer=debug",
        "trainer.max_epochs=4", "trainer.limit_train_batches=4", "tracking.qualitative=0",
        "model=mtl_baseline", "modulation=none", "tasks=fsv3", "checkpoint.every_n_minutes=null"]
NARROW = ["backbone.channels=[8,8,16,16]", "backbone.stem_width=8", "model.decoder_width=16"]


def start(run_dir: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("densemtl-train")
    env = {**os.environ, "DENSEMTL_DATA": str(cwd / "data"), **(env or {})}
    return subprocess.Popen([str(exe), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_epoch(proc: subprocess.Popen, run_dir: Path, epoch: int) -> None:
    """Return once the run has logged a training batch of ``epoch`` (0-based)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        if any(r["epoch"] == str(epoch) and r.get("train/loss") for r in history(run_dir)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"epoch {epoch} not reached")


def history(run_dir: Path) -> list[dict]:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def assert_complete_history(run_dir: Path) -> None:
    rows = history(run_dir)
    assert rows and all(None not in r and r["step"] != "" for r in rows)  # no cut-off line
    assert len({tuple(sorted(r.items())) for r in rows}) == len(rows)  # no row twice


def test_killed_in_epoch_3_resumes_from_epoch_2_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    wait_for_epoch(proc, run_dir, 2)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] >= 1
    assert ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] >= 2
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "running"
    assert_complete_history(run_dir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = run_dir / "checkpoints" / f".last.ckpt.tmp-{dead.pid}"
    orphan.write_bytes(b"half a checkpoint")

    resumed = start(run_dir, f"resume={run_dir}", cwd=tmp_path)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in out
    assert not orphan.exists()
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "metrics.json").read_text())["config"]["trainer"][
        "max_epochs"] == 4
    assert_complete_history(run_dir)
    assert {r["epoch"] for r in history(run_dir)} == {"0", "1", "2", "3"}


def test_sigterm_checkpoints_marks_the_run_and_exits_non_zero(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    wait_for_epoch(proc, run_dir, 1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert f"densemtl-train resume={run_dir}" in out
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "interrupted" and info["signal"] == "SIGTERM"
    ckpt = load_checkpoint(info["checkpoint"])
    assert ckpt["global_step"] == info["global_step"] >= 5  # the first epoch and more
    assert not (run_dir / "metrics.json").exists()
    assert_complete_history(run_dir)


def test_slurm_signal_requeues_and_the_requeued_job_resumes_in_its_directory(tmp_path):
    """A job sbatch'ed by hand (``--signal=USR1@300 --requeue``): SLURM's environment and its
    signal are real, ``scontrol`` is a stub that records its call (no cluster here). The second
    start is what a requeued job runs: the same command and job id, no directory named."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2",
             "SLURM_JOB_NAME": "densemtl", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run_dir = tmp_path / "outputs" / "slurm-4240_2"
    args = [*TINY, *NARROW]
    proc = start(run_dir, *args, cwd=tmp_path, env=slurm)
    wait_for_epoch(proc, run_dir, 1)
    proc.send_signal(signal.SIGUSR1)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGUSR1, out[-3000:]
    assert "SLURM job requeued" in out
    assert calls.read_text() == "requeue 4240_2\n"
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "interrupted" and info["signal"] == "SIGUSR1"
    stopped_at = load_checkpoint(info["checkpoint"])["global_step"]
    assert stopped_at == info["global_step"] >= 5

    requeued = start(run_dir, *args, cwd=tmp_path, env=slurm)
    out = requeued.communicate(timeout=600)[0]
    assert requeued.returncode == 0, out[-3000:]
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in out
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["slurm-4240_2"]
    assert json.loads((run_dir / "run_info.json").read_text())["status"] == "finished"
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 16
    assert_complete_history(run_dir)
    assert {r["epoch"] for r in history(run_dir)} == {"0", "1", "2", "3"}
    assert calls.read_text() == "requeue 4240_2\n"  # the finished job asked for nothing more
