"""LoRA (Hu et al. 2022): ``W = W0 + (α/r) B A`` on the fused qkv projection by default.

``Δh(x) = (α/r) · B (A x)`` with ``A [r, in]`` Kaiming-uniform (as in the reference
implementation, a = √5) and ``B [out, r]`` zero, so the model starts as the pre-trained one.
Mergeable: ``ΔW = (α/r) B A``, ``Δb = 0``. ``alpha: null`` means a scale of 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.adapters.base import AdaptedLinear, register_adapter
from src.adapters.schemas import LoRAConfig


@register_adapter("lora", config=LoRAConfig)
class LoRA(AdaptedLinear):
    def __init__(self, base: nn.Linear, config: LoRAConfig):
        super().__init__(base)
        r = config.rank
        self.scale = 1.0 if config.alpha is None else config.alpha / r
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r))

    def delta_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        delta_w = self.scale * (self.lora_b @ self.lora_a)
        return delta_w, delta_w.new_zeros(self.out_features)

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.lora_a.shape[0]}, scale={self.scale:.4g}"
