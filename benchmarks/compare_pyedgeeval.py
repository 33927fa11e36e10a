"""Side-by-side check of our edge protocol against pyEdgeEval 0.2.8 (not run by ``make bench``).

    pip install pyedgeeval==0.2.8 opencv-python-headless   # builds from its sdist
    python -m benchmarks.compare_pyedgeeval

Four rendered scenes' ground-truth edges against blurred, shifted, noisy soft predictions; no NMS
(pyEdgeEval's is optional), thinning on, max_dist 0.0075, thresholds 0.01…0.99. pyEdgeEval is
run twice on the same input: its pixel matcher is seeded from the clock.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from densemtl.data.synthetic import render_scene
from densemtl.metrics.edge import edge_pr_counts


def cases(n: int = 4, size: int = 96) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ground truth, soft prediction) pairs from rendered scenes."""
    out = []
    for seed in range(n):
        gt = render_scene(seed, size)["edge"][..., 0] > 0.5
        rng = np.random.default_rng(seed)
        soft = ndimage.gaussian_filter(np.roll(gt.astype(float), 1, axis=seed % 2), 1.0)
        out.append((gt, np.clip(soft / soft.max() * 0.9 + 0.25 * rng.random(gt.shape), 0, 1)))
    return out


def ods(counts: np.ndarray) -> float:
    """Dataset-optimal F (%) from summed ``[cnt_r, sum_r, cnt_p, sum_p]`` per threshold."""
    r = counts[:, 0] / np.maximum(counts[:, 1], 1e-12)
    p = counts[:, 2] / np.maximum(counts[:, 3], 1e-12)
    return float(100 * (2 * p * r / np.maximum(p + r, 1e-12)).max())


def main() -> None:
    from pyEdgeEval.common.binary_label.evaluate_boundaries import evaluate_boundaries_threshold

    thresholds = np.arange(1, 100) / 100
    data = cases()
    ours = sum(
        edge_pr_counts(pred, gt, np.ones_like(gt), thresholds, 0.0075 * np.hypot(*gt.shape))
        for gt, pred in data
    )
    print(f"densemtl    ODS {ods(ours.astype(float)):.3f}")
    for run in (1, 2):
        theirs = sum(
            np.stack(evaluate_boundaries_threshold(thresholds, pred, gt, max_dist=0.0075), 1)
            for gt, pred in data
        )
        print(f"pyEdgeEval  ODS {ods(theirs):.3f}  (run {run})")


if __name__ == "__main__":
    main()
