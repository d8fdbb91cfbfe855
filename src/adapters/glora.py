"""The paper's adapters: fixed paths of GLoRA (SPEC §4).

Shapes for a frozen layer ``W0 [out, in]``, ``b0 [out]`` and rank ``r``:
``D_W [out, r]`` (0), ``U_W [r, in]`` (Xavier), ``δb [out]`` (0), ``D_P [in, r]`` (0),
``U_P [r, 1]`` (Xavier). Every ``D`` starts at zero: an injected model equals the pre-trained one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.adapters.base import AdaptedLinear, register_adapter


def _zeros(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape))


def _xavier(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(*shape)))


class _LowRankWeight(AdaptedLinear):
    """Adds the low-rank pair ``D_W U_W`` and the bias vector ``δb``."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__(base, rank)
        self.d_w = _zeros(base.out_features, rank)
        self.u_w = _xavier(rank, base.in_features)
        self.delta_b = _zeros(base.out_features)


class _Prompt(AdaptedLinear):
    """Adds the VPT_add prompt ``D_P U_P`` seen through ``W0``: a bias shift ``W0 · (D_P U_P)``."""

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__(base, rank)
        self.d_p = _zeros(base.in_features, rank)
        self.u_p = _xavier(rank, 1)

    def prompt_shift(self) -> torch.Tensor:
        return (self.base.weight @ (self.d_p @ self.u_p)).squeeze(-1)


@register_adapter("lora_mul_vpt_add")
class LoRAMulVPTAdd(_LowRankWeight, _Prompt):
    """``Δh(x) = x · (W0 ⊙ D_W U_W)ᵀ + W0 · (D_P U_P) + b0 ⊙ δb`` — the paper's baseline."""

    def merged_delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        delta_w = self.base.weight * (self.d_w @ self.u_w)
        return delta_w, self.prompt_shift() + self.base_bias() * self.delta_b

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.merged_delta())


@register_adapter("lora_add")
class LoRAAdd(_LowRankWeight):
    """``Δh(x) = D_W (U_W x) + δb``."""

    def merged_delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d_w @ self.u_w, self.delta_b

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        # Two thin matmuls instead of forming the full [out, in] product.
        return F.linear(F.linear(x, self.u_w), self.d_w, self.delta_b)


@register_adapter("vpt_add")
class VPTAdd(_Prompt):
    """``Δh = W0 · (D_P U_P)``: input-independent, so the branch is a bias shift."""

    def merged_delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(self.base.weight), self.prompt_shift()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.prompt_shift()
