"""Load-robust timing for the benchmarks: CPU time on one thread, ABBA-paired ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def clock() -> Callable[[], float]:
    """The step clock: this process's CPU time on CPU (one thread: the work done, unaffected
    by waiting for a core on a shared machine), synchronised wall-clock time on a GPU."""
    if torch.cuda.is_available():
        def wall() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return wall
    return time.process_time


def paired_ratios(step: Callable[[], None], reference: Callable[[], None], pairs: int
                  ) -> tuple[list[float], list[float], list[float]]:
    """``pairs`` back-to-back (step, reference) timings, the order swapped every pair (ABBA),
    so slow drifts of the machine and first-/second-in-pair effects cancel in each ratio.

    Returns the per-pair ratios step/reference and both sides' step times.
    """
    now = clock()
    ratios, times, ref_times = [], [], []
    for k in range(pairs):
        spent = {}
        for which in (("a", "b") if k % 2 == 0 else ("b", "a")):
            start = now()
            (step if which == "a" else reference)()
            spent[which] = now() - start
        times.append(spent["a"])
        ref_times.append(spent["b"])
        ratios.append(spent["a"] / spent["b"])
    return ratios, times, ref_times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th, 50th, 75th) percentiles."""
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]
