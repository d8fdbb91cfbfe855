"""``build_regulariser``: a model prepared in place for a PACE mode, and that mode's objective."""

from __future__ import annotations

import torch
from torch import nn

from src.errors import UserError, check_choice
from src.pace import MODES
from src.pace.consistency import HISTORY_INITS, PACE, FastPACE, LazyPACE, Objective, Regulariser
from src.pace.droppath import DROP_PATH_SCALES, share_drop_path_masks
from src.pace.noise import attach_noise, noise_modules

# recipe.noise_dtype → the dtype noise is drawn in; None = the adapter branch's own dtype.
NOISE_DTYPES = {"branch": None, "float32": torch.float32}


def build_regulariser(
    model: nn.Module,
    mode: str = "pace",
    sigma: float = 0.5,
    lam: float = 1.0,
    interval: int = 2,
    noise_shape: str = "channel",
    schedule: str = "vit",
    drop_path_scale: str = "keep_prob",
    history_init: str = "unseen",
    noise_dtype: str = "branch",
    objective: Objective | None = None,
) -> Regulariser:
    """Prepare ``model`` in place for ``mode`` and return the matching objective.

    ``none`` leaves the model untouched (it trains on merged weights); the PACE modes attach the
    σ schedule to every adapter branch and the head, and make drop-path masks shareable.
    ``drop_path_scale``, ``history_init`` (fast) and ``noise_dtype`` are switches of the training
    recipe whose official values docs/recipe.md lists. ``objective``: the task loss and PACE's
    output distance (default: image classification's cross-entropy and squared logit distance).
    """
    check_choice("pace mode", mode, MODES)
    check_choice("recipe.noise_dtype", noise_dtype, NOISE_DTYPES)
    check_choice("recipe.drop_path_scale", drop_path_scale, DROP_PATH_SCALES)
    check_choice("recipe.fast_history_init", history_init, HISTORY_INITS)
    if sigma < 0:
        raise UserError(f"sigma must be >= 0 (a noise standard deviation), got sigma={sigma}")
    if lam < 0:
        raise UserError(f"lam must be >= 0 (a loss weight), got lam={lam}")
    if mode == "none":
        return Regulariser(objective=objective)
    if mode == "lazy" and interval < 1:
        raise UserError(
            f"pace.interval (recipe.lazy_interval) must be a positive integer, got {interval}"
        )
    attach_noise(model, sigma, noise_shape, schedule)
    for noise in noise_modules(model):
        noise.noise_dtype = NOISE_DTYPES[noise_dtype]
    share_drop_path_masks(model, drop_path_scale)
    if mode == "pace":
        return PACE(lam, objective=objective)
    if mode == "lazy":
        return LazyPACE(lam, interval, objective=objective)
    return FastPACE(lam, history_init, objective=objective)
