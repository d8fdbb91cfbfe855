"""Stochastic depth that gives both copies of a duplicated batch the same mask.

PACE compares two noisy passes of the same sample; if drop-path dropped a residual branch in one
copy and kept it in the other, the consistency loss would penalise drop-path, not the noise.
"""

from __future__ import annotations

import contextlib

import torch
from timm.layers import DropPath
from torch import nn

from src.errors import check_choice

# How kept samples are rescaled (docs/recipe.md): ``keep_prob`` divides by 1 − p as timm does, so
# the mask's *expected* mean is 1; ``batch_mean`` (the official PACE code) divides by the drawn
# mask's own mean, so each batch's mean is exactly 1 and kept samples are scaled by B / kept.
DROP_PATH_SCALES = ("keep_prob", "batch_mean")


class PairedDropPath(nn.Module):
    """Per-sample drop-path; while ``paired`` the batch is ``[x; x]`` and the mask is repeated."""

    def __init__(self, drop_prob: float, scale: str = "keep_prob"):
        super().__init__()
        check_choice("recipe.drop_path_scale", scale, DROP_PATH_SCALES)
        self.drop_prob = float(drop_prob)
        self.scale = scale
        self.paired = False

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The rescaled per-sample keep mask ``[B, 1, …]`` for batch ``x``."""
        keep = 1.0 - self.drop_prob
        n = x.shape[0] // 2 if self.paired else x.shape[0]
        # Drawn and scaled in at least float32 and rounded to x's dtype once (a bf16 mask's
        # mean and 1/keep would each be rounded; the same seed gives the same mask in any dtype).
        wide = torch.promote_types(x.dtype, torch.float32)
        shape = (n,) + (1,) * (x.dim() - 1)
        mask = torch.empty(shape, dtype=wide, device=x.device).bernoulli_(keep)
        if self.scale == "keep_prob":
            mask.div_(keep)
        else:
            # A batch where every sample was dropped stays all-zero (the official code's 1e-12
            # guard has the same effect) instead of dividing by zero.
            mask.div_(mask.mean().clamp_min(1e-12))
        mask = mask.to(x.dtype)
        # Repeating the half keeps the batch mean unchanged, so both rules hold for [x; x] too.
        return torch.cat([mask, mask]) if self.paired else mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        return x * self.mask(x)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, scale={self.scale}"


def share_drop_path_masks(model: nn.Module, scale: str = "keep_prob") -> int:
    """Replace timm's DropPath modules with :class:`PairedDropPath`; returns how many."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, DropPath):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, PairedDropPath(module.drop_prob, scale))
            replaced += 1
    return replaced


@contextlib.contextmanager
def paired_batch(model: nn.Module):
    """Within this block the model's batch is two copies of the same samples."""
    layers = [m for m in model.modules() if isinstance(m, PairedDropPath)]
    for layer in layers:
        layer.paired = True
    try:
        yield
    finally:
        for layer in layers:
            layer.paired = False
