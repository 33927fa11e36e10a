"""One ASTMT training step for T = 5 tasks in execution modes (a) sequential, (b) stacked,
(c) shared encoder, with and without the adversarial term; ratios against (a) in the same run.

Every configuration runs in a fresh subprocess so its peak memory (max RSS on CPU, max allocated
on GPU) is its own. The step is the accumulated schedule (all tasks' gradients, one optimiser
step), which is what modes (b) and (c) compute in a single pass; decoder-only SE modulation makes
all three modes valid for the same network.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import torch

TASKS = {"semseg": {"num_classes": 8}, "human_parts": {}, "edge": {}, "normals": {}, "sal": {}}
MODES = {"a_sequential": "sequential", "b_stacked": "stacked", "c_shared_encoder": "shared_encoder"}


def settings() -> dict:
    """Problem size: a CPU-sized net on CPU, the standard R-26 at 256×256 on a GPU."""
    if torch.cuda.is_available():
        return {"device": "cuda", "batch": 8, "size": 256, "steps": 20,
                "backbone": {"name": "seresnet26"}, "width": 256}
    return {"device": "cpu", "batch": 8, "size": 64, "steps": 5,
            "backbone": {"name": "seresnet26", "channels": (16, 32, 64, 128), "stem_width": 16},
            "width": 64}


def child(mode: str, adversarial: bool) -> dict:
    """Time one configuration (runs inside the subprocess)."""
    from densemtl.models import DenseMTLNet
    from densemtl.models.adversarial import TaskDiscriminator
    from densemtl.tasks import build_task
    from densemtl.training.single_tasking import Adversary, single_tasking_step
    from densemtl.weighting import build_weighting

    s = settings()
    dev = torch.device(s["device"])
    torch.manual_seed(0)
    tasks = {t: build_task(t, **kw) for t, kw in TASKS.items()}
    net = DenseMTLNet({t: task.out_channels for t, task in tasks.items()}, backbone=s["backbone"],
                      decoder_width=s["width"], se="decoder", execution=MODES[mode]).to(dev)
    params = list(net.parameters())
    adversary = None
    if adversarial:
        disc = TaskDiscriminator(s["width"], len(tasks)).to(dev)
        params += list(disc.parameters())
        adversary = Adversary(disc, w_d=0.1, lambd=1.0)
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    weighting = build_weighting("fixed", list(tasks), weights={t: 1.0 for t in tasks}).to(dev)
    b, n = s["batch"], s["size"]
    batch = {
        "image": torch.randn(b, 3, n, n, device=dev),
        "semseg": torch.randint(0, 8, (b, n, n), device=dev),
        "human_parts": torch.randint(0, 7, (b, n, n), device=dev),
        "edge": (torch.rand(b, 1, n, n, device=dev) > 0.9).float(),
        "normals": torch.nn.functional.normalize(torch.randn(b, 3, n, n, device=dev), dim=1),
        "sal": (torch.rand(b, 1, n, n, device=dev) > 0.5).float(),
    }

    def step() -> None:
        single_tasking_step(net, tasks, weighting, batch, [list(tasks)], opt, adversary=adversary)

    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(s["steps"]):
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": statistics.median(times), "peak_mb": peak_mb}


def run() -> dict:
    """All six configurations, each in its own process; ratios against mode (a)."""
    rows = {}
    for adversarial in (False, True):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_astmt", mode, str(int(adversarial))],
                capture_output=True, text=True, check=True,
            )
            rows[f"{mode}{'+adv' if adversarial else ''}"] = json.loads(out.stdout.splitlines()[-1])
    for key, row in rows.items():
        ref = rows["a_sequential+adv" if key.endswith("+adv") else "a_sequential"]
        row["time_vs_a"] = round(row["step_s"] / ref["step_s"], 3)
        row["memory_vs_a"] = round(row["peak_mb"] / ref["peak_mb"], 3)
    s = settings()
    print(f"ASTMT step, T={len(TASKS)}, batch {s['batch']}, {s['size']}x{s['size']}, "
          f"{s['device']}")
    print(f"{'configuration':<24s} {'step (s)':>9s} {'vs (a)':>7s} {'peak MB':>9s} {'vs (a)':>7s}")
    for key, row in rows.items():
        print(f"{key:<24s} {row['step_s']:>9.4f} {row['time_vs_a']:>7.2f} "
              f"{row['peak_mb']:>9.0f} {row['memory_vs_a']:>7.2f}")
    return {"settings": {k: v for k, v in s.items() if k != "backbone"}, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], bool(int(sys.argv[2])))))
