"""Shared fixtures: Hydra composition of the real configs, a tiny VTAB-format task on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import src.config  # noqa: F401  (the resolvers the configs use)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as ``python -m src.train`` would, with output_dir set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(list(overrides), tmp_path / "run", config_name)

    yield _compose
    GlobalHydra.instance().clear()
