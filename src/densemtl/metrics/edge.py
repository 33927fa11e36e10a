"""Edge detection F-measure in the BSDS protocol: ODS, OIS and AP as a torchmetrics ``Metric``.

The published numbers (ASTMT, ATRC) come from MATLAB: Dollár's structured-edge toolbox
(``edgesNms`` → ``edgesEvalImg`` → ``edgesEvalDir``) on top of the BSDS ``correspondPixels``
matcher. This module is a deterministic Python version of that pipeline:

1. optional non-maximum suppression of the soft map (``edge_nms``: triangle smoothing, orientation
   from second derivatives, suppression across the edge, damping of a 5-pixel border);
2. for each threshold ``t_k = k / (K + 1)``, ``k = 1..K`` (the toolbox's
   ``linspace(1/(K+1), 1-1/(K+1), K)``), binarise ``prob >= t_k`` and thin the binary map to one
   pixel (``edge_thin`` = scikit-image ``thin`` = MATLAB ``bwmorph(·, 'thin', inf)``);
3. match predicted to ground-truth edge pixels one-to-one within ``max_dist × image diagonal``
   pixels as a maximum bipartite matching and count, per image and threshold, matched GT
   (``cnt_r``), all GT (``sum_r``), matched predictions (``cnt_p``), all predictions (``sum_p``).

The BSDS matcher (CSA min-cost assignment over a sparse candidate graph with outlier nodes) is
approximate, and its Python port pyEdgeEval seeds it from the clock so ODS moves from run to run;
a maximum-cardinality matching gives the counts that assignment aims for (one more match saves
two outlier costs, far more than any match's distance cost) and the same answer on every run.

Speed (``edge_pr_counts``, compiled with numba): the binary maps of decreasing thresholds are
nested, so the thresholds are walked from the top down. A threshold re-thins only the 8-connected
components of the binary map that gained a pixel (thinning works on each component alone), and
the maximum matching of the previous threshold, less the predictions the new thinning dropped,
is grown with Hopcroft–Karp augmenting-path phases until none is left — by Berge's theorem a
maximum matching again, so the counts equal those of a fresh exact matching per threshold
(``edge_match``, the one-shot reference kept for checks: ``benchmarks/bench_edge.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from scipy.ndimage import correlate1d
from scipy.sparse import csr_array
from scipy.sparse.csgraph import maximum_flow
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "AP_PROTOCOLS",
    "EdgeFMeasure",
    "best_image_counts",
    "check_edge_pair",
    "edge_match",
    "edge_nms",
    "edge_pr_counts",
    "edge_scores",
    "edge_thin",
    "edge_thresholds",
    "image_counts",
]

# MATLAB's ``eps``: the toolbox divides by max(eps, ·) so empty counts give 0, never NaN.
_EPS = float(np.finfo(np.float64).eps)
# Pixel pairs exactly on the matching circle (d = r) must count as inside even when r is not
# exactly representable (e.g. r = 0.02 × 50); the BSDS matcher's test is ``d² <= r²``.
_RADIUS_TOLERANCE = 1e-9
_INF = 2**30


def edge_thresholds(num: int) -> np.ndarray:
    """The ``num`` BSDS thresholds ``k / (num + 1)``, ``k = 1..num`` (float64, ascending)."""
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ValueError(f"thresholds must be a positive int, got {num!r}")
    return np.arange(1, num + 1, dtype=np.float64) / (num + 1)


# ---------------------------------------------------------------------------------------------
# non-maximum suppression
# ---------------------------------------------------------------------------------------------
def _triangle_smooth(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable triangle filter of integer ``radius`` with symmetric padding (toolbox convTri)."""
    ramp = np.arange(1, radius + 2, dtype=np.float64)  # 1, 2, …, radius + 1
    kernel = np.concatenate([ramp, ramp[-2::-1]]) / (radius + 1) ** 2
    # scipy's "reflect" (d c b a | a b c d) is MATLAB padarray's "symmetric".
    out = correlate1d(image, kernel, axis=0, mode="reflect")
    return correlate1d(out, kernel, axis=1, mode="reflect")


