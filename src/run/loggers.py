"""What every logger is told about a run: its resolved hyper-parameters, as one flat dictionary.

W&B's parallel-coordinates and group-by views, and TensorBoard's HPARAMS tab, need one flat
key per hyper-parameter (``sigma``, ``pace.mode``, ``adapter.rank``, ``optim.lr``, ``data.task``,
``data.protocol``, ``backbone.name``, ``seed``...): every key that decides the result or the
replicate (src/run/keys.py). The same dictionary goes to every logger; the parameter counts
(``params/*``) follow from the LightningModule when training starts.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.run.keys import key_role


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}``; lists and scalars stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as one flat dict of what decides the result and the replicate (the
    seed stays): no paths, loggers, workers, threads or search settings (src/run/keys.py)."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    return {key: value for key, value in flat.items() if key_role(key).logged}


def log_run_config(loggers, cfg: DictConfig, resolved: dict[str, Any] | None = None) -> None:
    """Send :func:`run_config` to every logger (W&B run config, TensorBoard hparams, CSV), with
    ``resolved``: what the config only names, as found at start (e.g. the weights' source and
    sha256, ``backbone.weights_source``)."""
    config = run_config(cfg) | (resolved or {})
    for logger in loggers:
        logger.log_hyperparams(config)
