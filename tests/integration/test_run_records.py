"""What a run records: loop and set-up time apart, baselines checked before any work, the summary
in the log file, the logged keys of the README's scheme."""

import csv
import re
import time
from pathlib import Path

import pytest

from densemtl.config import compose
from densemtl.data.datamodule import MultiTaskDataModule
from densemtl.experiment import evaluate_checkpoint, run

TINY = ["data.n=16", "data.size=32", "data.batch_size=4", "trainer=debug", "tracking.qualitative=0"]
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def pascal_run(tmp_path_factory, one_thread):
    """A tiny joint run on the five PASCAL tasks (saliency in the default dataset convention)."""
    root = tmp_path_factory.mktemp("pascal")
    cfg = compose([*TINY, "model=mtl_baseline", "modulation=none", "tasks=pascal5",
                   f"paths.data_dir={root / 'data'}"])
    run(cfg, root / "run")
    return root


def test_train_seconds_is_the_loop_and_set_up_is_recorded_apart(tmp_path, monkeypatch):
    setup = MultiTaskDataModule.setup

    def slow_setup(self, stage=None):  # stands for rendering data before the first job
        time.sleep(1.0)
        return setup(self, stage)

    monkeypatch.setattr(MultiTaskDataModule, "setup", slow_setup)
    cfg = compose([*TINY, "model=mtl_baseline", "modulation=none", "tasks=fsv3",
                   f"paths.data_dir={tmp_path / 'data'}"])
    start = time.perf_counter()
    payload = run(cfg, tmp_path / "run")
    wall = time.perf_counter() - start
    assert payload["setup_seconds"] >= 1.0
    assert 0 < payload["train_seconds"] <= wall - payload["setup_seconds"]


def test_eval_checks_baselines_against_the_metric_convention_before_any_work(
    pascal_run, tmp_path, monkeypatch
):
    ckpt = pascal_run / "run" / "checkpoints" / "last.ckpt"
    validated = []
    monkeypatch.setattr(MultiTaskDataModule, "setup", lambda *a, **k: validated.append(a))
    cfg = {"ckpt_path": str(ckpt), "baselines": "reference:astmt_pascal_r26", "plugins": [],
           "trainer": {"limit_val_batches": 2}, "data": {}}
    with pytest.raises(KeyError) as err:
        evaluate_checkpoint(cfg, tmp_path / "eval")
    message = str(err.value)
    assert "baseline for task 'sal' lacks metric 'maxF'" in message
    assert "(it has: mIoU)" in message and "convention 'dataset_beta2_0.3'" in message
    assert "++data.task_args.sal.convention=image_beta2_1" in message
    assert not validated and not (tmp_path / "eval" / "metrics.json").exists()
    monkeypatch.undo()
    # the convention the message names makes the same command work
    cfg["data"] = {"task_args": {"sal": {"convention": "image_beta2_1"}}}
    payload = evaluate_checkpoint(cfg, tmp_path / "eval")
    assert payload["config"]["data"]["task_args"]["sal"]["convention"] == "image_beta2_1"
    base = {"edge": ("odsF", 71.3, 1), "semseg": ("mIoU", 64.93, 1),
            "human_parts": ("mIoU", 57.12, 1), "normals": ("mean", 14.9, -1),
            "sal": ("mIoU", 64.17, 1)}
    gain = sum(s * (payload["tasks"][t][m] - b) / b for t, (m, b, s) in base.items()) / 5
    assert payload["delta_m"]["delta_m_gain"] == pytest.approx(100 * gain)


def test_training_checks_baselines_before_rendering_data(tmp_path):
    cfg = compose([*TINY, "tasks=pascal5", f"paths.data_dir={tmp_path / 'data'}",
                   "baselines=reference:astmt_pascal_r26"])
    with pytest.raises(KeyError, match="convention=image_beta2_1"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "data").exists()


def documented_keys() -> list[str]:
    """The key patterns of the README's logged-keys table (first column, in backticks)."""
    text = README.read_text()
    table = text.split("<!-- logged keys -->")[1].split("<!-- /logged keys -->")[0]
    return [m for line in table.splitlines() if line.startswith("| `")
            for m in re.findall(r"`([^`]+)`", line.split("|")[1])]


def key_regex(pattern: str, tasks: list[str]) -> re.Pattern:
    """``train/loss/<task>`` → a regular expression over the run's task names (other ``<...>``
    placeholders match any text: group names such as ``task/semseg`` hold slashes)."""
    out = re.escape(pattern).replace(re.escape("<task>"), "(" + "|".join(tasks) + ")")
    return re.compile(re.sub(r"<[^>]+>", ".+", out.replace("\\<", "<").replace("\\>", ">"))
                      + "$")


def test_logged_keys_are_the_readmes(tmp_path):
    """Every column a run logs matches one documented pattern, and each documented pattern is
    logged by one of two runs (joint with baselines; single-tasking, adversarial)."""
    patterns = documented_keys()
    assert "train/loss/<task>" in patterns and "step/lr/<param group>" in patterns
    columns: set[str] = set()
    tasks = ["semseg", "depth"]
    base = [*TINY, "tasks=nyud4", "~tasks.normals", "~tasks.edge", "trainer.max_epochs=2",
            "trainer.limit_train_batches=1", f"paths.data_dir={tmp_path / 'data'}"]
    for i, extra in enumerate((["model=mtl_baseline", "modulation=none",
                                "baselines={semseg: {mIoU: 50.0}, depth: {rmse: 1.0}}"],
                               ["model=astmt", "modulation=se_decoder", "adversarial=on"])):
        run(compose([*base, *extra]), tmp_path / str(i))
        with open(tmp_path / str(i) / "metrics.csv") as f:
            columns |= set(next(csv.reader(f))) - {"epoch", "step"}
    summary_only = {p for p in patterns if p.startswith(("cost/", "time/"))}
    regexes = {p: key_regex(p, tasks) for p in patterns}
    undocumented = [c for c in columns if not any(r.match(c) for r in regexes.values())]
    assert not undocumented, f"logged but not in the README: {undocumented}"
    unlogged = [p for p, r in regexes.items()
                if p not in summary_only and not any(r.match(c) for c in columns)]
    assert not unlogged, f"in the README but never logged: {unlogged}"
