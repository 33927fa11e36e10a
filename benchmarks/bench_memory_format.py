"""The default experiment's training step in NHWC (``channels_last=true``, the default) against
NCHW (``channels_last=false``), in one run.

The step is what ``make train`` runs for one minibatch: the ASTMT network (narrow SE-ResNet-26,
SE decoder, six synthetic tasks at 64×64, batch 8; the standard R-26 at 256×256 on a GPU), one
forward/backward per task and an SGD step after each (the per-task schedule), on random inputs and
labels (images in NCHW, as the loader gives them: an NHWC network's first convolution returns
NHWC activations). Both networks start from the same weights; the steps alternate in ABBA pairs,
timed by this process's CPU time on one thread (wall time on a GPU), and the reported ratio is
the median of the per-pair ratios, so the machine's load cancels out.
"""

from __future__ import annotations

import os
import statistics

import torch

from benchmarks.timing import paired_ratios, quartiles

TASKS = {"semseg": {"num_classes": 8}, "human_parts": {}, "edge": {}, "normals": {}, "sal": {},
         "depth": {}}


def settings() -> dict:
    """Problem size: the default CPU experiment on CPU, the standard R-26 at 256×256 on a GPU."""
    if torch.cuda.is_available():
        return {"device": "cuda", "batch": 8, "size": 256, "pairs": 20, "width": 256,
                "backbone": {"name": "seresnet26"}}
    return {"device": "cpu", "batch": 8, "size": 64, "pairs": 12, "width": 64,
            "backbone": {"name": "seresnet26", "channels": (16, 32, 64, 128), "stem_width": 16}}


def make_step(channels_last: bool, s: dict):
    """One per-task-schedule minibatch of the default ASTMT network in the given memory format."""
    from densemtl.models import DenseMTLNet
    from densemtl.tasks import build_task

    device = torch.device(s["device"])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    tasks = {t: build_task(t, **o) for t, o in TASKS.items()}
    torch.manual_seed(0)
    net = DenseMTLNet({t: task.out_channels for t, task in tasks.items()}, backbone=s["backbone"],
                      decoder_width=s["width"], se="decoder")
    net = net.to(device, memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    b, hw = s["batch"], (s["size"], s["size"])
    image = torch.randn(b, 3, *hw, generator=gen).to(device)  # NCHW, as the data loader gives
    labels = {
        "semseg": torch.randint(0, 8, (b, *hw), generator=gen),
        "human_parts": torch.randint(0, 7, (b, *hw), generator=gen),
        "edge": (torch.rand(b, 1, *hw, generator=gen) > 0.9).float(),
        "normals": torch.nn.functional.normalize(torch.randn(b, 3, *hw, generator=gen), dim=1),
        "sal": (torch.rand(b, 1, *hw, generator=gen) > 0.5).float(),
        "depth": torch.rand(b, 1, *hw, generator=gen) * 5 + 0.5,
    }
    labels = {t: v.to(device) for t, v in labels.items()}

    def step() -> None:
        for t, task in tasks.items():
            opt.zero_grad(set_to_none=True)
            task.loss(net(image, [t])[t], labels[t]).backward()
            opt.step()

    return step


def run() -> dict:
    """Median NHWC/NCHW step-time ratio (quartiles) and both step times."""
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    s = settings()
    nhwc, nchw = make_step(True, s), make_step(False, s)
    for fn in (nhwc, nchw, nhwc, nchw):  # warm-up
        fn()
    ratios, times, ref_times = paired_ratios(nhwc, nchw, s["pairs"])
    q1, median, q3 = quartiles(ratios)
    result = {"setting": {k: v for k, v in s.items() if k != "backbone"},
              "channels_last_vs_contiguous": median, "ratio_q1": q1, "ratio_q3": q3,
              "channels_last_step_s": statistics.median(times),
              "contiguous_step_s": statistics.median(ref_times), "load": os.getloadavg()[0],
              "clock": "process CPU time" if s["device"] == "cpu" else "wall"}
    print(f"default ASTMT step (6 task passes): channels_last {result['channels_last_step_s']:.3f}"
          f" s, contiguous {result['contiguous_step_s']:.3f} s, ratio {median:.3f} "
          f"[{q1:.3f}, {q3:.3f}]")
    return result
