"""Edge evaluation speed: ``EdgeFMeasure``'s per-image work before and after the incremental pass.

The reference is the implementation the suite had before (kept here, not in ``src/``): NMS with
vectorised numpy bilinear sampling, then for each of the 99 thresholds a fresh binarisation,
scikit-image ``thin`` and the one-shot exact matcher ``edge_match`` (a max flow from scratch).
The fast path is ``edge_nms`` + ``edge_pr_counts`` (one pass over the thresholds). Both run on
the same images in the same process, alternating, and must give identical counts.

Images: 375×500 (PASCAL's usual size), ground truth = the edges of a rendered synthetic scene,
prediction = that map shifted by 2 px, blurred, scaled to 0.8, plus smooth noise of up to 0.3
(a realistic soft edge map: thick responses, weak clutter). PASCAL protocol: 99 thresholds, NMS
on, max_dist 0.0075. The PASCAL-Context validation time (5 105 images) is projected from the
measured per-image time, for one process and for ``densemtl-eval-edges`` with one process per
core over saved PNGs (timed too; on a shared, loaded machine workers gain less than the core
count). The machine's 1-minute load average is recorded beside the numbers.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from densemtl.cli.eval_edges import score_directory
from densemtl.data.formats import write_image
from densemtl.data.synthetic import render_scene
from densemtl.metrics import edge as E

SHAPE = (375, 500)
MAX_DIST = 0.0075
PASCAL_VAL = 5105


def realistic_case(seed: int, shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(GT edges ``bool``, soft prediction in [0, 1]) of one synthetic scene."""
    gt = render_scene(seed, shape)["edge"][..., 0] > 0.5
    rng = np.random.default_rng(seed)
    soft = ndimage.gaussian_filter(np.roll(gt.astype(float), 2, axis=seed % 2), 1.5)
    noise = rng.random(shape) * ndimage.gaussian_filter(rng.random(shape), 2) * 2
    return gt, np.clip(soft / soft.max() * 0.8 + 0.3 * noise, 0, 1)


def reference_nms(prob: np.ndarray, radius: int = 1, border: int = 5,
                  margin: float = 1.01) -> np.ndarray:
    """``edge_nms`` with the suppression step as numpy evaluated it before (the reference)."""
    edge, cos_o, sin_o = E._nms_orientation(np.asarray(prob, dtype=np.float64))
    h, w = edge.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    suppressed = np.zeros(edge.shape, dtype=bool)
    for d in range(-radius, radius + 1):
        if not d:
            continue
        x = np.clip(xs + d * cos_o, 0.0, w - 1.001)
        y = np.clip(ys + d * sin_o, 0.0, h - 1.001)
        x0, y0 = x.astype(np.intp), y.astype(np.intp)
        dx, dy = x - x0, y - y0
        sample = (edge[y0, x0] * (1 - dx) * (1 - dy) + edge[y0, x0 + 1] * dx * (1 - dy)
                  + edge[y0 + 1, x0] * (1 - dx) * dy + edge[y0 + 1, x0 + 1] * dx * dy)
        suppressed |= edge * margin < sample
    return E._damp_border(np.where(suppressed, 0.0, edge), border)


def reference_pr_counts(prob: np.ndarray, gt: np.ndarray, valid: np.ndarray,
                        thresholds: np.ndarray, radius: float) -> np.ndarray:
    """``edge_pr_counts`` as before: every threshold binarised, thinned and matched afresh."""
    from skimage.morphology import thin

    gt = np.asarray(gt, dtype=bool) & valid
    counts = np.zeros((len(thresholds), 4), dtype=np.int64)
    for k, t in enumerate(thresholds):
        thinned = thin((prob >= t) & valid)
        matched_pred, matched_gt = E.edge_match(thinned, gt, radius)
        counts[k] = (matched_gt.sum(), gt.sum(), matched_pred.sum(), thinned.sum())
    return counts


def time_workers(images: int, workers: int) -> dict:
    """Seconds per image of ``densemtl-eval-edges`` (PNG in, NMS on) with 1 and ``workers``
    processes over the same ``images`` saved predictions."""
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir, gt_dir = Path(tmp) / "pred", Path(tmp) / "gt"
        for seed in range(images):
            gt, soft = realistic_case(seed)
            write_image(pred_dir / f"{seed}.png", np.rint(255 * soft).astype(np.uint8))
            write_image(gt_dir / f"{seed}.png", gt.astype(np.uint8) * 255)
        out = {}
        for n in (1, workers):
            start = time.perf_counter()
            score_directory(pred_dir, gt_dir, MAX_DIST, nms=True, workers=n)
            out[f"{n}_process_s_per_image"] = round((time.perf_counter() - start) / images, 4)
    return out


def run(images: int = 4) -> dict:
    """Time reference and fast path per image (alternating), assert equal counts, project."""
    thresholds = E.edge_thresholds(99)
    radius = MAX_DIST * float(np.hypot(*SHAPE))
    E.edge_pr_counts(*realistic_case(0, (40, 50))[::-1], np.ones((40, 50), bool), thresholds,
                     1.0)  # compile (or load the numba cache) outside the timings
    E.edge_nms(np.zeros((8, 8)))
    rows = []
    for seed in range(images):
        gt, soft = realistic_case(seed)
        valid = np.ones(SHAPE, dtype=bool)
        start = time.perf_counter()
        ref = reference_pr_counts(reference_nms(soft), gt, valid, thresholds, radius)
        ref_s = time.perf_counter() - start
        start = time.perf_counter()
        fast = E.edge_pr_counts(E.edge_nms(soft), gt, valid, thresholds, radius)
        fast_s = time.perf_counter() - start
        if not np.array_equal(ref, fast):
            raise AssertionError(f"image {seed}: counts differ from the reference")
        rows.append({"seed": seed, "reference_s": round(ref_s, 3), "fast_s": round(fast_s, 4),
                     "ratio": round(ref_s / fast_s, 1), "gt_pixels": int(gt.sum())})
    ref_s = statistics.median(r["reference_s"] for r in rows)
    fast_s = statistics.median(r["fast_s"] for r in rows)
    workers = os.cpu_count() or 1
    cli = time_workers(4 * images, workers)
    cli_worker_s = cli[f"{workers}_process_s_per_image"]
    out = {
        "settings": {"shape": list(SHAPE), "thresholds": 99, "nms": True, "max_dist": MAX_DIST,
                     "images": images},
        "rows": rows,
        "reference_s_per_image": ref_s,
        "fast_s_per_image": fast_s,
        "ratio": round(ref_s / fast_s, 1),
        "counts_identical": True,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "eval_edges_cli": cli,
        "pascal_val_projected_min": {
            "reference_1_process": round(PASCAL_VAL * ref_s / 60, 1),
            "fast_1_process": round(PASCAL_VAL * fast_s / 60, 1),
            f"eval_edges_{workers}_processes": round(PASCAL_VAL * cli_worker_s / 60, 1),
        },
    }
    print(f"edge: reference {ref_s:.3f} s/image, fast {fast_s:.4f} s/image, "
          f"ratio {out['ratio']}x (median of {images}; load average {out['load_average_1min']} "
          f"on {workers} cores); counts identical")
    print(f"edge: densemtl-eval-edges s/image by processes: {cli}")
    print(f"edge: PASCAL-Context val ({PASCAL_VAL} images) projected, minutes: "
          f"{out['pascal_val_projected_min']}")
    return out
