"""Training-step cost of every weighting strategy relative to equal weighting, T = 3 and T = 8.

The model is the synthetic joint multi-task baseline (``model=mtl_baseline modulation=none
backbone=mobilenetv2_cpu``: MobileNet-V2 ×0.35, DeepLab-v3+ decoder width 64; the standard
MobileNet-V2 ×1.0 with width 256 at 256×256 on a GPU), with the LSB study's task sets
(``nyuv2_lsb3``, ``taskonomy_lsb8``) on random labels. A step = forward(s), task losses,
``strategy.backward``, AdamW step, and what the strategy's ``needs`` add — driven through
``weighting/feed.py`` exactly as the training loops drive it (extra samples: the minibatch
split in three, one forward each; FAMO: one no-grad forward after the step).

Made to give trustworthy ratios on a loaded, shared machine. Every configuration runs in a
process of its own (forked on CPU): it first runs its own warm-up steps and reads its peak
memory (max RSS on CPU, ``max_memory_allocated`` on GPU), then builds an equal-weighting
network and times the two steps in back-to-back pairs, the order swapped every pair; its ratio
is the median of the per-pair ratios (quartiles kept), so a slow moment of the machine hits
both sides of a pair. On CPU the process runs ONE thread and the clock is its CPU time: with
two threads on two busy cores every step waited for the slower thread (equal weighting against
itself measured 1.68x with 2 samples per side in the first run), and CPU time does not count
waiting for a core. The control, equal weighting against a second equal-weighting network
(``equal``), must come out within ``CONTROL_TOLERANCE`` of 1 for the run to count. Gradient
methods run in both spaces: ``[rep]`` = w.r.t. the shared representation (the decoder features
the heads read), ``[exact]`` = w.r.t. all shared parameters (one batched VJP). ``naive_loop`` is
what public libraries do: one ``autograd.grad`` per task over the shared parameters, the MGDA
combination of the flattened gradients, then a backward for the task-specific parameters.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.timing import clock, paired_ratios, quartiles

#: Gram-matrix methods, each in both spaces.
GRAM = ("mgda", "pcgrad", "cagrad", "imtl", "nash_mtl", "aligned_mtl", "upgrad", "dualproj",
        "fairgrad", "gradvac")
#: loss-based strategies (GradNorm: last shared layer only; FAMO: + one no-grad forward).
LOSS_BASED = ("equal", "fixed", "uncertainty", "dwa", "gls", "rlw", "lsb", "stch", "famo",
              "famo_next_batch", "imtl_l", "gradnorm")
#: methods that need the per-task gradient matrix over the shared parameters, or 3 samples.
PARAMETER_ONLY = ("moco", "db_mtl", "excess_mtl", "modo", "sdmgrad")
#: methods that need the per-element gradients at the representation.
REPRESENTATION_ONLY = ("graddrop",)
TASK_SETS = {3: "nyuv2_lsb3", 8: "taskonomy_lsb8"}
#: the representation-space variants must stay within this factor of equal weighting at T = 8
REPRESENTATION_LIMIT = 1.6
#: loss-based methods should stay within this factor of equal weighting
LOSS_LIMIT = 1.1
#: the control, equal weighting against a second equal-weighting network, must be this close to 1
CONTROL_TOLERANCE = 0.05
#: configuration name -> (strategy name, options) where they differ
ALIASES = {"imtl_l": ("imtl", {"mode": "l"}), "stch": ("stch", {"warmup_epochs": 0}),
           "nash_mtl": ("nash_mtl", {"max_norm": None}),
           "famo_next_batch": ("famo", {"update": "next_batch"})}


def configurations() -> list[str]:
    """Every strategy; Gram methods in both spaces; the naive per-task loop."""
    return [*LOSS_BASED, *(f"{g}[{s}]" for g in GRAM for s in ("rep", "exact")),
            *(f"{g}[rep]" for g in REPRESENTATION_ONLY),
            *(f"{g}[exact]" for g in PARAMETER_ONLY), "naive_loop"]


def settings() -> dict:
    """Problem size: the synthetic CPU model on CPU, MobileNet-V2 ×1.0 at 256×256 on a GPU."""
    timing = {"warmup": 2, "min_pairs": 16, "max_pairs": 60, "budget_s": 5.0}
    if torch.cuda.is_available():
        return {"device": "cuda", "batch": 8, "size": 256, **timing,
                "overrides": ["backbone=mobilenetv2", "model.decoder_width=256"]}
    return {"device": "cpu", "batch": 8, "size": 64, **timing,
            "overrides": ["backbone=mobilenetv2_cpu"]}


def random_labels(tasks: dict, batch: int, size: int, device: torch.device) -> dict:
    """Valid random labels per task (class ids, positive depth, unit normals, dense maps)."""
    labels = {}
    gen = torch.Generator().manual_seed(0)
    for name, task in tasks.items():
        shape = (batch, task.label_channels, size, size)
        if task.kind == "class":
            label = torch.randint(0, task.out_channels, (batch, size, size), generator=gen)
        elif name.endswith("normals"):
            label = torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=1)
        else:
            label = torch.rand(shape, generator=gen) * 4 + 1
        labels[name] = label.to(device)
    return labels


def naive_loop_backward(net, losses: dict) -> None:
    """T separate backward passes over the shared parameters, MGDA combination, then one
    backward for the task-specific parameters (the public libraries' path)."""
    from densemtl.weighting import solvers

    shared = net.shared_parameters()
    flat = []
    for loss in losses.values():
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                               for p, g in zip(shared, grads)]))
    jac = torch.stack(flat)
    coef = solvers.min_norm_coefficients((jac @ jac.T).double().cpu().numpy())
    update = torch.as_tensor(coef, dtype=jac.dtype, device=jac.device) @ jac
    task_params = [p for t in net.tasks for p in net.task_parameters(t)]
    total = sum(float(c) * loss for c, loss in zip(coef, losses.values()))
    for p, g in zip(task_params, torch.autograd.grad(total, task_params)):
        p.grad = g
    offset = 0
    for p in shared:
        p.grad = update[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def make_step(config: str, num_tasks: int) -> Callable[[], None]:
    """One training step of ``config`` on a freshly built network (inside the subprocess)."""
    from densemtl.config import compose
    from densemtl.experiment import build_net, build_tasks
    from densemtl.weighting import build_weighting
    from densemtl.weighting.feed import backward_inputs, loss_samples

    s = settings()
    dev = torch.device(s["device"])
    cfg = compose(["model=mtl_baseline", "modulation=none", f"tasks={TASK_SETS[num_tasks]}",
                   *s["overrides"]])
    tasks = build_tasks(cfg)
    torch.manual_seed(0)
    net = build_net(cfg, tasks).to(dev)
    name, _, space = config.partition("[")
    name, options = ALIASES.get(name, (name, {}))
    options = dict(options)
    if space and name in (*GRAM, "modo", "sdmgrad"):  # the others have one space only
        options["space"] = {"rep": "representation", "exact": "parameters"}[space.rstrip("]")]
    if name == "fixed":
        options["weights"] = [1.0] * num_tasks
    strategy = None if name == "naive_loop" else build_weighting(name, list(tasks), **options)
    params = list(net.parameters())
    if strategy is not None:
        strategy.to(dev)
        params += strategy.extra_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    batch = {"image": torch.randn(s["batch"], 3, s["size"], s["size"], device=dev),
             **random_labels(tasks, s["batch"], s["size"], dev)}
    names = list(tasks)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if strategy is None:
            preds = net(batch["image"])
            naive_loop_backward(net, {t: task.loss(preds[t], batch[t])
                                      for t, task in tasks.items()})
            optimizer.step()
            return
        needs = strategy.needs
        samples = loss_samples(net, tasks, batch, names, needs.samples)
        strategy.backward(samples[-1], extra_losses=samples[:-1],
                          **backward_inputs(strategy, net))
        optimizer.step()
        if needs.post_step_losses:
            with torch.no_grad():
                preds = net(batch["image"], names)
                strategy.after_step({t: tasks[t].loss(preds[t], batch[t]) for t in names})

    return step


def child(config: str, num_tasks: int) -> dict:
    """Peak memory of ``config`` alone, then the median of per-pair step-time ratios against
    an equal-weighting network built in the same process (``config="equal"``: the control)."""
    torch.set_flush_denormal(True)
    s = settings()
    step = make_step(config, num_tasks)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    now = clock()
    warm = []
    for _ in range(s["warmup"]):  # warm-up, and the memory peak of this configuration only
        start = now()
        step()
        warm.append(now() - start)
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reference = make_step("equal", num_tasks)
    ref_warm = []
    for _ in range(s["warmup"]):
        start = now()
        reference()
        ref_warm.append(now() - start)
    pair_s = warm[-1] + ref_warm[-1]
    pairs = max(s["min_pairs"], min(s["max_pairs"], int(s["budget_s"] / pair_s)))
    wall_start = time.perf_counter()
    ratios, times, ref_times = paired_ratios(step, reference, pairs)
    q1, median, q3 = quartiles(ratios)
    return {"time_vs_equal": median, "ratio_q1": q1, "ratio_q3": q3, "pairs": pairs,
            "step_s": statistics.median(times), "equal_step_s": statistics.median(ref_times),
            "peak_mb": peak_mb, "first_step_s": warm[0],
            "cpu_share": (sum(times) + sum(ref_times)) / (time.perf_counter() - wall_start),
            "load": os.getloadavg()[0]}


def measure(config: str, num_tasks: int) -> dict:
    """``child`` in a process of its own: forked on CPU (the imports are paid once, in the
    parent), a fresh interpreter on a GPU (CUDA does not survive a fork)."""
    if torch.cuda.is_available():
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_weighting", config, str(num_tasks)],
            capture_output=True, text=True, check=True)
        return json.loads(out.stdout.splitlines()[-1])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, send one JSON line, leave without running atexit hooks
        os.close(read)
        code = 0
        try:
            payload = json.dumps(child(config, num_tasks))
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
        with os.fdopen(write, "w") as f:
            f.write(payload)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        row = json.loads(f.read())
    os.waitpid(pid, 0)
    if "error" in row:
        raise RuntimeError(f"bench_weighting {config} (T={num_tasks}): {row['error']}")
    return row


