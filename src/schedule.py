"""Learning-rate schedules: linear warm-up, then cosine decay (docs/recipe.md, ``lr_schedule``).

``step`` (the project's) moves the rate every optimiser step; ``epoch`` (the official PACE code's)
is timm's ``CosineLRScheduler`` stepped once after every epoch.
"""

from __future__ import annotations

import math

import torch
from timm.scheduler import CosineLRScheduler

from src.errors import UserError

LR_SCHEDULES = ("step", "epoch")


def warmup_cosine_lr(
    step: int, total_steps: int, warmup_steps: int, lr: float, warmup_lr: float, min_lr: float
) -> float:
    """Learning rate at ``step``: ``warmup_lr → lr`` linearly, then cosine down to ``min_lr``."""
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def epoch_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    epochs: int | None,
    warmup_epochs: float,
    warmup_lr: float,
    min_lr: float,
) -> CosineLRScheduler:
    """The official schedule; call ``step(epoch)`` after each epoch, as its training loop does.

    timm sets ``warmup_lr`` at construction and ``step(e)`` sets the rate for epoch ``e + 1``, so
    epochs 0 and 1 both run at ``warmup_lr``; the cosine's clock includes the warm-up epochs, so
    with 300 epochs and 10 warm-up epochs the peak is 0.997·lr, at epoch 11.
    """
    if epochs is None or epochs < 1:
        raise UserError(
            f"recipe.lr_schedule=epoch needs trainer.max_epochs >= 1 (got {epochs}); "
            "set trainer.max_epochs or use recipe.lr_schedule=step"
        )
    if warmup_epochs < 0 or not float(warmup_epochs).is_integer():
        raise UserError(
            f"recipe.lr_schedule=epoch needs a whole number of optim.warmup_epochs, got "
            f"{warmup_epochs}; round it or use recipe.lr_schedule=step"
        )
    return CosineLRScheduler(
        optimizer,
        t_initial=int(epochs),
        warmup_t=int(warmup_epochs),
        warmup_lr_init=warmup_lr,
        lr_min=min_lr,
    )
