"""The ATRC search and retraining through the real entry points (tiny synthetic data, CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densemtl.config import compose
from densemtl.data.synthetic import write_cache
from densemtl.experiment import build_module, build_tasks, run
from densemtl.models.atrc.genotype import load_genotype
from densemtl.training.atrc import SEARCH_DEFAULTS, linear_schedule

SMALL = ["data.n=10", "data.size=32", "data.batch_size=4", "trainer.enable_progress_bar=false",
         "trainer.limit_val_batches=1", "tracking.qualitative=0", "model.codebook_batches=1"]


@pytest.mark.parametrize("progress, tau, w_h", [(0.0, 1.0, -0.02), (0.25, 0.7625, 0.0),
                                                 (1.0, 0.05, 0.06)])
def test_temperature_and_entropy_schedules(progress, tau, w_h):
    assert linear_schedule(*SEARCH_DEFAULTS["temperature"], progress) == pytest.approx(tau)
    assert linear_schedule(*SEARCH_DEFAULTS["entropy_weight"], progress) == pytest.approx(
        w_h, abs=1e-12)


def test_unknown_search_key_is_rejected():
    cfg = compose(["experiment=atrc/synthetic_search", "+model.search.temprature=[1,0]"])
    with pytest.raises(ValueError, match="temprature"):
        build_module(cfg, build_tasks(cfg))


def test_search_history_and_fixing_steps_survive_a_checkpoint(tmp_path):
    cfg = compose(["experiment=atrc/synthetic_search", *SMALL])
    module = build_module(cfg, build_tasks(cfg))
    module.history = [{"step": 1, "temperature": 1.0, "entropy_weight": -0.02,
                       "entropy": 1.55, "fixed": 0}]
    module.fixed_at = {"semseg<-depth": 7}
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "c.ckpt")
    resumed = build_module(cfg, build_tasks(cfg))
    resumed.on_load_checkpoint(torch.load(tmp_path / "c.ckpt", weights_only=True))
    assert resumed.history == module.history and resumed.fixed_at == {"semseg<-depth": 7}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("atrc") / "data"
    write_cache(root / "synthetic", n=10, size=32, seed=0, progress=False)
    return root


def test_search_fixes_blocks_exports_their_choices_and_retrains_from_the_file(data_dir, tmp_path):
    cfg = compose(["experiment=atrc/synthetic_search", *SMALL, f"paths.data_dir={data_dir}",
                   "trainer.max_epochs=2", "model.search.fix_threshold=1e-9"])
    out = tmp_path / "search"
    run(cfg, out)
    search = json.loads((out / "search.json").read_text())
    history = search["history"]
    steps = len(history)
    assert steps == 4  # 8 training samples / batch 4 × 2 epochs
    assert [h["step"] for h in history] == [1, 2, 3, 4]  # α's Adam step is not counted
    taus = [h["temperature"] for h in history]
    assert taus[0] == pytest.approx(1.0) and all(a > b for a, b in zip(taus, taus[1:]))
    # step 1: the distillation BN starts at γ = β = 0, so no gradient reaches α (nothing fixes);
    # step 2: one Adam step moves every α by ≈ lr, and with a tiny threshold (almost) every
    # block fixes — a block whose two best candidates got the same first update fixes later;
    # fixed blocks stay fixed, and by the last step all 16 are
    fixed_counts = [h["fixed"] for h in history]
    assert fixed_counts[0] == 0 and fixed_counts[1] >= 12 and fixed_counts[-1] == 16
    assert fixed_counts == sorted(fixed_counts)
    assert history[-1]["entropy"] == 0.0
    genotype = load_genotype(out / "genotype.json", ["semseg", "depth", "normals", "edge"])
    for name, block in search["blocks"].items():
        target, source = name.split("<-")
        assert block["fixed"] == genotype[target][source]
        assert 2 <= block["fixed_at_step"] <= steps
    assert json.loads((out / "metrics.json").read_text())["tasks"]["semseg"]["mIoU"] >= 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    fixed = {k: int(v) for k, v in ckpt["state_dict"].items() if k.endswith(".fixed")}
    assert len(fixed) == 16 and min(fixed.values()) >= 0

    retrain = compose(["experiment=atrc/synthetic_atrc", *SMALL, f"paths.data_dir={data_dir}",
                       "trainer.max_epochs=1", f"model.genotype={out / 'genotype.json'}"])
    module = build_module(retrain, build_tasks(retrain))
    assert module.net.genotype == genotype
    result = run(retrain, tmp_path / "retrain")
    assert set(result["tasks"]) == {"semseg", "depth", "normals", "edge"}

    # block importance of the retrained run, through the console script
    exe = Path(sys.executable).with_name("densemtl-atrc")
    ckpt = tmp_path / "retrain" / "checkpoints" / "last.ckpt"
    imp = subprocess.run([str(exe), "importance", str(ckpt), "--out", str(tmp_path / "imp"),
                          f"paths.data_dir={data_dir}", "data.batch_size=2"],
                         capture_output=True, text=True)
    assert imp.returncode == 0, imp.stderr[-2000:]
    importance = json.loads((tmp_path / "imp" / "importance.json").read_text())
    blocks = {(t, s) for t, row in genotype.items() for s, k in row.items() if k != "none"}
    assert {(t, s) for t, row in importance.items() for s in row} == blocks
    assert (tmp_path / "imp" / "importance.png").is_file()


def test_vote_command_writes_majority_and_prints_reliability(tmp_path):
    def geno(a, b):
        return {"x": {"x": a, "y": b}, "y": {"x": "global", "y": "none"}}

    files = []
    for i, (a, b) in enumerate([("local", "global"), ("local", "s_label"), (2, "global")]):
        files.append(tmp_path / f"g{i}.json")
        files[-1].write_text(json.dumps(geno(a, b)))
    exe = Path(sys.executable).with_name("densemtl-atrc")
    result = subprocess.run([str(exe), "vote", *map(str, files), "--out",
                             str(tmp_path / "voted.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "voted.json").read_text()) == geno("local", "global")
    # pairs agree on 4/4, 3/4, 3/4 blocks -> 83.3 %
    assert "percentage agreement 83.3 %" in result.stdout
    bad = subprocess.run([str(exe), "vote", str(files[0]), str(tmp_path / "missing.json"),
                          "--out", str(tmp_path / "v.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.json" in bad.stderr
