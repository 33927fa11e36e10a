"""Run the benchmarks: ``python -m benchmarks [name ...]`` (default: all ``bench_*`` modules).

Each ``benchmarks/bench_<name>.py`` has ``run() -> dict``; its result is printed and stored in
``benchmarks/results.json`` under ``<name>`` with the machine it ran on, which the README quotes.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    """Where a benchmark ran (results are only comparable on the same machine)."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        start = time.perf_counter()
        result = module.run()
        result["machine"] = machine()
        result["date"] = time.strftime("%Y-%m-%d")
        result["seconds"] = round(time.perf_counter() - start, 1)
        key = name + ("_cuda" if torch.cuda.is_available() else "")
        results[key] = result
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
