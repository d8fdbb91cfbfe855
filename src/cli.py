"""What the two entry points share: error reporting, seeding, loggers and run summaries."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError

log = logging.getLogger(__name__)


def report_user_errors(fn):
    """Turn a :class:`UserError` into one ``error: …`` line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a logger/callback group (None → nothing)."""
    if not group:
        return []
    return [hydra.utils.instantiate(node) for node in group.values() if node and "_target_" in node]


def prepare_wandb(cfg: DictConfig) -> None:
    """W&B goes offline (runs kept on disk for `wandb sync`) when no credentials exist."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg:
        return
    has_key = os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file()
    if not has_key and os.environ.get("WANDB_MODE") != "online":
        wandb_cfg.offline = True
        wandb_cfg.log_model = False
        log.info("W&B: no API key found, logging offline under %s", wandb_cfg.save_dir)


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun does not log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


@rank_zero_only
def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@rank_zero_only
def write_resolved_config(cfg: DictConfig, path: Path) -> None:
    """The config with every interpolation resolved: what this run really used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path, resolve=True)


def to_float_dict(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}
