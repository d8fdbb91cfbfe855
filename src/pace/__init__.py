"""PACE: noise on adapter branches + consistency between noisy passes.

``build_regulariser`` is the one entry the rest of the project uses.
"""

from __future__ import annotations

from torch import nn

from src.errors import UserError, check_choice
from src.pace.consistency import PACE, FastPACE, LazyPACE, LossParts, Regulariser
from src.pace.droppath import paired_batch, share_drop_path_masks
from src.pace.noise import MultiplicativeNoise, attach_noise, sigma_schedule

MODES = ("none", "pace", "lazy", "fast")


def build_regulariser(
    model: nn.Module,
    mode: str = "pace",
    sigma: float = 0.5,
    lam: float = 1.0,
    interval: int = 2,
    noise_shape: str = "channel",
    schedule: str = "vit",
) -> Regulariser:
    """Prepare ``model`` in place for ``mode`` and return the matching objective.

    ``none`` leaves the model untouched (it trains on merged weights); the PACE modes attach the
    σ schedule to every adapter branch and the head, and make drop-path masks shareable.
    """
    check_choice("pace mode", mode, MODES)
    if sigma < 0:
        raise UserError(f"sigma must be >= 0 (a noise standard deviation), got sigma={sigma}")
    if lam < 0:
        raise UserError(f"lam must be >= 0 (a loss weight), got lam={lam}")
    if mode == "none":
        return Regulariser()
    if mode == "lazy" and interval < 1:
        raise UserError(f"pace.interval must be a positive integer, got {interval}")
    attach_noise(model, sigma, noise_shape, schedule)
    share_drop_path_masks(model)
    if mode == "pace":
        return PACE(lam)
    if mode == "lazy":
        return LazyPACE(lam, interval)
    return FastPACE(lam)


__all__ = [
    "MODES",
    "FastPACE",
    "LazyPACE",
    "LossParts",
    "MultiplicativeNoise",
    "PACE",
    "Regulariser",
    "attach_noise",
    "build_regulariser",
    "paired_batch",
    "share_drop_path_masks",
    "sigma_schedule",
]
