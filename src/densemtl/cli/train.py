"""``densemtl-train``: a Hydra app over ``conf/train.yaml``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from densemtl.config import conf_dir


def objective_of(payload: Mapping[str, Any], spec: str | None) -> float | None:
    """The number a hyper-parameter sweeper optimises (``tracking.objective``): ``delta_m_gain``
    (needs ``baselines=``) or ``<task>/<metric>`` of the final validation; None if unset."""
    if spec is None or not payload:
        return None
    if spec == "delta_m_gain":
        if "delta_m" not in payload:
            raise KeyError("tracking.objective=delta_m_gain needs baselines=<single-task results>")
        return float(payload["delta_m"]["delta_m_gain"])
    task, _, metric = spec.partition("/")
    if metric not in payload["tasks"].get(task, {}):
        valid = [f"{t}/{m}" for t, ms in payload["tasks"].items() for m in ms]
        raise KeyError(f"tracking.objective={spec!r} is not a result of this run; valid: "
                       f"delta_m_gain, {', '.join(valid)}")
    return float(payload["tasks"][task][metric])


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train one configured run (or one job of a multirun) and write its metrics.json; returns
    ``tracking.objective`` of the results for hyper-parameter sweepers (Optuna)."""
    from densemtl.console import quiet
    from densemtl.experiment import run

    quiet()
    payload = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    return objective_of(payload, (cfg.get("tracking") or {}).get("objective"))


if __name__ == "__main__":
    main()
