"""Worker for test_ddp.py: a few single-tasking + adversarial steps under 2-process CPU DDP.

Lightning's DDP launcher re-runs this script for rank 1; every rank saves its parameters.
"""

import sys
from pathlib import Path

import torch

from densemtl.config import compose
from densemtl.experiment import build_datamodule, build_module, build_tasks, build_trainer
from densemtl.training.logging import run_info

out = Path(sys.argv[1])
cfg = compose([
    "trainer=ddp_cpu", "adversarial=on", "tasks=fsv3", "modulation=se_decoder",
    "data.n=24", "data.size=32", "data.batch_size=2", "trainer.max_epochs=1",
    "trainer.limit_train_batches=3", "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false", f"paths.data_dir={out / 'data'}",
])
torch.manual_seed(0)
tasks = build_tasks(cfg)
module = build_module(cfg, tasks)
trainer = build_trainer(cfg, out / "run", run_info(cfg))
trainer.fit(module, datamodule=build_datamodule(cfg, tasks))
params = {k: v.detach().clone() for k, v in module.named_parameters()}
torch.save({"params": params, "steps": trainer.global_step}, out / f"rank{trainer.global_rank}.pt")
