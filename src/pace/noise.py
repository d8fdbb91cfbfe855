"""Multiplicative noise on adapter branches and its depth schedule (PACE paper, Sec. 4).

``attach_noise`` walks the blocks of a timm ViT or Swin in depth order
(``src.adapters.iter_blocks``), gives every branch module of block ``k`` a
:class:`MultiplicativeNoise` with the scheduled σ_k, and multiplies the classification head's
logits by noise with σ/L (the head's whole output counts as its "branch"). A branch outside every
block (patch embedding, Swin's patch merging, final norm) takes the σ of the next block in depth
order, or the head's σ after the last block.
"""

from __future__ import annotations

import torch
from torch import nn

from src.adapters import BranchModule, iter_blocks
from src.errors import UserError, check_choice

NOISE_SHAPES = ("channel", "token")
SCHEDULES = ("vit", "hierarchical")


class MultiplicativeNoise(nn.Module):
    """Returns ``z ⊙ Δh`` with ``z ~ N(1, σ²)`` drawn without gradient, during training only.

    ``shape="channel"`` draws one value per sample and output channel, shared by all tokens
    (``[B, 1, …, 1, C]``); ``shape="token"`` draws one per sample, token and channel.
    """

    def __init__(self, sigma: float, shape: str = "channel"):
        super().__init__()
        if sigma < 0:
            raise UserError(f"sigma must be >= 0 (it is a noise std), got {sigma}")
        check_choice("pace.noise_shape", shape, NOISE_SHAPES)
        self.sigma = float(sigma)
        self.shape = shape

    def is_active(self) -> bool:
        return self.training and self.sigma > 0

    def sample(self, like: torch.Tensor) -> torch.Tensor:
        """Noise for branch output ``like``, in ``like``'s dtype unless ``noise_dtype`` is set.

        ``noise_dtype`` (set by ``src.pace.build_regulariser`` from ``recipe.noise_dtype``):
        ``torch.float32`` reproduces the official code, whose float32 noise promotes a bf16/fp16
        branch to float32; unset, the noise takes the branch's dtype (docs/recipe.md).
        """
        return self.draw(like.shape, like.dtype, like.device)

    def draw(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Noise for a branch output of ``shape`` (``[B, …, C]``), broadcastable to it.

        Branch modules call this in their fused noisy passes, before Δh exists.
        """
        if self.shape == "channel" and len(shape) > 2:
            size = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
        else:
            size = tuple(shape)
        dtype = getattr(self, "noise_dtype", None) or dtype
        # Drawn and shifted in at least float32, then rounded to ``dtype`` once: N(1, σ²) drawn in
        # bf16 would be rounded three times (draw, ·σ, +1), and a bf16 run would draw other
        # numbers than a float32 run with the same seed; this way it gets the same noise, rounded.
        wide = torch.promote_types(dtype, torch.float32)
        z = torch.randn(size, device=device, dtype=wide).mul_(self.sigma).add_(1.0)
        return z.to(dtype)

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        if not self.is_active():
            return branch
        return branch * self.sample(branch)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:.4g}, shape={self.shape}"


def sigma_schedule(sigma: float, depth: int, schedule: str = "vit") -> list[float]:
    """σ for blocks ``0..depth-1`` followed by σ for the head (entry ``depth``).

    ``vit``: block 0 gets 0, block k gets σ(L+1−k)/L, the head σ/L — decreasing with depth, the
    paper's best ordering. ``hierarchical`` (Swin-like): every stage i in 0..L gets σ(L+1−i)/(L+1).
    """
    check_choice("pace.schedule", schedule, SCHEDULES)
    if sigma < 0:
        raise UserError(f"sigma must be >= 0 (it is a noise std), got {sigma}")
    L = depth
    if schedule == "vit":
        return [0.0] + [sigma * (L + 1 - k) / L for k in range(1, L + 1)]
    return [sigma * (L + 1 - i) / (L + 1) for i in range(L + 1)]


def _head_noise_hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    return module.branch_noise(output)


def attach_noise(model: nn.Module, sigma: float, shape: str = "channel", schedule: str = "vit"):
    """Attach scheduled noise to every branch module and to the head; returns the σ list."""
    blocks = iter_blocks(model)
    sigmas = sigma_schedule(sigma, len(blocks), schedule)
    depth: dict[int, int] = {}  # id(branch module) -> index into sigmas
    for k, block in enumerate(blocks):
        depth.update((id(m), k) for m in block.modules() if isinstance(m, BranchModule))
    block_index = {id(block): k for k, block in enumerate(blocks)}
    waiting: list[BranchModule] = []  # outside every block, not yet followed by a block
    for module in model.modules():  # registration order = depth order in timm ViT and Swin
        if id(module) in block_index:
            depth.update((id(m), block_index[id(module)]) for m in waiting)
            waiting = []
        elif isinstance(module, BranchModule) and id(module) not in depth:
            waiting.append(module)
    depth.update((id(m), len(blocks)) for m in waiting)  # after the last block: the head's σ
    for module in model.modules():
        if isinstance(module, BranchModule):
            module.branch_noise = MultiplicativeNoise(sigmas[depth[id(module)]], shape)
    head = model.get_classifier()
    if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
        if getattr(head, "branch_noise", None) is None:  # hook once, even if attached twice
            head.register_forward_hook(_head_noise_hook)
        head.branch_noise = MultiplicativeNoise(sigmas[-1], shape)
    return sigmas


def noise_modules(model: nn.Module) -> list[MultiplicativeNoise]:
    return [m for m in model.modules() if isinstance(m, MultiplicativeNoise)]
