"""Where the Hydra configuration tree lives, and composing it outside a Hydra app."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig


def conf_dir() -> Path:
    """The ``conf/`` directory: ``$DENSEMTL_CONF`` if set, else the repository's ``conf/``."""
    env = os.environ.get("DENSEMTL_CONF")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(
            f"densemtl config tree not found at {path} (no train.yaml); set DENSEMTL_CONF to the "
            "repository's conf/ directory"
        )
    return path


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose a config in-process (tests, notebooks) with Hydra's compose API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
