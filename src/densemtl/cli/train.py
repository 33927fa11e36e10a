"""``densemtl-train``: a Hydra app over ``conf/train.yaml``."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from densemtl.config import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    """Train one configured run (or one job of a multirun) and write its metrics.json."""
    from densemtl.experiment import run

    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
