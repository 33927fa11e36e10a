"""Worker for test_atrc_ddp.py: a few ATRC search steps under 2-process CPU DDP (gloo).

Lightning's DDP launcher re-runs this script for rank 1; every rank saves its parameters and
buffers (the blocks' fixing state).
"""

import sys
from pathlib import Path

import torch

from densemtl.config import compose
from densemtl.experiment import build_datamodule, build_module, build_tasks, build_trainer
from densemtl.training.logging import run_info

out = Path(sys.argv[1])
cfg = compose([
    "experiment=atrc/synthetic_search", "trainer=ddp_cpu", "data.n=24", "data.size=32",
    "data.batch_size=2", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
    "model.codebook_batches=1", "model.search.fix_threshold=1e-9",
    f"paths.data_dir={out / 'data'}",
])
torch.manual_seed(0)
tasks = build_tasks(cfg)
module = build_module(cfg, tasks)
trainer = build_trainer(cfg, out / "run", run_info(cfg))
trainer.fit(module, datamodule=build_datamodule(cfg, tasks))
state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
torch.save({"state": state, "steps": trainer.global_step}, out / f"rank{trainer.global_rank}.pt")
