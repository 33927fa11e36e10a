"""``densemtl-eval``: evaluate a checkpoint on its dataset's validation split."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from densemtl.config import conf_dir


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Rebuild the run from the checkpoint's own config, validate, write metrics.json."""
    from densemtl.console import quiet
    from densemtl.experiment import evaluate_checkpoint

    quiet()
    evaluate_checkpoint(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
