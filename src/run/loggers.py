"""What every logger is told about a run: the whole resolved config, as one flat dictionary.

W&B's parallel-coordinates and group-by views, and TensorBoard's HPARAMS tab, need one flat
key per hyper-parameter (``sigma``, ``pace.mode``, ``adapter.rank``, ``optim.lr``, ``data.task``,
``data.protocol``, ``backbone.name``, ``seed``...). The same dictionary goes to every logger; the
parameter counts (``params/*``) follow from the LightningModule when training starts.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# Groups that describe the plumbing of a run, not the experiment.
_NOT_HYPERPARAMETERS = ("logger", "callbacks", "hydra", "paths")


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
    """The resolved config as one flat dict, without the logger/callback/path plumbing."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for group in _NOT_HYPERPARAMETERS:
        tree.pop(group, None)
    return flatten(tree)


def log_run_config(loggers, cfg: DictConfig, resolved: dict[str, Any] | None = None) -> None:
    """Send :func:`run_config` to every logger (W&B run config, TensorBoard hparams, CSV), with
    ``resolved``: what the config only names, as found at start (e.g. the weights' source and
    sha256, ``backbone.weights_source``)."""
    config = run_config(cfg) | (resolved or {})
    for logger in loggers:
        logger.log_hyperparams(config)
