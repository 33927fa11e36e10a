"""ATRC cost: local attention (lean offset loop vs unfold vs brute-force loop) and one search /
one retraining step of HRNet-18 (4 NYUD tasks), with the scaling to 425×560, batch 8.

Memory is the activation memory autograd keeps for the backward pass (the unique storages of
the saved tensors, counted by ``torch.autograd.graph.saved_tensors_hooks``): deterministic and
the same on any device, and the part that grows with image size and batch. Parameters and
optimiser state come on top (HRNet-18 ATRC search: ~40 MB of float32 weights). Times are
medians of a few repetitions on this machine, as ratios in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

FULL = (425, 560, 8)  # NYUD-v2 crop, batch 8
SIZES = ((106, 140, 1), (212, 280, 1))  # reduced CPU sizes (1/16 and 1/4 of the pixels), batch 1


class SavedBytes:
    """Context manager: bytes of the unique storages autograd saves for backward."""

    def __enter__(self):
        self.storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            self.storages[s.data_ptr()] = s.nbytes()
            return t

        self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def timed(fn: Callable[[], None], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _attention_step(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    fn(q, k, v, 9, 1 / 33).sum().backward()


def _atrc_loss(net, tasks, batch, search: bool) -> torch.Tensor:
    """Weighted task + auxiliary losses (+ the search's entropy term)."""
    preds = net(batch["image"])
    size = batch["image"].shape[2:]
    total = torch.zeros(())
    for t, task in tasks.items():
        total = total + task.weight * task.loss(preds[t], batch[t])
    for t, logits in net.aux_logits.items():
        aux = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        total = total + tasks[t].weight * net.label_spaces[t].loss(aux, batch[t])
    if search:
        entropy = torch.stack([blk.entropy() for _, _, blk in net.search_blocks()]).mean()
        total = total + 0.01 * entropy
    return total


def _atrc_step(net, opt, tasks, batch, search: bool) -> None:
    opt.zero_grad()
    _atrc_loss(net, tasks, batch, search).backward()
    opt.step()


def local_attention_rows() -> dict:
    """Forward + backward of one local block's attention (d = 33, 9×9)."""
    from densemtl.models.atrc.context import local_attention, local_attention_unfold

    def brute(q, k, v, window, scale):
        # per-pixel loop (the test reference): one window gathered per pixel
        b, _, h, w = q.shape
        r = window // 2
        kp, vp = F.pad(k, (r, r, r, r)), F.pad(v, (r, r, r, r))
        rows = []
        for y in range(h):
            for x in range(w):
                kw = kp[:, :, y:y + window, x:x + window].flatten(2)
                vw = vp[:, :, y:y + window, x:x + window].flatten(2)
                a = (torch.einsum("bd,bdn->bn", q[:, :, y, x], kw) * scale).softmax(1)
                rows.append(torch.einsum("bn,bdn->bd", a, vw))
        return torch.stack(rows, 2).view(b, -1, h, w)

    impls = {"lean": local_attention, "unfold": local_attention_unfold, "brute_force": brute}
    out = {}
    for label, (b, h, w) in {"tiny_1x12x16": (1, 12, 16), "quarter_2x27x35": (2, 27, 35)}.items():
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, 33, h, w, generator=g, requires_grad=True) for _ in range(3))
        rows = {}
        for name, fn in impls.items():
            if name == "brute_force" and h * w > 300:
                continue

            step = partial(_attention_step, fn, q, k, v)
            with SavedBytes() as saved:
                fn(q, k, v, 9, 1 / 33)
            rows[name] = {"fwd_bwd_s": timed(step, 5), "saved_mib": saved.mib}
        for row in rows.values():
            row["time_vs_unfold"] = round(row["fwd_bwd_s"] / rows["unfold"]["fwd_bwd_s"], 3)
            row["memory_vs_unfold"] = round(row["saved_mib"] / rows["unfold"]["saved_mib"], 4)
        out[label] = rows
    # per block at 425×560 batch 8 (stride 4: 107×140): saved memory is linear in B·H·W
    b, h, w = 2, 27, 35
    scale = FULL[2] * 107 * 140 / (b * h * w)
    out["scaled_to_425x560_b8_mib"] = {
        name: round(row["saved_mib"] * scale, 1) for name, row in out["quarter_2x27x35"].items()
    }
    return out


