"""Worker for test_ddp_resume.py: a tiny run under 2-process CPU DDP (gloo) through the same
``experiment.run`` as the CLI, of the loop ``sys.argv[3]`` (``joint``: the multi-task baseline
with rlw, whose random weights come from each rank's global random state; ``adversarial``: ASTMT
single-tasking, one step per task, with the adversarial term and dwa, whose weights follow
the epoch-mean losses), in one of three modes (``sys.argv[2]``):

* ``reference``: uninterrupted, into ``<out>/reference``;
* ``interrupted``: rank 0 sends itself SIGTERM while it loads its ``sys.argv[4]``-th training
  image (both ranks must stop at the same batch, with one checkpoint), into ``<out>/resumed``;
* ``resumed``: the same configuration started again in ``<out>/resumed``, which resumes there.

Lightning's DDP launcher re-runs this script for rank 1. Every rank saves ``rank<r>.pt``: its
parameters after the run, how the run ended and how many training images it loaded.
"""

import os
import signal
import sys
from pathlib import Path

import torch

from densemtl.config import compose
from densemtl.data.synthetic import SyntheticScenes
from densemtl.experiment import run
from densemtl.training.callbacks import RunInterrupted

out, mode, loop = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rank = int(os.environ.get("LOCAL_RANK", "0"))
LOOPS = {"joint": ["model=mtl_baseline", "modulation=none", "weighting=rlw"],
         "adversarial": ["model=astmt", "modulation=se_decoder", "adversarial=on",
                         "weighting=dwa"]}
cfg = compose([
    *LOOPS[loop], "trainer=ddp_cpu", "data.n=24", "data.size=32", "data.batch_size=2",
    "tasks=fsv3", "trainer.max_epochs=3",
    "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "tracking.qualitative=0",
    "checkpoint.every_n_minutes=null", "backbone.channels=[8,8,16,16]", "backbone.stem_width=8",
    "model.decoder_width=16", f"paths.data_dir={out / 'data'}",
])
loaded = {"train": 0}
original = SyntheticScenes.__getitem__


def getitem(self, index):
    if self.split == "train":
        loaded["train"] += 1
        if mode == "interrupted" and rank == 0 and loaded["train"] == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGTERM)
    return original(self, index)


SyntheticScenes.__getitem__ = getitem
ended = "finished"
try:
    run(cfg, out / ("reference" if mode == "reference" else "resumed"))
except RunInterrupted as stop:
    ended = f"interrupted {stop.exit_code}"
torch.save({"ended": ended, "train_images": loaded["train"]}, out / f"rank{rank}.pt")
