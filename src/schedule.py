"""Learning-rate schedules: linear warm-up, then cosine decay (docs/recipe.md, ``lr_schedule``).

Both are timm's ``CosineLRScheduler``: ``step`` (the project's) moves the rate every optimiser
step; ``epoch`` (the official PACE code's) steps it once after every epoch.
"""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler

from src.errors import UserError

LR_SCHEDULES = ("step", "epoch")


def step_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    warmup_lr: float,
    min_lr: float,
) -> CosineLRScheduler:
    """The project's schedule, moved every optimiser step (``step_update(n)`` after step ``n``):
    ``warmup_lr → lr`` linearly over ``warmup_steps``, then a cosine down to ``min_lr`` over the
    remaining steps, and ``min_lr`` after them."""
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        warmup_t=warmup_steps,
        warmup_lr_init=warmup_lr,
        warmup_prefix=True,  # the cosine starts when the warm-up ends
        lr_min=min_lr,
        t_in_epochs=False,
    )


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
