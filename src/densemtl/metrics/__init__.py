"""Metrics: torchmetrics classes for every task, edge odsF, saliency maxF and Δm.

``EdgeFMeasure`` and ``SaliencyMetric`` are loaded on first access (PEP 562): the edge matcher
pulls in scipy / scikit-image, which a process that only needs losses should not pay for.
"""

from __future__ import annotations

import importlib
from typing import Any

from densemtl.metrics.delta_m import delta_m, delta_m_report
from densemtl.metrics.dense import DepthMetric, NormalsMetric, RegressionMetric, SegmentationMetric

_LAZY = {"EdgeFMeasure": "densemtl.metrics.edge", "SaliencyMetric": "densemtl.metrics.saliency"}

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
    """Import ``EdgeFMeasure`` / ``SaliencyMetric`` from their modules when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
