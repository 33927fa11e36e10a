"""Inside a task-conditioned network: per-task SE gates and features at every depth (ASTMT §5).

The paper shows that the task-specific SE activations are almost the same for all tasks early in
the network and grow apart with depth (Fig. 6, t-SNE of the SE activations), and that the features
themselves become task-specific (Fig. 1, a PCA basis shared by the tasks of one layer, its first
three components shown as RGB). The functions here compute the same from a trained network.

Collection runs one forward call per task (``net(images, tasks=(task,))``), so every per-task SE
copy runs on its own (never the stacked path, where one call gates all tasks at once), and reads
the gate (the output of each copy's sigmoid) with forward hooks that are removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from densemtl.models.conditioning import TaskSqueezeExcite

__all__ = [
    "LayerSimilarity",
    "TaskGates",
    "collect_block_features",
    "collect_se_gates",
    "equally_spaced",
    "evaluating",
    "format_similarity_table",
    "layer_similarity",
    "network_of",
    "pca_rgb",
    "plot_layer_similarity",
    "plot_pca_rgb",
    "plot_task_similarity",
    "plot_tsne",
    "layer_part",
    "se_layers",
    "task_similarity",
    "tsne_embedding",
]

SIMILARITY_METRICS = ("cosine", "correlation")
Images = Tensor | Mapping[str, Tensor] | Iterable[Tensor | Mapping[str, Tensor]]


def network_of(model: nn.Module) -> nn.Module:
    """The network inside a Lightning module (its ``net``), or ``model`` itself."""
    net = getattr(model, "net", model)
    if not isinstance(net, nn.Module) or not hasattr(net, "tasks"):
        raise TypeError(
            f"expected a DenseMTLNet or a densemtl Lightning module holding one as .net, got "
            f"{type(model).__name__}"
        )
    return net


def se_layers(model: nn.Module) -> dict[str, TaskSqueezeExcite]:
    """Every per-task SE module of the network, by module path, in registration order."""
    net = network_of(model)
    layers = {n: m for n, m in net.named_modules() if isinstance(m, TaskSqueezeExcite)}
    if not layers:
        raise ValueError(
            "the network has no per-task SE modules (TaskSqueezeExcite): train it with "
            "modulation=se_decoder or modulation=se_encoder_decoder"
        )
    return layers


@contextmanager
def evaluating(net: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; every module's training flag restored after."""
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes.items():
            module.train(mode)


def _batches(images: Images) -> Iterator[Tensor]:
    """Image tensors from a tensor, a batch dict (``"image"``) or an iterable of either."""
    if isinstance(images, Tensor):
        yield images
        return
    if isinstance(images, Mapping):
        if "image" not in images:
            raise KeyError(f"batch has no 'image' entry (keys: {sorted(images)})")
        yield images["image"]
        return
    for item in images:
        yield from _batches(item)


def _check_tasks(net: nn.Module, tasks: Sequence[str] | None) -> tuple[str, ...]:
    tasks = tuple(net.tasks if tasks is None else tasks)
    unknown = [t for t in tasks if t not in net.tasks]
    if unknown or not tasks:
        raise ValueError(f"tasks {list(tasks)} must be a non-empty subset of {list(net.tasks)}")
    return tasks


@dataclass
class TaskGates:
    """SE gate vectors: ``values[layer][task]`` is ``N×C`` (one row per image).

    Layers are ordered by when they first ran in a forward pass, i.e. by depth.
    """

    values: dict[str, dict[str, np.ndarray]]

    @property
    def layers(self) -> list[str]:
        """SE layer names in execution order."""
        return list(self.values)

    @property
    def tasks(self) -> list[str]:
        """Task names, in the order they were collected."""
        return list(next(iter(self.values.values())))

    def mean(self, layer: str) -> np.ndarray:
        """``T×C``: each task's gate vector at ``layer`` averaged over the images."""
        if layer not in self.values:
            raise KeyError(f"no SE layer {layer!r}; layers: {', '.join(self.layers)}")
        return np.stack([self.values[layer][t].mean(axis=0) for t in self.tasks])