def _linear(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    """The line through (x0, y0) and (x1, y1) at x."""
    return y1 + (y1 - y0) / (x1 - x0) * (x - x1)


def hrnet_steps() -> dict:
    """One search step and one retraining step (the searched genotype 'all_local' stands in for
    a retrained one: the most memory-hungry fixed head) at two reduced sizes."""
    from densemtl.models.atrc import ATRCNet
    from densemtl.tasks import build_task

    tasks = {"semseg": build_task("semseg", num_classes=40), "depth": build_task("depth"),
             "normals": build_task("normals"), "edge": build_task("edge", pos_weight=0.8)}
    out = {}
    for mode in ("search", "retrain_all_local"):
        torch.manual_seed(0)
        genotype = None if mode == "search" else {t: dict.fromkeys(tasks, "local") for t in tasks}
        net = ATRCNet({t: task.out_channels for t, task in tasks.items()},
                      encoder="hrnet_w18_small_v2", genotype=genotype).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        rows = {}
        for h, w, b in SIZES:
            g = torch.Generator().manual_seed(0)
            batch = {
                "image": torch.randn(b, 3, h, w, generator=g),
                "semseg": torch.randint(0, 40, (b, h, w), generator=g),
                "depth": torch.rand(b, 1, h, w, generator=g) * 9 + 0.8,
                "normals": F.normalize(torch.randn(b, 3, h, w, generator=g), dim=1),
                "edge": (torch.rand(b, 1, h, w, generator=g) > 0.9).float(),
            }

            with SavedBytes() as saved:
                _atrc_loss(net, tasks, batch, mode == "search")
            step = partial(_atrc_step, net, opt, tasks, batch, mode == "search")
            rows[f"{h}x{w}_b{b}"] = {"step_s": timed(step, 2), "saved_mib": saved.mib}
        # saved memory and time as c0 + c1·(pixels × batch), fitted through the two sizes
        (h0, w0, b0), (h1, w1, b1) = SIZES
        n0, n1, n_full = h0 * w0 * b0, h1 * w1 * b1, FULL[0] * FULL[1] * FULL[2]
        r0, r1 = rows[f"{h0}x{w0}_b{b0}"], rows[f"{h1}x{w1}_b{b1}"]

        rows["scaled_to_425x560_b8"] = {
            "saved_gib": round(_linear(n0, r0["saved_mib"], n1, r1["saved_mib"], n_full) / 1024, 2),
            "step_s_cpu": round(_linear(n0, r0["step_s"], n1, r1["step_s"], n_full), 1),
        }
        out[mode] = rows
    return out


def run() -> dict:
    """Local attention implementations and HRNet-18 ATRC steps, printed and returned."""
    torch.manual_seed(0)
    local = local_attention_rows()
    print("local attention, d=33, 9x9, forward+backward (ratios vs unfold)")
    for label, rows in local.items():
        if label.startswith("scaled"):
            print(f"  per block at 425x560 b8, saved MiB: {rows}")
            continue
        for name, row in rows.items():
            print(f"  {label:<16s} {name:<12s} {row['fwd_bwd_s']:8.4f} s "
                  f"({row['time_vs_unfold']:.2f}x)  saved {row['saved_mib']:8.2f} MiB "
                  f"({row['memory_vs_unfold']:.3f}x)")
    steps = hrnet_steps()
    print("HRNet-18 ATRC, 4 NYUD tasks, one SGD step")
    for mode, rows in steps.items():
        for size, row in rows.items():
            print(f"  {mode:<18s} {size:<22s} {row}")
    return {"local_attention": local, "hrnet18_steps": steps}