@njit(cache=True)
def _suppress(edge: np.ndarray, cos_o: np.ndarray, sin_o: np.ndarray, radius: int,
              margin: float) -> np.ndarray:
    """Zero each pixel whose value × ``margin`` is below the bilinear sample of ``edge`` at
    distance ±1..±``radius`` along its orientation (coordinates clamped inside, as edgesNmsMex).

    The arithmetic is written in the order the vectorised numpy form evaluated it, so the result
    is bit-identical to it.
    """
    h, w = edge.shape
    out = edge.copy()
    for y in range(h):
        for x in range(w):
            boosted = edge[y, x] * margin
            for d in range(-radius, radius + 1):
                if d == 0:
                    continue
                sx = min(max(x + d * cos_o[y, x], 0.0), w - 1.001)
                sy = min(max(y + d * sin_o[y, x], 0.0), h - 1.001)
                x0 = int(sx)
                y0 = int(sy)
                dx = sx - x0
                dy = sy - y0
                sample = (
                    edge[y0, x0] * (1 - dx) * (1 - dy)
                    + edge[y0, x0 + 1] * dx * (1 - dy)
                    + edge[y0 + 1, x0] * (1 - dx) * dy
                    + edge[y0 + 1, x0 + 1] * dx * dy
                )
                if boosted < sample:
                    out[y, x] = 0.0
                    break
    return out


def edge_nms(
    prob: np.ndarray, radius: int = 1, border: int = 5, margin: float = 1.01
) -> np.ndarray:
    """Non-maximum suppression of a soft ``H×W`` edge map, as the edge evaluation scripts do it.

    Steps (Dollár's ``edgesNmsMex(E, O, radius=1, border=5, margin=1.01)`` as called by the HED
    evaluation script and its successors; some forks use a larger ``radius``): smooth
    with a radius-1 triangle filter; take the edge-normal orientation
    ``O = atan(Oyy·sign(-Oxy) / (Oxx + 1e-5)) mod π`` from second derivatives of a radius-4
    smoothed copy; zero every pixel whose value × ``margin`` is below the bilinearly sampled value
    at distance ``d = ±1..±radius`` along ``O``; multiply pixels within ``border`` of the image
    edge by ``distance / border`` (noisy there). As in the toolbox, ``sign(0) = 0`` makes the
    normal horizontal (O = 0) wherever ``Oxy`` is exactly 0 — e.g. on a perfectly horizontal
    ridge, which NMS then leaves wide; the thinning step of the evaluation removes that width.
    """
    image = np.asarray(prob, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"edge_nms expects an H×W map with H, W >= 2, got shape {image.shape}")
    if radius < 1 or border < 0 or margin <= 0:
        raise ValueError(
            f"edge_nms needs radius >= 1, border >= 0, margin > 0; got {radius}, {border}, {margin}"
        )
    edge, cos_o, sin_o = _nms_orientation(image)
    return _damp_border(_suppress(edge, cos_o, sin_o, int(radius), float(margin)), border)