def collect_se_gates(
    model: nn.Module,
    images: Images,
    tasks: Sequence[str] | None = None,
    max_images: int | None = None,
) -> TaskGates:
    """Per-task SE gate vectors at every SE layer for ``images`` (a tensor, batch or loader).

    Every forward call activates one task, so a hook on a copy's sigmoid sees exactly that task's
    gates. The hooks are removed on exit, also when a forward call fails.
    """
    net = network_of(model)
    tasks = _check_tasks(net, tasks)
    layers = se_layers(net)
    found: dict[str, dict[str, list[Tensor]]] = {}  # filled in execution order
    seen = 0

    def hook(layer: str, task: str):
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            found.setdefault(layer, {t: [] for t in tasks})[task].append(output.flatten(1).cpu())

        return record

    with ExitStack() as stack, evaluating(net):
        for name, se in layers.items():
            for task in tasks:
                handle = se.per_task[task].gate.register_forward_hook(hook(name, task))
                stack.callback(handle.remove)
        for batch in _batches(images):
            if max_images is not None:
                batch = batch[: max_images - seen]
            if batch.shape[0] == 0:
                break
            device = next(net.parameters()).device
            for task in tasks:
                net(batch.to(device), tasks=(task,))
            seen += batch.shape[0]
    if not found:
        raise ValueError("no images given: the image source yielded no batch")
    missing = sorted(set(layers) - set(found))
    if missing:
        raise RuntimeError(f"SE layers {missing} never ran in the forward pass")
    return TaskGates(
        {
            layer: {t: torch.cat(chunks).double().numpy() for t, chunks in by_task.items()}
            for layer, by_task in found.items()
        }
    )


def _pairwise(vectors: np.ndarray, metric: str) -> np.ndarray:
    """``T×T`` cosine similarity of the rows (of the centred rows for ``correlation``)."""
    if metric not in SIMILARITY_METRICS:
        raise ValueError(f"unknown similarity {metric!r}; choose {' or '.join(SIMILARITY_METRICS)}")
    v = vectors - vectors.mean(axis=1, keepdims=True) if metric == "correlation" else vectors
    norms = np.linalg.norm(v, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (v @ v.T) / np.outer(norms, norms)
    return np.clip(sim, -1.0, 1.0)


def task_similarity(gates: TaskGates, layer: str, metric: str = "correlation") -> np.ndarray:
    """``T×T`` similarity between the tasks' mean gate vectors at ``layer``.

    ``correlation`` (Pearson over channels) is the default: sigmoid gates are all positive, so
    their plain cosine stays high even for unrelated gates; ``cosine`` is also available. A
    constant gate vector has no correlation (NaN).
    """
    return _pairwise(gates.mean(layer), metric)


@dataclass(frozen=True)
class LayerSimilarity:
    """Cross-task similarity of one SE layer: mean and minimum over all task pairs."""

    depth: int
    layer: str
    channels: int
    cosine: float
    correlation: float
    min_correlation: float


def layer_similarity(gates: TaskGates) -> list[LayerSimilarity]:
    """One row per SE layer (in depth order): mean pairwise similarity across the tasks."""
    if len(gates.tasks) < 2:
        raise ValueError(f"similarity across tasks needs at least 2 tasks, got {gates.tasks}")
    pairs = np.triu_indices(len(gates.tasks), k=1)
    rows = []
    for depth, layer in enumerate(gates.layers):
        cos = task_similarity(gates, layer, "cosine")[pairs]
        corr = task_similarity(gates, layer, "correlation")[pairs]
        channels = gates.values[layer][gates.tasks[0]].shape[1]
        rows.append(
            LayerSimilarity(
                depth, layer, channels, float(cos.mean()), float(corr.mean()), float(corr.min())
            )
        )
    return rows


def format_similarity_table(rows: Sequence[LayerSimilarity]) -> str:
    """Plain-text table of :func:`layer_similarity` rows (one line per layer)."""
    width = max(len("layer"), *(len(r.layer) for r in rows))
    lines = [
        f"{'depth':>5}  {'layer':<{width}}  {'C':>4}  {'cosine':>7}  {'corr':>7}  {'min corr':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r.depth:>5}  {r.layer:<{width}}  {r.channels:>4}  {r.cosine:>7.4f}  "
            f"{r.correlation:>7.4f}  {r.min_correlation:>8.4f}"
        )
    return "\n".join(lines)


def layer_part(layer: str) -> str:
    """``"encoder"`` or ``"decoder"``: the half of the network an SE layer sits in, from its
    module path (the decoder's and heads' modules are under ``decoder.`` / ``heads.``)."""
    return "decoder" if layer.split(".")[0] in ("decoder", "heads") else "encoder"


def _short(layer: str) -> str:
    """A layer path without the trailing ``.se`` and the ``backbone.`` prefix, for labels."""
    return layer.removesuffix(".se").removeprefix("backbone.")


def _mark_boundary(ax: Axes, layers: Sequence[str]) -> None:
    """A dashed line between the last encoder and the first decoder layer, halves labelled."""
    parts = [layer_part(layer) for layer in layers]
    if "decoder" in parts and "encoder" in parts:
        edge = parts.index("decoder") - 0.5
        ax.axvline(edge, color="black", ls="--", lw=1)
        halves = ((edge - 0.2, "encoder ←", "right"), (edge + 0.2, "→ decoder", "left"))
        for x, text, align in halves:
            ax.text(x, 1.0, text, transform=ax.get_xaxis_transform(), ha=align, va="bottom",
                    fontsize=8)


def plot_layer_similarity(rows: Sequence[LayerSimilarity]) -> Figure:
    """Cross-task gate similarity against depth (the divergence the paper's Fig. 6 shows), each
    SE layer named on the axis, the encoder / decoder boundary marked, one legend."""
    fig = Figure(figsize=(max(7.0, 0.42 * len(rows)), 4.2), layout="constrained")
    ax = fig.subplots()
    depth = [r.depth for r in rows]
    ax.plot(depth, [r.correlation for r in rows], "o-", label="mean correlation")
    ax.plot(depth, [r.min_correlation for r in rows], "v:", label="min correlation")
    ax.plot(depth, [r.cosine for r in rows], "s--", label="mean cosine")
    ax.set_xticks(depth, [_short(r.layer) for r in rows], rotation=60, ha="right", fontsize=7)
    _mark_boundary(ax, [r.layer for r in rows])
    ax.set_ylabel("similarity across tasks")
    ax.axhline(1.0, color="grey", lw=0.8)  # identical gates; the y range follows the data
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize=8)
    return fig