def run() -> dict:
    """Every configuration for T = 3 and T = 8, each in its own process; prints the ratios.

    The run counts only if the control (equal weighting against another equal-weighting
    network) comes out within ``CONTROL_TOLERANCE`` of 1 at both T.
    """
    s = settings()
    if s["device"] == "cpu":
        torch.set_num_threads(1)  # before any op: the forked children inherit one thread
        import densemtl.experiment  # noqa: F401 - imports paid once here, not in every child
        from densemtl.weighting import WEIGHTING_REGISTRY
        WEIGHTING_REGISTRY.names()  # discovers (imports) every strategy module
    load_start = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, dict] = {}
    for num_tasks in TASK_SETS:
        rows = {}
        for config in configurations():
            rows[config] = measure(config, num_tasks)
            r = rows[config]
            print(f"T={num_tasks} {config}: {r['time_vs_equal']:.3f}x equal "
                  f"(quartiles {r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}, {r['pairs']} pairs, "
                  f"load {r['load']:.1f})", flush=True)
        equal_mb = rows["equal"]["peak_mb"]
        for row in rows.values():
            row["memory_vs_equal"] = row["peak_mb"] / equal_mb
        results[f"T={num_tasks}"] = rows
    control = {t: results[f"T={t}"]["equal"]["time_vs_equal"] for t in TASK_SETS}
    control_ok = all(abs(c - 1) <= CONTROL_TOLERANCE for c in control.values())
    print(f"Weighting step vs equal weighting, batch {s['batch']}, {s['size']}x{s['size']}, "
          f"{s['device']}, {'CPU time, 1 thread' if s['device'] == 'cpu' else 'wall time'} "
          f"(memory: {'max allocated' if s['device'] == 'cuda' else 'max RSS'})")
    print(f"{'configuration':<22s}" + "".join(
        f" {f'T={t} time':>10s} {f'T={t} MB':>9s} {'mem':>5s}" for t in TASK_SETS))
    for config in configurations():
        cells = "".join(
            f" {results[f'T={t}'][config]['time_vs_equal']:>9.2f}x "
            f"{results[f'T={t}'][config]['peak_mb']:>9.0f} "
            f"{results[f'T={t}'][config]['memory_vs_equal']:>4.2f}x" for t in TASK_SETS)
        print(f"{config:<22s}{cells}")
    print("control (equal vs equal): " + ", ".join(f"T={t} {c:.3f}x" for t, c in control.items())
          + f" ({'valid' if control_ok else 'INVALID'}: must be within {CONTROL_TOLERANCE})")
    rep = [f"{g}[rep]" for g in (*GRAM, *REPRESENTATION_ONLY)]
    worst = max(results["T=8"][c]["time_vs_equal"] for c in rep)
    ok = worst <= REPRESENTATION_LIMIT
    print(f"representation-space variants at T=8: worst {worst:.2f}x equal "
          f"({'within' if ok else 'OVER'} the {REPRESENTATION_LIMIT}x limit)")
    loss_worst = {t: max(results[f"T={t}"][c]["time_vs_equal"] for c in LOSS_BASED
                         if c != "gradnorm") for t in TASK_SETS}
    print("loss-based (without GradNorm) worst: "
          + ", ".join(f"T={t} {v:.2f}x" for t, v in loss_worst.items())
          + f" (target {LOSS_LIMIT}x)")
    for rows in results.values():
        for row in rows.values():
            for key, value in row.items():
                if isinstance(value, float):
                    row[key] = round(value, 4)
    return {"settings": {k: v for k, v in s.items() if k != "overrides"},
            "model": s["overrides"], "clock": "process CPU time, 1 thread" if s["device"] == "cpu"
            else "wall time, synchronised",
            "control": {f"T={t}": round(c, 4) for t, c in control.items()},
            "control_ok": control_ok, "load_start": [round(x, 2) for x in load_start],
            "load_end": [round(x, 2) for x in os.getloadavg()],
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "representation_worst_T8": round(worst, 3), "representation_within_limit": ok,
            "loss_based_worst": {f"T={t}": round(v, 3) for t, v in loss_worst.items()},
            "results": results}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
