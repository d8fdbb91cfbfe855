"""Stochastic depth that gives both copies of a duplicated batch the same mask.

PACE compares two noisy passes of the same sample; if drop-path dropped a residual branch in one
copy and kept it in the other, the consistency loss would penalise drop-path, not the noise.
"""

from __future__ import annotations

import contextlib

import torch
from timm.layers import DropPath
from torch import nn


class PairedDropPath(nn.Module):
    """Per-sample drop-path; while ``paired`` the batch is ``[x; x]`` and the mask is repeated."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = float(drop_prob)
        self.paired = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        n = x.shape[0] // 2 if self.paired else x.shape[0]
        mask = x.new_empty((n,) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)
        if self.paired:
            mask = torch.cat([mask, mask])
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def share_drop_path_masks(model: nn.Module) -> int:
    """Replace timm's DropPath modules with :class:`PairedDropPath`; returns how many."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, DropPath):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, PairedDropPath(module.drop_prob))
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