def plot_task_similarity(gates: TaskGates, metric: str = "correlation", cols: int = 6) -> Figure:
    """Per SE layer, the ``T×T`` task-to-task similarity of the tasks' mean gate vectors as a
    heatmap (ASTMT's analysis of how the tasks' modulation grows apart), in depth order, each
    titled with its depth, name and half (enc / dec); one colour scale for all layers, from the
    lowest off-diagonal similarity to 1 (gates of a short run differ by little)."""
    layers, tasks = gates.layers, gates.tasks
    matrices = [task_similarity(gates, layer, metric) for layer in layers]
    off = ~np.eye(len(tasks), dtype=bool)
    low = np.nanmin([m[off] for m in matrices]) if len(tasks) > 1 else -1.0
    low = -1.0 if not np.isfinite(low) else float(low)
    rows = -(-len(layers) // cols)
    size = 0.35 * len(tasks) + 1.0
    fig = Figure(figsize=(cols * size + 1.2, rows * (size + 0.4)), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for k, (ax, layer, matrix) in enumerate(zip(axes, layers, matrices)):
        image = ax.imshow(matrix, vmin=low, vmax=1.0, cmap="viridis")
        part = "enc" if layer_part(layer) == "encoder" else "dec"
        ax.set_title(f"{k} [{part}] {_short(layer)}", fontsize=6)
        first_col = k % cols == 0
        ax.set_xticks(range(len(tasks)), tasks if k >= len(layers) - cols else [],
                      rotation=90, fontsize=6)
        ax.set_yticks(range(len(tasks)), tasks if first_col else [], fontsize=6)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.tolist(), shrink=0.6, label=f"{metric} of the mean gates")
    fig.suptitle("Task-to-task similarity of the SE gates per layer")
    return fig


def equally_spaced(layers: Sequence[str], count: int) -> list[str]:
    """``count`` layers at equally spaced depths, first and last included (Fig. 6's columns)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if count >= len(layers):
        return list(layers)
    index = np.round(np.linspace(0, len(layers) - 1, count)).astype(int)
    return [layers[i] for i in index]


def tsne_embedding(
    gates: TaskGates, layer: str, perplexity: float | None = None, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """t-SNE of the gate vectors at ``layer``: one 2-D point per (image, task) and its task.

    ``perplexity`` defaults to ``min(30, (n - 1) / 3)`` for n points (t-SNE needs it below n).
    """
    from sklearn.manifold import TSNE

    if layer not in gates.values:
        raise KeyError(f"no SE layer {layer!r}; layers: {', '.join(gates.layers)}")
    points = np.concatenate([gates.values[layer][t] for t in gates.tasks])
    labels = [t for t in gates.tasks for _ in range(len(gates.values[layer][t]))]
    n = len(points)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points (images × tasks), got {n}")
    perplexity = min(30.0, (n - 1) / 3) if perplexity is None else float(perplexity)
    if not 0 < perplexity < n:
        raise ValueError(f"perplexity must lie in (0, {n}) for {n} points, got {perplexity}")
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500)
    return tsne.fit_transform(points), labels


def plot_tsne(
    gates: TaskGates, layers: Sequence[str], perplexity: float | None = None, seed: int = 0
) -> Figure:
    """One t-SNE panel per layer, left to right by depth, points coloured by task (Fig. 6)."""
    fig = Figure(figsize=(3.0 * len(layers), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers)))
    colours = {t: f"C{i % 10}" for i, t in enumerate(gates.tasks)}
    for ax, layer in zip(axes, layers):
        points, labels = tsne_embedding(gates, layer, perplexity, seed)
        for task in gates.tasks:
            mask = np.array([label == task for label in labels])
            ax.scatter(*points[mask].T, s=14, color=colours[task], label=task)
        ax.set_title(f"{gates.layers.index(layer)} [{layer_part(layer)}] {_short(layer)}",
                     fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    return fig


def collect_block_features(
    model: nn.Module,
    images: Tensor | Mapping[str, Tensor],
    layers: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Per-task features ``B×C×H×W`` at the output of the block holding each SE layer.

    Keyed like the gates (by SE layer path). The block output (e.g. a bottleneck after its
    residual sum) is the representation the next layer sees, which Fig. 1 visualises.
    """
    net = network_of(model)
    tasks = _check_tasks(net, tasks)
    all_layers = se_layers(net)
    layers = list(all_layers if layers is None else layers)
    unknown = [layer for layer in layers if layer not in all_layers]
    if unknown:
        raise KeyError(f"unknown SE layers {unknown}; layers: {', '.join(all_layers)}")
    (batch,) = list(_batches(images))
    found: dict[str, dict[str, Tensor]] = {}
    active: list[str] = []

    def hook(layer: str):
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            found.setdefault(layer, {})[active[0]] = output.detach().cpu()

        return record

    with ExitStack() as stack, evaluating(net):
        for layer in layers:
            parent = net.get_submodule(layer.rpartition(".")[0])
            stack.callback(parent.register_forward_hook(hook(layer)).remove)
        device = next(net.parameters()).device
        for task in tasks:
            active[:] = [task]
            net(batch.to(device), tasks=(task,))
    missing = [layer for layer in layers if layer not in found]
    if missing:
        raise RuntimeError(f"SE layers {missing} never ran in the forward pass")
    return {layer: found[layer] for layer in layers}


def pca_rgb(features: Mapping[str, Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    """Features ``C×H×W`` per task -> ``H×W×3`` images in [0, 1] from one shared PCA basis.

    The basis is fitted on the pixels of all tasks together (so colours compare across tasks);
    each component is scaled by its min and max over all tasks. Components are signed so that
    their largest loading is positive, which makes the colours deterministic.
    """
    arrays = {t: np.asarray(f, dtype=np.float64) for t, f in features.items()}
    if not arrays:
        raise ValueError("pca_rgb needs the features of at least one task")
    channels = {a.shape[0] for a in arrays.values()}
    bad = {t: a.shape for t, a in arrays.items() if a.ndim != 3}
    if bad or len(channels) != 1:
        raise ValueError(
            f"expected C×H×W features with one C for all tasks, got shapes "
            f"{ {t: a.shape for t, a in arrays.items()} }"
        )
    (c,) = channels
    if c < 3:
        raise ValueError(f"PCA to 3 components needs at least 3 channels, got {c}")
    pixels = np.concatenate([a.reshape(c, -1).T for a in arrays.values()])  # P×C
    centre = pixels.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(pixels - centre, rowvar=False, bias=True))
    basis = vectors[:, ::-1][:, :3]  # C×3, largest variance first
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), range(3)])
    basis = basis * np.where(signs == 0, 1.0, signs)
    projected = {t: (a.reshape(c, -1).T - centre) @ basis for t, a in arrays.items()}
    stacked = np.concatenate(list(projected.values()))
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return {t: ((p - low) / span).reshape(*arrays[t].shape[1:], 3) for t, p in projected.items()}


def plot_pca_rgb(images: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Grid of PCA→RGB images: one row per layer, one column per task (Fig. 1)."""
    layers = list(images)
    tasks = list(next(iter(images.values())))
    fig = Figure(figsize=(1.6 * len(tasks) + 1.5, 1.6 * len(layers)), layout="constrained")
    axes = np.asarray(fig.subplots(len(layers), len(tasks), squeeze=False))
    for i, layer in enumerate(layers):
        for j, task in enumerate(tasks):
            ax = axes[i, j]
            ax.imshow(images[layer][task], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(task, fontsize=8)
            if j == 0:
                ax.set_ylabel(layer, fontsize=6)
    return fig