def _nms_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The radius-1 smoothed map and cos / sin of its edge-normal orientation (``edge_nms``)."""
    edge = _triangle_smooth(image, 1)
    smooth = _triangle_smooth(edge, 4)
    oy, ox = np.gradient(smooth)
    oxx = np.gradient(ox, axis=1)
    oyy, oxy = np.gradient(oy)
    with np.errstate(divide="ignore", invalid="ignore"):  # oxx = -1e-5 exactly: ±inf or 0/0
        orientation = np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5)), np.pi)
    orientation = np.nan_to_num(orientation, nan=0.0)
    return edge, np.cos(orientation), np.sin(orientation)


def _damp_border(out: np.ndarray, border: int) -> np.ndarray:
    """Multiply pixels within ``border`` of the image edge by ``distance / border``."""
    h, w = out.shape
    s = min(border, w // 2, h // 2)
    col_weight = np.ones(w)
    row_weight = np.ones(h)
    for i in range(s):
        col_weight[i] *= i / s
        col_weight[w - 1 - i] *= i / s
        row_weight[i] *= i / s
        row_weight[h - 1 - i] *= i / s
    return out * row_weight[:, None] * col_weight[None, :]


# ---------------------------------------------------------------------------------------------
# the one-shot exact matcher (reference)
# ---------------------------------------------------------------------------------------------
def _pairs_in_reach(
    py: np.ndarray, px: np.ndarray, gy: np.ndarray, gx: np.ndarray, shape: tuple, reach: float
) -> tuple[np.ndarray, np.ndarray]:
    """All (prediction index, GT index) pairs at pixel distance ``<= reach``.

    Looks the GT pixels up through an index image at every integer offset inside the disc: exact,
    vectorised, and free of the recursion of k-d tree pair queries (scipy's ``cKDTree`` pair
    search overflowed the C stack on a trained network's edge maps).
    """
    gt_index = np.full(shape, -1, dtype=np.int64)
    gt_index[gy, gx] = np.arange(gy.size)
    pred_parts, gt_parts = [], []
    for dy, dx in _disc_offsets(reach):
        yy, xx = py + dy, px + dx
        inside = np.nonzero((yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1]))[0]
        j = gt_index[yy[inside], xx[inside]]
        hit = j >= 0
        pred_parts.append(inside[hit])
        gt_parts.append(j[hit])
    return np.concatenate(pred_parts), np.concatenate(gt_parts)


def _disc_offsets(reach: float) -> list[tuple[int, int]]:
    """Integer pixel offsets ``(dy, dx)`` with ``dy² + dx² <= reach²``, row by row."""
    r = int(np.floor(reach))
    return [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if dy * dy + dx * dx <= reach * reach
    ]


def edge_match(pred: np.ndarray, gt: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of predicted and GT edge pixels within ``radius`` pixels.

    Returns boolean ``H×W`` maps (matched predictions, matched GT). The matching is a maximum
    bipartite matching on the graph of pairs at Euclidean distance ``<= radius``: every pixel is
    used at most once and the number of matches is as large as possible, so the counts do not
    depend on pixel order and are the same on every run. It is solved from scratch as a
    unit-capacity maximum flow (Dinic) rather than with
    ``scipy.sparse.csgraph.maximum_bipartite_matching``, whose Hopcroft–Karp search takes
    exponential time on the layered graphs that parallel pixel chains form (scipy issue #26147).
    ``edge_pr_counts`` gets the same matching sizes incrementally; this one-shot form is the
    reference it is checked against.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"edge_match needs two H×W maps, got {pred.shape} and {gt.shape}")
    if not radius >= 0:
        raise ValueError(f"edge_match radius must be >= 0, got {radius}")
    matched_pred = np.zeros(pred.shape, dtype=bool)
    matched_gt = np.zeros(gt.shape, dtype=bool)
    py, px = np.nonzero(pred)
    gy, gx = np.nonzero(gt)
    n_pred, n_gt = py.size, gy.size
    if n_pred == 0 or n_gt == 0:
        return matched_pred, matched_gt

    pred_i, gt_i = _pairs_in_reach(py, px, gy, gx, gt.shape, radius + _RADIUS_TOLERANCE)

    # Flow network: source → each prediction → GT pixels in reach → sink, all capacities 1.
    source, sink = n_pred + n_gt, n_pred + n_gt + 1
    rows = np.concatenate([np.full(n_pred, source), pred_i, n_pred + np.arange(n_gt)])
    cols = np.concatenate([np.arange(n_pred), n_pred + gt_i, np.full(n_gt, sink)])
    network = csr_array(
        (np.ones(rows.size, dtype=np.int32), (rows, cols)), shape=(sink + 1, sink + 1)
    )
    flow = maximum_flow(network, source, sink, method="dinic").flow
    pairs = flow[:n_pred, n_pred : n_pred + n_gt].tocoo()
    used = pairs.data > 0
    matched_pred[py[pairs.row[used]], px[pairs.row[used]]] = True
    matched_gt[gy[pairs.col[used]], gx[pairs.col[used]]] = True
    return matched_pred, matched_gt


# ---------------------------------------------------------------------------------------------
# thinning
# ---------------------------------------------------------------------------------------------
def _thin_tables() -> np.ndarray:
    """Deletion tables ``2×256`` of the two Guo–Hall sub-iterations, by 8-neighbour code.

    Bit ``i`` of the code is the neighbour at 45°·i counter-clockwise from east (E, NE, N, NW,
    W, SW, S, SE). A pixel is deleted when it has exactly one 4-connected run of background
    neighbours bridging 8-neighbours (G1), 2 or 3 neighbours in the smaller of the two pairings
    (G2), and — first sub-iteration — is not on a north-east corner (G3), second — not on a
    south-west one (G3'). The tests check the thinning against scikit-image's ``thin``.
    """
    codes = np.arange(256)
    bit = [((codes >> i) & 1).astype(bool) for i in range(8)]
    crossings = sum(~bit[i] & (bit[i + 1] | bit[(i + 2) % 8]) for i in (0, 2, 4, 6))
    n1 = sum(bit[k] | bit[k - 1] for k in (1, 3, 5, 7))
    n2 = sum(bit[k] | bit[(k + 1) % 8] for k in (1, 3, 5, 7))
    g12 = (crossings == 1) & np.isin(np.minimum(n1, n2), (2, 3))
    g3 = ~((bit[1] | bit[2] | ~bit[7]) & bit[0])
    g3p = ~((bit[5] | bit[6] | ~bit[3]) & bit[4])
    return np.stack([g12 & g3, g12 & g3p]).astype(np.uint8)


_THIN_TABLES = _thin_tables()


@njit(cache=True)
def _thin_in_place(img, seeds, nb, tables, flags, lists, deleted):
    """Guo–Hall thinning of the components of flat padded uint8 ``img`` that hold ``seeds``.

    Each sub-iteration decides all pixels from the map before it (the parallel algorithm), but
    only re-examines pixels next to a deletion since that sub-iteration last looked at them —
    any other pixel would get the same "keep" answer again. ``flags`` (all 0 on entry and exit),
    ``lists`` (2 × ≥ len(seeds)) and ``deleted`` are scratch buffers.
    """
    n = seeds.size
    sizes = np.zeros(2, np.int64)
    for i in range(n):
        lists[0, i] = seeds[i]
        lists[1, i] = seeds[i]
        flags[seeds[i]] = 3
    sizes[0] = n
    sizes[1] = n
    while True:
        any_deleted = False
        for s in range(2):
            own = np.uint8(1 << s)
            n_del = 0
            for i in range(sizes[s]):
                p = lists[s, i]
                flags[p] &= ~own
                if img[p]:
                    code = 0
                    for j in range(8):
                        if img[p + nb[j]]:
                            code |= 1 << j
                    if tables[s, code]:
                        deleted[n_del] = p
                        n_del += 1
            sizes[s] = 0
            for i in range(n_del):
                img[deleted[i]] = 0
            for i in range(n_del):
                for j in range(8):
                    q = deleted[i] + nb[j]
                    if img[q]:
                        for t in range(2):
                            mark = np.uint8(1 << t)
                            if not flags[q] & mark:
                                flags[q] |= mark
                                lists[t, sizes[t]] = q
                                sizes[t] += 1
            any_deleted |= n_del > 0
        if not any_deleted:
            return


class _Layout:
    """Flat indexing of an ``H×W`` image padded by ``pad`` zero pixels on every side, so that
    neighbour and disc offsets never leave the array."""

    def __init__(self, shape: tuple[int, int], pad: int) -> None:
        h, w = shape
        self.width = w + 2 * pad
        self.size = (h + 2 * pad) * self.width
        self.index = (np.arange(h)[:, None] + pad) * self.width + np.arange(w)[None, :] + pad
        wp = self.width
        # the 8 neighbours in the bit order of ``_thin_tables``: E, NE, N, NW, W, SW, S, SE
        self.neighbours = np.array([1, 1 - wp, -wp, -wp - 1, -1, wp - 1, wp, wp + 1], np.int64)


def edge_thin(binary: np.ndarray) -> np.ndarray:
    """Morphological thinning of a binary ``H×W`` map to 1-pixel lines (``bool``).

    The same parallel two-sub-iteration algorithm (Guo & Hall 1989) and result as scikit-image's
    ``thin`` and MATLAB's ``bwmorph(·, 'thin', inf)``, but visiting only foreground pixels.
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim != 2:
        raise ValueError(f"edge_thin expects an H×W map, got shape {binary.shape}")
    layout = _Layout(binary.shape, 1)
    img = np.zeros(layout.size, np.uint8)
    seeds = layout.index[binary].astype(np.int64)
    img[seeds] = 1
    _thin_in_place(img, seeds, layout.neighbours, _THIN_TABLES, np.zeros(layout.size, np.uint8),
                   np.empty((2, seeds.size), np.int64), np.empty(seeds.size, np.int64))
    return img[layout.index].astype(bool)


# ---------------------------------------------------------------------------------------------
# incremental counts over the thresholds
# ---------------------------------------------------------------------------------------------
@njit(cache=True)
def _augment(cand, n_cand, loc, ptr, adj, match_p, match_g, dist, it, queue, stack, gstack):
    """One Hopcroft–Karp phase on predictions ``cand[:n_cand]``; returns the augmentations.

    BFS in layers from every free prediction along unmatched edges to GT and matched edges back
    up to the first layer that reaches a free GT pixel, then vertex-disjoint shortest augmenting
    paths by DFS (a dead end leaves the layers, so each edge is tried once per phase).
    """
    head = 0
    tail = 0
    for i in range(n_cand):
        if match_p[cand[i]] < 0:
            dist[i] = 0
            queue[tail] = i
            tail += 1
        else:
            dist[i] = _INF
    limit = _INF
    while head < tail:
        u = queue[head]
        head += 1
        if dist[u] >= limit:
            continue
        p = cand[u]
        for e in range(ptr[p], ptr[p + 1]):
            w = match_g[adj[e]]
            if w < 0:
                limit = min(limit, dist[u] + 1)
            elif dist[loc[w]] == _INF:
                dist[loc[w]] = dist[u] + 1
                queue[tail] = loc[w]
                tail += 1
    if limit == _INF:
        return 0
    for i in range(n_cand):
        it[i] = ptr[cand[i]]
    found = 0
    for start in range(n_cand):
        if dist[start] != 0 or match_p[cand[start]] >= 0:
            continue
        depth = 0
        stack[0] = start
        while depth >= 0:
            u = stack[depth]
            end = ptr[cand[u] + 1]
            step = -1  # -1: dead end, 0: descended, 1: augmented
            while it[u] < end:
                g = adj[it[u]]
                it[u] += 1
                w = match_g[g]
                if w < 0:
                    if dist[u] + 1 == limit:
                        gstack[depth] = g
                        for level in range(depth, -1, -1):
                            match_p[cand[stack[level]]] = gstack[level]
                            match_g[gstack[level]] = cand[stack[level]]
                        step = 1
                        break
                elif dist[loc[w]] == dist[u] + 1:
                    gstack[depth] = g
                    depth += 1
                    stack[depth] = loc[w]
                    step = 0
                    break
            if step == 1:
                found += 1
                break
            if step == -1:
                dist[u] = _INF
                depth -= 1
    return found


@njit(cache=True)
def _counts_kernel(order, sizes, gt_pix, npix, disc, nb, tables):
    """``K×4`` counts; ``order``: valid pixels by decreasing probability, ``sizes[k]``: how many
    of them reach threshold k, ``gt_pix``: GT pixels, ``disc``: flat offsets within reach."""
    n_thr = sizes.size
    n_gt = gt_pix.size
    counts = np.zeros((n_thr, 4), np.int64)
    counts[:, 1] = n_gt
    # every pixel's GT pixels in reach, as CSR by pixel
    ptr = np.zeros(npix + 1, np.int64)
    for g in range(n_gt):
        for o in disc:
            ptr[gt_pix[g] + o + 1] += 1
    for i in range(npix):
        ptr[i + 1] += ptr[i]
    adj = np.empty(ptr[npix], np.int64)
    fill = ptr[:npix].copy()
    for g in range(n_gt):
        for o in disc:
            adj[fill[gt_pix[g] + o]] = g
            fill[gt_pix[g] + o] += 1

    n_max = sizes.max()
    binary = np.zeros(npix, np.uint8)
    thin = np.zeros(npix, np.uint8)  # the thinned map of the current threshold
    comp = np.full(npix, -1, np.int64)  # threshold whose changed components hold the pixel
    flags = np.zeros(npix, np.uint8)
    match_p = np.full(npix, -1, np.int64)
    match_g = np.full(n_gt, -1, np.int64)
    loc = np.zeros(npix, np.int64)
    lists = np.empty((2, n_max), np.int64)
    changed = np.empty(n_max, np.int64)
    deleted = np.empty(n_max, np.int64)
    thinned = np.empty(n_max, np.int64)
    previous = np.empty(n_max, np.int64)
    cand = np.empty(n_max, np.int64)
    it = np.empty(n_max, np.int64)
    queue = np.empty(n_max, np.int64)
    stack = np.empty(n_max + 1, np.int64)
    gstack = np.empty(n_max + 1, np.int64)
    dist = np.empty(n_max, np.int64)
    matched = 0
    n_bin = 0
    n_thin = 0
    for k in range(n_thr - 1, -1, -1):
        n = sizes[k]
        if n == n_bin and k < n_thr - 1:  # same binary map as the threshold above
            counts[k] = counts[k + 1]
            continue
        # the 8-connected components that gained a pixel: only they are thinned again
        n_changed = 0
        for i in range(n_bin, n):
            binary[order[i]] = 1
        for i in range(n_bin, n):
            seed = order[i]
            if comp[seed] == k:
                continue
            comp[seed] = k
            changed[n_changed] = seed
            head = n_changed
            n_changed += 1
            while head < n_changed:
                p = changed[head]
                head += 1
                for j in range(8):
                    q = p + nb[j]
                    if binary[q] and comp[q] != k:
                        comp[q] = k
                        changed[n_changed] = q
                        n_changed += 1
        n_bin = n
        for i in range(n_changed):
            thin[changed[i]] = 1
        _thin_in_place(thin, changed[:n_changed], nb, tables, flags, lists, deleted)
        # the new thinned set; predictions the re-thinning dropped leave the matching
        n_prev = n_thin
        previous[:n_prev] = thinned[:n_prev]
        n_thin = 0
        for i in range(n_prev):
            p = previous[i]
            if comp[p] != k:
                thinned[n_thin] = p
                n_thin += 1
            elif not thin[p] and match_p[p] >= 0:
                match_g[match_p[p]] = -1
                match_p[p] = -1
                matched -= 1
        for i in range(n_changed):
            if thin[changed[i]]:
                thinned[n_thin] = changed[i]
                n_thin += 1
        # predictions with a GT pixel in reach; a free one first takes any free GT pixel
        n_cand = 0
        for i in range(n_thin):
            p = thinned[i]
            if ptr[p + 1] == ptr[p]:
                continue
            loc[p] = n_cand
            cand[n_cand] = p
            n_cand += 1
            if match_p[p] < 0:
                for e in range(ptr[p], ptr[p + 1]):
                    if match_g[adj[e]] < 0:
                        match_g[adj[e]] = p
                        match_p[p] = adj[e]
                        matched += 1
                        break
        while True:
            found = _augment(cand, n_cand, loc, ptr, adj, match_p, match_g, dist, it, queue,
                             stack, gstack)
            if found == 0:
                break
            matched += found
        counts[k, 0] = matched
        counts[k, 2] = matched
        counts[k, 3] = n_thin
    return counts


def edge_pr_counts(
    prob: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    thresholds: np.ndarray,
    radius: float,
) -> np.ndarray:
    """Per-threshold BSDS counts of one image: ``K×4`` int64 ``[cnt_r, sum_r, cnt_p, sum_p]``.

    ``prob`` is the (already NMS-thinned, if wanted) soft map; at each threshold the map is
    binarised with ``prob >= t``, restricted to ``valid`` pixels (ignored pixels are neither
    predictions nor GT), thinned (``edge_thin``), and matched to ``gt & valid`` by a maximum
    matching within ``radius`` pixels (``edge_match``). All thresholds are done in one pass;
    see the module docstring for why the counts are those of the per-threshold reference.
    ``thresholds`` must be ascending.
    """
    prob = np.asarray(prob, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if prob.ndim != 2 or prob.shape != valid.shape or np.shape(gt) != prob.shape:
        raise ValueError(
            f"edge_pr_counts needs equal H×W maps, got {prob.shape}, {np.shape(gt)}, {valid.shape}"
        )
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any(np.diff(thresholds) <= 0):
        raise ValueError("edge_pr_counts needs a non-empty ascending 1-D array of thresholds")
    reach = radius + _RADIUS_TOLERANCE
    layout = _Layout(prob.shape, max(1, int(np.floor(reach))))
    values = prob[valid]
    order = layout.index[valid][np.argsort(-values, kind="stable")].astype(np.int64)
    sizes = values.size - np.searchsorted(np.sort(values), thresholds, side="left")
    gt_pix = layout.index[np.asarray(gt, dtype=bool) & valid].astype(np.int64)
    disc = np.array([dy * layout.width + dx for dy, dx in _disc_offsets(reach)], np.int64)
    return _counts_kernel(order, sizes.astype(np.int64), gt_pix, layout.size, disc,
                          layout.neighbours, _THIN_TABLES)


def _rpf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, precision, F from ``[..., 4]`` counts, with the toolbox's max(eps, ·) guards."""
    counts = counts.astype(np.float64)
    recall = counts[..., 0] / np.maximum(_EPS, counts[..., 1])
    precision = counts[..., 2] / np.maximum(_EPS, counts[..., 3])
    f = 2 * precision * recall / np.maximum(_EPS, precision + recall)
    return recall, precision, f


def _best_ods(
    recall: np.ndarray, precision: np.ndarray, thresholds: np.ndarray, interpolate: bool
) -> tuple[float, float, float, float]:
    """Dataset-optimal ``(F, P, R, threshold)``.

    With ``interpolate`` this is the toolbox's ``findBestRPF``: F is concave in (P, R), so the
    optimum on the straight line between two consecutive thresholds' (R, P) points (100 samples
    each, the threshold interpolated alike) can beat both ends; first maximum on ties. Without,
    the best of the thresholds themselves.
    """
    if interpolate and recall.size > 1:
        a = np.linspace(0.0, 1.0, 100)
        r = recall[1:, None] * a + recall[:-1, None] * (1 - a)
        p = precision[1:, None] * a + precision[:-1, None] * (1 - a)
        t = thresholds[1:, None] * a + thresholds[:-1, None] * (1 - a)
    else:
        r, p, t = recall, precision, thresholds
    f = 2 * p * r / np.maximum(_EPS, p + r)
    best = int(np.argmax(f))
    return float(f.flat[best]), float(p.flat[best]), float(r.flat[best]), float(t.flat[best])


def _average_precision(recall: np.ndarray, precision: np.ndarray, sum_p: np.ndarray) -> float:
    """Area under the precision–recall curve of the thresholds (exact trapezoid rule).

    Thresholds without any predicted pixel have no precision and are left out. The remaining
    points are ordered by recall (ties: highest threshold first), joined by straight lines, and
    the curve is extended flat from its lowest-recall point to recall 0; recall beyond the largest
    one reached adds nothing. A perfect map therefore scores 1. (The toolbox instead averages the
    interpolated precision over recall 0, 0.01, …, 1 inside the reached recall range only,
    dividing by 100, which gives 0 for a perfect map.)
    """
    keep = sum_p > 0
    r = recall[keep][::-1]
    p = precision[keep][::-1]
    if r.size == 0:
        return 0.0
    order = np.argsort(r, kind="stable")
    r = np.concatenate([[0.0], r[order]])
    p = np.concatenate([[p[order][0]], p[order]])
    return float(np.trapezoid(p, r))


def _bsds_average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP as pyEdgeEval 0.2.8 computes it: at each recall level ``r`` of ``np.arange(0, 1,
    0.01)`` (0, 0.01, …, 0.99) the best precision among thresholds with recall ``>= r`` (0 if
    none), summed and divided by 101 — the 101-level average over r = 0…1 with the r = 1 level
    left out, as that code does (it differs only when a threshold reaches recall 1).
    """
    levels = np.arange(0, 1, 0.01)
    reached = recall[None, :] >= levels[:, None]
    best = np.where(reached, precision[None, :], -np.inf).max(axis=1, initial=0.0)
    return float(best.sum() / 101)


#: how ``AP`` is computed (``EdgeFMeasure(ap=...)``)
AP_PROTOCOLS = ("trapezoid", "bsds")


def edge_scores(
    counts: np.ndarray,
    ois_counts: np.ndarray,
    thresholds: np.ndarray,
    interpolate_ods: bool = True,
    ap: str = "trapezoid",
) -> dict[str, float]:
    """ODS / OIS / AP from summed counts (``K×4`` per threshold, ``4`` at each image's best).

    Returns ``odsF``, ``odsP``, ``odsR``, ``oisF``, ``oisP``, ``oisR``, ``AP`` in % and the ODS
    threshold ``odsT`` (0–1; interpolated between two thresholds when ``interpolate_ods``).
    """
    if ap not in AP_PROTOCOLS:
        raise ValueError(f"ap must be one of {AP_PROTOCOLS}, got {ap!r}")
    counts = np.asarray(counts)
    recall, precision, _ = _rpf(counts)
    ods_f, ods_p, ods_r, ods_t = _best_ods(recall, precision, thresholds, interpolate_ods)
    ois_r, ois_p, ois_f = (float(v) for v in _rpf(np.asarray(ois_counts)))
    if ap == "trapezoid":
        area = _average_precision(recall, precision, counts[:, 3])
    else:
        area = _bsds_average_precision(recall, precision)
    out = {"odsF": ods_f, "odsP": ods_p, "odsR": ods_r, "oisF": ois_f, "oisP": ois_p,
           "oisR": ois_r, "AP": area}
    out = {name: 100.0 * value for name, value in out.items()}
    out["odsT"] = ods_t
    return out


def check_edge_pair(prob: np.ndarray, target: np.ndarray) -> None:
    """Raise a clear error unless ``prob`` is in [0, 1] and ``target`` in {0, 1, 255}."""
    if prob.size and not (np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1):
        raise ValueError(
            f"EdgeFMeasure: prob must be probabilities in [0, 1] (decode the logits), got "
            f"values in [{prob.min():.4g}, {prob.max():.4g}]"
        )
    bad = ~np.isin(target, (0.0, 1.0, 255.0))
    if bad.any():
        raise ValueError(
            f"EdgeFMeasure: target values must be 0, 1 or 255 (ignore), got "
            f"{float(target[bad][0])}"
        )


def image_counts(
    prob: np.ndarray, target: np.ndarray, thresholds: np.ndarray, max_dist: float, nms: bool
) -> np.ndarray:
    """``K×4`` counts of one ``H×W`` image: optional ``edge_nms``, then ``edge_pr_counts`` with
    the radius ``max_dist × diagonal`` against ``target`` (1 edge, 255 ignore)."""
    soft = edge_nms(prob) if nms else np.asarray(prob, dtype=np.float64)
    radius = max_dist * math.hypot(*prob.shape)
    return edge_pr_counts(soft, target == 1, target != 255, thresholds, radius)


def best_image_counts(counts: np.ndarray) -> np.ndarray:
    """The counts of an image's own best threshold (max F, first on ties), for OIS."""
    return counts[int(np.argmax(_rpf(counts)[2]))]


class EdgeFMeasure(Metric):
    """Edge ODS, OIS and AP (in %) in the BSDS protocol; see the module docstring.

    * ``odsF`` (with ``odsP``, ``odsR`` and the threshold ``odsT``): F at the best single
      threshold for the dataset, from counts summed over images; with ``interpolate_ods=True``
      (default, as the toolbox's ``findBestRPF``) the optimum is also searched on straight lines
      between consecutive thresholds' (R, P) points; with ``False`` it is the plain max over the
      ``thresholds`` values.
    * ``oisF`` (``oisP``, ``oisR``): each image picks its own best threshold (max F over
      thresholds, first one on ties, no interpolation — as ``edgesEvalDir``); P, R, F from the
      sums of the picked counts. As in the toolbox, an image without GT has F = 0 at every
      threshold, so it picks the lowest one and adds that threshold's predictions as false
      positives.
    * ``AP``: ``ap="trapezoid"`` (default) the area under the dataset precision–recall curve
      (see ``_average_precision`` — a perfect map gives 100); ``ap="bsds"`` the BSDS /
      pyEdgeEval average of the best precision at recall ≥ r (``_bsds_average_precision``).

    ``max_dist`` is the match tolerance as a fraction of the image diagonal (0.0075 PASCAL,
    0.011 NYUD). ``thresholds`` K gives ``t_k = k/(K+1)``; use e.g. 9 for quick validation.
    ``nms`` applies ``edge_nms`` first (turn it off for maps that are already thin, or to follow
    an evaluation script that scores the raw maps). Targets are ``{0, 1}`` with 255 = ignore;
    ignored pixels are removed from both the binarised prediction and the GT. All states are
    count sums, so ``dist_reduce_fx="sum"`` merges processes exactly; an empty dataset or an
    image with no GT and no prediction gives 0, never NaN.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        max_dist: float = 0.0075,
        thresholds: int = 99,
        nms: bool = True,
        interpolate_ods: bool = True,
        ap: str = "trapezoid",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not (isinstance(max_dist, int | float) and math.isfinite(max_dist) and max_dist >= 0):
            raise ValueError(f"max_dist must be a finite number >= 0, got {max_dist!r}")
        if ap not in AP_PROTOCOLS:
            raise ValueError(f"ap must be one of {AP_PROTOCOLS}, got {ap!r}")
        self.max_dist = float(max_dist)
        self.thresholds = edge_thresholds(thresholds)
        self.nms = bool(nms)
        self.interpolate_ods = bool(interpolate_ods)
        self.ap = ap
        k = len(self.thresholds)
        # Dataset counts per threshold: ODS and AP.
        for name in ("cnt_r", "sum_r", "cnt_p", "sum_p"):
            self.add_state(name, default=torch.zeros(k, dtype=torch.int64), dist_reduce_fx="sum")
        # Sums of each image's counts at its own best threshold: OIS.
        self.add_state(
            "ois_counts", default=torch.zeros(4, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, prob: Tensor, target: Tensor) -> None:
        """Add a batch: ``prob`` ``B×1×H×W`` in [0, 1], ``target`` ``B×1×H×W`` in {0, 1, 255}."""
        if prob.dim() != 4 or prob.shape[1] != 1 or prob.shape != target.shape:
            raise ValueError(
                f"EdgeFMeasure expects prob and target of equal shape B×1×H×W, got "
                f"{tuple(prob.shape)} and {tuple(target.shape)}"
            )
        p = prob.detach().to("cpu", torch.float64).numpy()[:, 0]
        t = target.detach().to("cpu", torch.float64).numpy()[:, 0]
        check_edge_pair(p, t)
        batch_counts = np.zeros((len(self.thresholds), 4), dtype=np.int64)
        ois_counts = np.zeros(4, dtype=np.int64)
        for image, label in zip(p, t):
            counts = image_counts(image, label, self.thresholds, self.max_dist, self.nms)
            batch_counts += counts
            ois_counts += best_image_counts(counts)
        for i, name in enumerate(("cnt_r", "sum_r", "cnt_p", "sum_p")):
            state = getattr(self, name)
            setattr(self, name, state + torch.from_numpy(batch_counts[:, i]).to(state.device))
        self.ois_counts = self.ois_counts + torch.from_numpy(ois_counts).to(self.ois_counts.device)

    def compute(self) -> dict[str, Tensor]:
        """``edge_scores`` of the summed counts: F, P, R and AP in % (0–100), ``odsT`` in 0–1."""
        counts = torch.stack([self.cnt_r, self.sum_r, self.cnt_p, self.sum_p], dim=1)
        scores = edge_scores(counts.cpu().numpy(), self.ois_counts.cpu().numpy(),
                             self.thresholds, self.interpolate_ods, self.ap)
        device = self.cnt_r.device
        return {
            name: torch.tensor(value, dtype=torch.float32, device=device)
            for name, value in scores.items()
        }
