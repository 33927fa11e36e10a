"""Metrics: torchmetrics classes for every task, edge odsF, saliency maxF and Δm.

``EdgeFMeasure`` is loaded on first access (PEP 562): its matcher pulls in scipy and
scikit-image, which a process that only needs losses should not pay for.
"""

from __future__ import annotations

import importlib
from typing import Any

from densemtl.metrics.delta_m import delta_m, delta_m_report
from densemtl.metrics.dense import DepthMetric, NormalsMetric, RegressionMetric, SegmentationMetric
from densemtl.metrics.saliency import SaliencyMetric

__all__ = [
    "DepthMetric",
    "EdgeFMeasure",
    "NormalsMetric",
    "RegressionMetric",
    "SaliencyMetric",
    "SegmentationMetric",
    "delta_m",
    "delta_m_report",
]


def __getattr__(name: str) -> Any:
    """Import ``EdgeFMeasure`` from its module when first asked for."""
    if name == "EdgeFMeasure":
        return importlib.import_module("densemtl.metrics.edge").EdgeFMeasure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
