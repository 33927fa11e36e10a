"""The default experiment's training step against the two choices it makes, in one run:
NHWC weights (``channels_last=true``) against NCHW, and the accumulated schedule with the
encoder computed once (``model=astmt_accumulated``) against the paper's per-task schedule
(``model=astmt``).

The step is what ``make train`` runs for one minibatch: the ASTMT network (narrow SE-ResNet-26,
SE decoder, six synthetic tasks at 64×64, batch 8; the standard R-26 at 256×256 on a GPU), the six
task losses summed and one SGD step, on random inputs and labels (images in NCHW, as the loader
gives them: an NHWC network's first convolution returns NHWC activations). The per-task step runs
one forward/backward per task and an SGD step after each. All networks start from the same
weights; each comparison alternates the two steps in ABBA pairs, timed by this process's CPU time
on one thread (wall time on a GPU), and the reported ratio is the median of the per-pair ratios,
so the machine's load cancels out.
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


def make_step(channels_last: bool, schedule: str, s: dict):
    """One minibatch of the default ASTMT network in the given memory format and schedule
    (``accumulated``: encoder once, summed losses, one step; ``per_task``: a step per task)."""
    from densemtl.models import DenseMTLNet
    from densemtl.tasks import build_task

    device = torch.device(s["device"])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    tasks = {t: build_task(t, **o) for t, o in TASKS.items()}
    torch.manual_seed(0)
    net = DenseMTLNet({t: task.out_channels for t, task in tasks.items()}, backbone=s["backbone"],
                      decoder_width=s["width"], se="decoder", execution="auto")
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

    def accumulated() -> None:
        opt.zero_grad(set_to_none=True)
        preds = net(image)
        sum(task.loss(preds[t], labels[t]) for t, task in tasks.items()).backward()
        opt.step()

    def per_task() -> None:
        for t, task in tasks.items():
            opt.zero_grad(set_to_none=True)
            task.loss(net(image, [t])[t], labels[t]).backward()
            opt.step()

    return accumulated if schedule == "accumulated" else per_task


def compare(step, reference, pairs: int) -> tuple[float, float, float, float, float]:
    """Median ratio step/reference, its quartiles, and both median step times."""
    for fn in (step, reference, step, reference):  # warm-up
        fn()
    ratios, times, ref_times = paired_ratios(step, reference, pairs)
    q1, median, q3 = quartiles(ratios)
    return median, q1, q3, statistics.median(times), statistics.median(ref_times)


def run() -> dict:
    """The default step against NCHW and against the per-task schedule (ratios, quartiles)."""
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    s = settings()
    default = make_step(True, "accumulated", s)
    result = {"setting": {k: v for k, v in s.items() if k != "backbone"},
              "load": os.getloadavg()[0],
              "clock": "process CPU time" if s["device"] == "cpu" else "wall"}
    for name, reference in (("vs_contiguous", make_step(False, "accumulated", s)),
                            ("vs_per_task", make_step(True, "per_task", s))):
        median, q1, q3, step_s, ref_s = compare(default, reference, s["pairs"])
        result[name] = {"ratio": median, "ratio_q1": q1, "ratio_q3": q3, "default_step_s": step_s,
                        "reference_step_s": ref_s}
        print(f"default ASTMT step {name}: {step_s:.3f} s against {ref_s:.3f} s, ratio "
              f"{median:.3f} [{q1:.3f}, {q3:.3f}]")
    return result
