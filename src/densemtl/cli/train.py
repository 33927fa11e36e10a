"""``densemtl-train``: a Hydra app over ``conf/train.yaml``.

``densemtl-train resume=<run dir> [overrides]`` continues a run: it composes the run's own
overrides (``<run dir>/.hydra/overrides.yaml``, the new ones taking precedence) into the same
directory, where the run finds its ``checkpoints/last.ckpt``. A run stopped by a signal exits
with 128 + the signal number (143 for SIGTERM), never 0. Inside a SLURM batch job a single run
writes to ``outputs/slurm-<job id>`` unless ``hydra.run.dir`` is given, so the job SLURM requeues
(same id, same command) resumes there instead of starting in a new timestamped directory.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import yaml
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


def override_key(override: str) -> str:
    """The key an override sets: ``+a.b=1`` → ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def resume_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``resume=<run dir>`` expanded into the run's overrides (minus those given
    again), ``hydra.run.dir=<run dir>``; unchanged without ``resume=``."""
    resume = [a for a in argv if a.startswith("resume=")]
    if not resume:
        return list(argv)
    run_dir = Path(resume[-1].split("=", 1)[1])
    saved_file = run_dir / ".hydra" / "overrides.yaml"
    if not saved_file.is_file():
        raise SystemExit(f"resume={run_dir}: {saved_file} does not exist; give the directory of a "
                         "densemtl-train run (it holds .hydra/ and checkpoints/)")
    extra = [a for a in argv if not a.startswith("resume=")]
    given = {override_key(a) for a in extra} | {"ckpt_path", "hydra.run.dir"}
    saved = [o for o in yaml.safe_load(saved_file.read_text()) or []
             if override_key(o) not in given]
    return [*saved, *extra, f"hydra.run.dir={run_dir}"]


def slurm_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` plus ``hydra.run.dir=outputs/slurm-<job id>`` for a single run inside a SLURM
    batch job that names no directory (Hydra's default is a new timestamped one per start)."""
    from densemtl.training.callbacks import slurm_job_id, under_slurm

    named = any(override_key(a) == "hydra.run.dir" for a in argv)
    if not under_slurm() or named or {"-m", "--multirun"} & set(argv):
        return list(argv)
    return [*argv, f"hydra.run.dir=outputs/slurm-{slurm_job_id()}"]


def check_objective(cfg: Mapping[str, Any]) -> None:
    """Refuse at start-up a ``tracking.objective`` the run cannot produce (rather than after
    training): ``delta_m_gain`` without baselines, or a task the run does not train."""
    spec = cfg["tracking"]["objective"]
    if spec is None:
        return
    if spec == "delta_m_gain":
        if cfg["baselines"] is None:
            raise ValueError("tracking.objective=delta_m_gain needs baselines=<single-task "
                             "results>")
        return
    tasks = [cfg["single_task"]] if cfg["single_task"] else list(cfg["tasks"])
    task, sep, metric = spec.partition("/")
    if not (sep and metric) or task not in tasks:
        raise ValueError(f"tracking.objective={spec!r} is not delta_m_gain or <task>/<metric> "
                         f"with a task of this run ({', '.join(tasks)})")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def train(cfg: DictConfig) -> float | None:
    """Train one configured run (or one job of a multirun) and write its metrics.json; returns
    ``tracking.objective`` of the results for hyper-parameter sweepers (Optuna)."""
    from densemtl.console import quiet
    from densemtl.experiment import run
    from densemtl.training.callbacks import RunInterrupted

    quiet()
    check_objective(cfg)
    try:
        payload = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except RunInterrupted as stop:
        print(f"\n{stop}. Continue with: densemtl-train resume="
              f"{HydraConfig.get().runtime.output_dir}", file=sys.stderr)
        sys.exit(stop.exit_code)
    return objective_of(payload, (cfg.get("tracking") or {}).get("objective"))


def main() -> float | None:
    """Console entry point: :func:`train` after expanding ``resume=``."""
    sys.argv[1:] = slurm_argv(resume_argv(sys.argv[1:]))
    return train()


if __name__ == "__main__":
    main()
