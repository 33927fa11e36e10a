"""Every job of a multirun is its own wandb run, checked in the files wandb would sync.

wandb's offline run file (``offline-run-*/run-<id>.wandb``) is a LevelDB-style log of protobuf
``Record`` messages (the SDK's ``wandb_internal_pb2``); it is what ``wandb sync`` uploads, so
reading it shows exactly which config, history and summary each dashboard run would get.
"""

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from densemtl.config import compose
from densemtl.experiment import run

wandb_pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")

TINY = ["data.n=16", "data.size=32", "data.batch_size=4", "trainer=debug", "model=mtl_baseline",
        "modulation=none", "tasks=nyud4", "~tasks.normals", "~tasks.edge", "tracking.qualitative=0"]
BLOCK, HEADER = 32768, 7  # the log's block size and its file / record header length


def wandb_records(path: Path) -> list:
    """The ``Record`` messages of a ``.wandb`` file (records may span blocks: first, middle...,
    last chunks; a block tail shorter than a header is zero padding)."""
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a wandb run file"
    pos, records, pending = HEADER, [], b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full / first start a record
        if kind in (1, 4):  # full / last end it
            record = wandb_pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def items(record_items) -> dict[str, object]:
    """wandb's key/nested-key → JSON items as one flat ``{"a/b": value}`` mapping."""
    return {"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json)
            for i in record_items}


def read_run(run_dir: Path) -> dict:
    """The one offline wandb run of a job directory: run record, config, history, summary."""
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.WhichOneof("record_type"), []).append(record)
    (run_record,) = by_type["run"]
    config = {}
    for record in [run_record.run, *(r.config for r in by_type.get("config", []))]:
        config.update(items(record.config.update if record is run_record.run else record.update))
    summary = {}
    for record in by_type.get("summary", []):
        summary.update(items(record.summary.update))
    return {
        "run": run_record.run, "config": config, "summary": summary,
        "history": [items(r.history.item) for r in by_type.get("history", [])],
        "exit_code": [r.exit.exit_code for r in by_type.get("exit", [])],
    }


def csv_column(path: Path, key: str) -> list[tuple[int, float]]:
    with path.open() as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_two_job_multirun_gives_two_wandb_runs_with_their_own_config_and_history(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "DENSEMTL_DATA": str(tmp_path / "data"),
           "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("densemtl-train")
    result = subprocess.run(
        [str(exe), "-m", *TINY, "logger=wandb", "seed=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "already in progress" not in result.stderr + result.stdout
    assert "anonymous setting" not in result.stderr + result.stdout
    runs = {job: read_run(sweep / str(job)) for job in (0, 1)}
    assert runs[0]["run"].run_id != runs[1]["run"].run_id
    for job, seed in ((0, 1), (1, 2)):
        got, job_dir = runs[job], sweep / str(job)
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert got["config"]["seed"] == seed  # the job's config given to wandb.init
        assert got["config"]["config"]["seed"] == seed  # and Lightning's hparams of the job
        assert got["config"]["run_info"]["job_num"] == job
        assert got["run"].run_group == "sweep"  # the sweep directory's name
        assert f"seed:{seed}" not in got["run"].tags and "weighting:fixed" in got["run"].tags
        assert f"seed={seed}" in got["run"].display_name
        # history: this job's epoch losses, at this job's steps, and nothing else
        for key in ("train/loss/semseg", "train/loss/depth", "val/depth/rmse"):
            logged = [(h["trainer/global_step"], h[key]) for h in got["history"] if key in h]
            expected = csv_column(job_dir / "metrics.csv", key)
            assert [s for s, _ in logged] == [s for s, _ in expected] and expected
            assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
        steps = [h["trainer/global_step"] for h in got["history"]]
        assert steps == sorted(steps)  # one training, not two jobs' interleaved
        # summary: cost and times of this job beside its final metrics; finished cleanly
        res = metrics["resources"]
        assert got["summary"]["cost/parameters"] == res["parameters"]["total"]
        assert got["summary"]["cost/multiply_adds"] == res["multiply_adds"]["all_tasks"]
        assert got["summary"]["time/train_seconds"] == pytest.approx(metrics["train_seconds"])
        assert got["summary"]["time/setup_seconds"] == pytest.approx(metrics["setup_seconds"])
        assert got["summary"]["val/depth/rmse"] == pytest.approx(
            metrics["tasks"]["depth"]["rmse"], rel=1e-6)
        assert got["exit_code"] == [0]
    first, second = (runs[j]["summary"]["val/depth/rmse"] for j in (0, 1))
    assert first != second  # different seeds, different runs


def test_a_failing_job_finishes_its_wandb_run_as_failed(tmp_path, monkeypatch):
    import wandb

    from densemtl.tasks.depth import Depth

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(Depth, "loss", lambda self, pred, target: pred.sum() * float("nan"))
    cfg = compose([*TINY, "logger=wandb", "max_bad_steps=1", f"paths.data_dir={tmp_path / 'd'}"])
    with pytest.raises(RuntimeError, match="non-finite"):
        run(cfg, tmp_path / "failed")
    assert wandb.run is None  # the next job opens its own run
    wandb.teardown()  # the service writes the run file asynchronously: let it finish
    assert read_run(tmp_path / "failed")["exit_code"] == [1]
