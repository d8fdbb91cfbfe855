"""Learning-rate schedule of the paper's recipe: linear warm-up, then cosine decay (SPEC §7)."""

from __future__ import annotations

import math


def warmup_cosine_lr(
    step: int, total_steps: int, warmup_steps: int, lr: float, warmup_lr: float, min_lr: float
) -> float:
    """Learning rate at ``step``: ``warmup_lr → lr`` linearly, then cosine down to ``min_lr``."""
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
