"""``densemtl-eval-edges``: score saved edge predictions against a ground-truth directory.

    densemtl-eval-edges PRED_DIR GT_DIR --max-dist 0.0075 [--no-nms] [--thresholds 99]
                        [--ap trapezoid|bsds] [--workers N] [--json out.json]

Predictions: ``PRED_DIR/<id>.png``, 8-bit greyscale, probability v/255 (what ``save_prediction``
and the public code bases write). Ground truth, by suffix, as the datasets publish it:
``<id>.png`` with 0 / 255 (or 0 / 1) values (NYUD-v2 ``NYUDv2/edge``), ``<id>.npy`` in {0, 1}
(``NYUD_MT/edge``), or ``<id>.mat`` holding ``LabelMap`` (PASCAL-Context
``pascal-context/trainval``: the suite's Laplacian + thinning edges). Every prediction needs its
ground truth and the other way round, or, with ``--split FILE`` (one id per line, e.g.
``ImageSets/Context/val.txt``), every listed id needs both. The protocol is ``EdgeFMeasure``'s
(see ``densemtl.metrics.edge``), so any code base's predictions are scored as the suite scores
its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

GT_SUFFIXES = (".png", ".npy", ".mat")


def read_edge_prediction(path: Path) -> np.ndarray:
    """An 8-bit greyscale prediction PNG as probabilities v/255 (float64)."""
    from densemtl.data.formats import read_png

    return read_png(path, channels=1).astype(np.float64) / 255.0


def read_edge_ground_truth(path: Path) -> np.ndarray:
    """A published edge label as ``float64`` {0, 1} (see the module docstring for formats)."""
    from densemtl.data.formats import DataFormatError, read_mat, read_npy, read_png

    if path.suffix == ".mat":
        from densemtl.data.pascal_context import laplacian_edges

        return laplacian_edges(np.asarray(read_mat(path, "LabelMap"))).astype(np.float64)
    raw = read_png(path, channels=1) if path.suffix == ".png" else read_npy(path)
    raw = np.asarray(raw)
    raw = raw[..., 0] if raw.ndim == 3 and raw.shape[2] == 1 else raw
    values = set(np.unique(raw).tolist())
    if raw.ndim != 2 or not (values <= {0, 1} or values <= {0, 255}):
        raise DataFormatError(path, f"edge ground truth must be an H×W map of 0/1 or 0/255, got "
                                    f"shape {raw.shape} and values {sorted(values)[:6]}")
    return (raw > 0).astype(np.float64)


def _pairs(pred_dir: Path, gt_dir: Path, split: Path | None = None
           ) -> list[tuple[str, Path, Path]]:
    """(id, prediction, ground truth) for every id (of ``split`` if given); a clear error on
    ids with only one of the two."""
    for what, d in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not d.is_dir():
            raise ValueError(f"{what} directory {d} does not exist")
    preds = {p.stem: p for p in pred_dir.iterdir() if p.suffix == ".png"}
    gts = {p.stem: p for p in gt_dir.iterdir() if p.suffix in GT_SUFFIXES}
    if split is not None:
        from densemtl.data.formats import read_split

        wanted = set(read_split(split))
        preds = {i: p for i, p in preds.items() if i in wanted}
        gts = {i: p for i, p in gts.items() if i in wanted}
        wanted_missing = sorted(wanted - set(preds) - set(gts))
        if wanted_missing:
            raise ValueError(f"{len(wanted_missing)} id(s) of {split} have neither prediction "
                             f"nor ground truth: {', '.join(wanted_missing[:5])}")
    if not preds:
        raise ValueError(f"no <id>.png predictions in {pred_dir}")
    no_gt, no_pred = sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))
    for what, ids in (("without ground truth in " + str(gt_dir), no_gt),
                      ("without a prediction in " + str(pred_dir), no_pred)):
        if ids:
            raise ValueError(f"{len(ids)} id(s) {what}: {', '.join(ids[:5])}"
                             f"{' ...' if len(ids) > 5 else ''} (--split FILE scores the ids "
                             f"listed there)")
    return [(i, preds[i], gts[i]) for i in sorted(preds)]


def _image_counts(pair: tuple[str, Path, Path], thresholds: np.ndarray, max_dist: float,
                  nms: bool) -> np.ndarray:
    """``K×4`` counts of one (id, prediction, ground truth)."""
    from densemtl.metrics.edge import image_counts

    sample_id, pred_path, gt_path = pair
    prob = read_edge_prediction(pred_path)
    gt = read_edge_ground_truth(gt_path)
    if prob.shape != gt.shape:
        raise ValueError(f"{sample_id}: prediction {pred_path} is {prob.shape[0]}×{prob.shape[1]}"
                         f" but ground truth {gt_path} is {gt.shape[0]}×{gt.shape[1]}")
    return image_counts(prob, gt, thresholds, max_dist, nms)


def score_directory(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, max_dist: float,
                    nms: bool = True, thresholds: int = 99, ap: str = "trapezoid",
                    workers: int = 1, split: str | os.PathLike | None = None,
                    progress: bool = False) -> dict:
    """``edge_scores`` of every prediction in ``pred_dir`` (or of the ids in ``split``) against
    ``gt_dir`` (processes over images with ``workers`` > 1; a progress bar with ``progress``),
    plus the protocol and the number of images."""
    from tqdm import tqdm

    from densemtl.metrics.edge import best_image_counts, edge_scores, edge_thresholds

    levels = edge_thresholds(thresholds)
    pairs = _pairs(Path(pred_dir), Path(gt_dir), Path(split) if split else None)
    work = partial(_image_counts, thresholds=levels, max_dist=max_dist, nms=nms)
    bar = tqdm(total=len(pairs), desc="edge images", disable=not progress, leave=False)
    # the first image in this process compiles (or loads) the kernels, which forked workers
    # then inherit instead of each loading them again
    per_image = [work(pairs[0])]
    bar.update()
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(pairs) > 1 else None
    try:
        rest = pool.map(work, pairs[1:], chunksize=4) if pool else map(work, pairs[1:])
        for counts in rest:
            per_image.append(counts)
            bar.update()
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
    counts = np.sum(per_image, axis=0)
    ois = np.sum([best_image_counts(c) for c in per_image], axis=0)
    return {"scores": edge_scores(counts, ois, levels, ap=ap), "images": len(pairs),
            "protocol": {"max_dist": max_dist, "thresholds": thresholds, "nms": nms, "ap": ap,
                         "ods": "interpolated (findBestRPF)"}}


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``densemtl-eval-edges``."""
    parser = argparse.ArgumentParser(
        prog="densemtl-eval-edges", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pred_dir", help="directory of <id>.png predictions (0–255)")
    parser.add_argument("gt_dir", help="directory of <id>.png / .npy / .mat ground truth")
    parser.add_argument("--max-dist", type=float, required=True,
                        help="match tolerance, fraction of the image diagonal (PASCAL 0.0075, "
                             "NYUD 0.011)")
    parser.add_argument("--nms", action=argparse.BooleanOptionalAction, default=True,
                        help="non-maximum suppression before thresholding (default: on)")
    parser.add_argument("--thresholds", type=int, default=99, help="number of thresholds K")
    parser.add_argument("--ap", choices=["trapezoid", "bsds"], default="trapezoid",
                        help="AP protocol (see densemtl.metrics.edge)")
    parser.add_argument("--workers", type=int, default=1, help="processes over images")
    parser.add_argument("--split", default=None,
                        help="score only the ids listed in this file (e.g. the val split file)")
    parser.add_argument("--json", default=None, help="also write the result to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; prints ODS / OIS / AP and returns the exit status."""
    args = build_parser().parse_args(argv)
    if not (args.max_dist >= 0 and args.thresholds >= 1 and args.workers >= 1):
        print("--max-dist must be >= 0, --thresholds and --workers >= 1", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        result = score_directory(args.pred_dir, args.gt_dir, args.max_dist, args.nms,
                                 args.thresholds, args.ap, args.workers, args.split,
                                 progress=not args.no_progress)
    except ValueError as err:  # includes unreadable / malformed files (DataFormatError)
        print(f"densemtl-eval-edges: {err}", file=sys.stderr)
        return 1
    result["seconds"] = round(time.perf_counter() - start, 2)
    s = result["scores"]
    print(f"{result['images']} images, {result['protocol']} ({result['seconds']} s)\n"
          f"ODS F {s['odsF']:.2f}  P {s['odsP']:.2f}  R {s['odsR']:.2f}  at t = {s['odsT']:.4f}\n"
          f"OIS F {s['oisF']:.2f}  P {s['oisP']:.2f}  R {s['oisR']:.2f}\n"
          f"AP    {s['AP']:.2f}  ({args.ap})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
