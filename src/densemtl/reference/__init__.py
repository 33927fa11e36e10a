"""Single-task reference numbers from the papers (ASTMT Tables 3–6, ATRC Table G-1), as data.

One JSON file per table row: ``{"source": table/row, "backbone", "note"?, "tasks": {task:
{metric: value}}}`` — the format ``densemtl.runs.load_baselines`` reads, so Δm against a
paper's baseline is one flag: ``baselines=reference:astmt_pascal_r26``.
Metric names are the suite's (``odsF``, ``mIoU``, ``mean``, ``rmse``); where the paper's metric
differs from a task's default, the file's ``note`` says so (e.g. the ASTMT PASCAL saliency
column is the per-image-convention sal mIoU). ASTMT Table 7 (MobileNet) and the Table 6a UberNet
single-task row are incomplete in the source text and are not shipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIRECTORY = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped reference rows."""
    return sorted(p.stem for p in DIRECTORY.glob("*.json"))


def path(name: str) -> Path:
    """The JSON file of reference row ``name`` (for the ``baselines=`` flag)."""
    file = DIRECTORY / f"{name}.json"
    if not file.is_file():
        raise KeyError(f"unknown reference {name!r}; available: {', '.join(available())}")
    return file


def load(name: str) -> dict[str, Any]:
    """The whole reference entry: ``source``, ``backbone``, optional ``note`` and ``tasks``."""
    return json.loads(path(name).read_text())


def baselines(name: str) -> dict[str, dict[str, float]]:
    """Task -> {metric: value} of reference row ``name``."""
    return {t: {m: float(v) for m, v in ms.items()} for t, ms in load(name)["tasks"].items()}

