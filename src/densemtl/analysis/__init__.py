"""Analyses behind the notebooks: SE activations (Figs. 1, 6), sweeps, qualitative grids (7–8).

Everything returns numbers or matplotlib ``Figure`` objects (not pyplot state), so the same
analyses run from notebooks, scripts and tests.
"""

from densemtl.analysis.qualitative import (
    PanelRow,
    ValidationBatch,
    denormalize,
    plot_panels,
    predict,
    qualitative_panels,
    validation_batch,
)
from densemtl.analysis.se_activations import (
    LayerSimilarity,
    TaskGates,
    collect_block_features,
    collect_se_gates,
    equally_spaced,
    evaluating,
    format_similarity_table,
    layer_part,
    layer_similarity,
    network_of,
    pca_rgb,
    plot_layer_similarity,
    plot_pca_rgb,
    plot_task_similarity,
    plot_tsne,
    se_layers,
    task_similarity,
    tsne_embedding,
)
from densemtl.analysis.sweeps import format_last_values, latest_run

__all__ = [
    "LayerSimilarity",
    "PanelRow",
    "TaskGates",
    "ValidationBatch",
    "collect_block_features",
    "collect_se_gates",
    "denormalize",
    "equally_spaced",
    "evaluating",
    "format_last_values",
    "latest_run",
    "format_similarity_table",
    "layer_part",
    "layer_similarity",
    "network_of",
    "pca_rgb",
    "plot_layer_similarity",
    "plot_panels",
    "plot_pca_rgb",
    "plot_task_similarity",
    "plot_tsne",
    "predict",
    "qualitative_panels",
    "se_layers",
    "task_similarity",
    "tsne_embedding",
    "validation_batch",
]
