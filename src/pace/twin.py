"""Full PACE's two noisy copies ``f([x; x])``, computing what the copies share only once.

Both copies are identical until the first noise enters: under the ViT schedule block 0 has σ = 0
and the drop-path masks are shared, so the patch embedding and block 0 (and any further leading
blocks without active noise) give the same activations twice. ``twin_forward`` runs that prefix
on ``x`` alone and duplicates the activations at the input of the first block holding active
noise. The random draws happen in the same order and number as in a forward of ``[x; x]`` (the
prefix's drop-path layers draw one mask per sample either way), so the result is the same
function of the same random numbers; ``tests/test_fast_paths.py`` checks loss and gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from src.adapters import BranchModule, iter_blocks
from src.pace.droppath import PairedDropPath, paired_batch


def _noisy(module: nn.Module) -> bool:
    noise = getattr(module, "branch_noise", None)
    return isinstance(module, BranchModule) and noise is not None and noise.is_active()


def first_noisy_block(model: nn.Module) -> nn.Module | None:
    """The block where the copies start to differ, or None when nothing can be shared.

    Walks modules in registration order (depth order in timm ViTs and Swins, as
    ``src.pace.noise.attach_noise`` does); a noisy branch outside every block before the first
    noisy block (e.g. at the patch embedding under another schedule) means nothing is shared.
    """
    if not getattr(model, "shares_twin_prefix", True):  # blocks take more than the hidden
        return None  # states (a transformers layer's attention mask): run [x; x] throughout
    first = next((m for m in model.modules() if _noisy(m)), None)
    if first is None:  # no noise at all: σ = 0, evaluation, or no branches
        return None
    blocks = {id(block) for block in iter_blocks(model)}
    current_block = None
    for module in model.modules():
        if id(module) in blocks:
            current_block = module
            if module is first:  # the block is itself the branch (VPT-Deep's prompted block)
                return module
        elif module is first:
            inside = current_block is not None and any(m is module for m in current_block.modules())
            return current_block if inside else None
    return None


def twin_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits of ``model([x; x])`` (copies share drop-path masks), shared prefix once."""
    split = first_noisy_block(model)
    if split is None:
        with paired_batch(model):
            return model(torch.cat([x, x]))
    drop_paths = [m for m in model.modules() if isinstance(m, PairedDropPath)]

    def duplicate(module: nn.Module, args: tuple) -> tuple:
        # From here on the batch is [h; h]: later drop-path layers repeat one mask per sample.
        for layer in drop_paths:
            layer.paired = True
        hidden, *rest = args
        return (torch.cat([hidden, hidden]), *rest)

    handle = split.register_forward_pre_hook(duplicate)
    try:
        return model(x)
    finally:
        handle.remove()
        for layer in drop_paths:
            layer.paired = False
