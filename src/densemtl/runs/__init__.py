"""Run records: one package writes and reads a run directory (``metrics.json``,
``run_info.json``, the CSV history), computes Δm against baselines and prints the summary.

Training writes through it, and the report and the analysis notebooks read through it; it
imports nothing from training, so any layer may use it.
"""

from densemtl.runs.delta import check_baselines, delta_m_of, load_baselines
from densemtl.runs.records import (
    CURVES,
    Curve,
    RunRecord,
    UnreadableRun,
    incomplete_runs,
    load_runs,
    read_csv_history,
    read_run,
    resolve_run_dirs,
    write_json_atomic,
    write_metrics,
    write_run_info,
)
from densemtl.runs.summary import run_summary

__all__ = [
    "CURVES",
    "Curve",
    "RunRecord",
    "UnreadableRun",
    "check_baselines",
    "delta_m_of",
    "incomplete_runs",
    "load_baselines",
    "load_runs",
    "read_csv_history",
    "read_run",
    "resolve_run_dirs",
    "run_summary",
    "write_json_atomic",
    "write_metrics",
    "write_run_info",
]
