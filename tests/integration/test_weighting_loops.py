"""Both Lightning loops feed a strategy what it declares and clip the gradient norm.

Tiny synthetic runs (2 steps): FAMO's post-step losses and MoDo's extra samples through the
joint loop, SDMGrad through the single-tasking loop (accumulated schedule), ``grad_clip_norm``
in both (the gradients left after the step are the clipped ones).
"""

import pytest
import pytorch_lightning as pl
import torch

from densemtl.config import compose
from densemtl.experiment import build_datamodule, build_module, build_tasks

TINY = ["data.n=24", "data.size=32", "data.batch_size=6", "modulation=none", "tasks=nyud4",
        "~tasks.normals", "~tasks.edge"]


class GradNorms(pl.Callback):
    """The global gradient norm left after every optimiser step."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads]))))


def fit(tmp_path, *overrides: str):
    cfg = compose([*TINY, *overrides, f"paths.data_dir={tmp_path / 'data'}"])
    tasks = build_tasks(cfg)
    module = build_module(cfg, tasks)
    norms = GradNorms()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         num_sanity_val_steps=0, callbacks=[norms])
    trainer.fit(module, build_datamodule(cfg, tasks))
    return module, norms.norms


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_joint_loop_gives_famo_its_post_step_losses_and_clips(tmp_path, clip):
    module, norms = fit(tmp_path, "model=mtl_baseline", "weighting=famo",
                        f"grad_clip_norm={'null' if clip is None else clip}")
    assert module.weighting.adam_step == 2  # after_step ran after each of the 2 steps
    assert module.weighting.logits.abs().sum() > 0
    if clip is None:
        assert min(norms) > 1e-2
    else:
        assert max(norms) == pytest.approx(clip, rel=1e-4)


def test_joint_loop_gives_modo_three_samples(tmp_path):
    module, _ = fit(tmp_path, "model=mtl_baseline", "weighting=modo", "weighting.gamma=0.5")
    weights = module.weighting.weights
    assert weights != [0.5, 0.5] and sum(weights) == pytest.approx(1.0)


def test_single_tasking_loop_gives_sdmgrad_three_samples_and_clips(tmp_path):
    module, norms = fit(tmp_path, "model=astmt", "model.schedule=accumulated",
                        "weighting=sdmgrad", "grad_clip_norm=1e-3")
    assert module.weighting.weights != [0.5, 0.5]
    assert max(norms) == pytest.approx(1e-3, rel=1e-4)
