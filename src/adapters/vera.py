"""VeRA (Kopiczko et al. 2024): ``Δh(x) = λ_b ⊙ B (λ_d ⊙ A x)`` on block linears.

``A [r, in_max]`` and ``B [out_max, r]`` are frozen random matrices shared by every adapted
layer (each layer uses the top-left slice it needs); only the vectors ``λ_d [r]`` (init
``d_init``) and ``λ_b [out]`` (init 0, so the model starts as the pre-trained one) train.
The shared matrices are regenerated from ``projection_seed`` (Kaiming-uniform, CPU generator)
whenever the model is built, so ``adapter.safetensors`` need not store them.
Mergeable: ``ΔW = diag(λ_b) B diag(λ_d) A``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.adapters.base import AdaptedLinear, register_adapter
from src.adapters.schemas import VeRAConfig
from src.adapters.sites import replace_module


class SharedProjections(nn.Module):
    """The frozen ``A`` and ``B`` of every VeRA layer; buffers that are not saved, only seeded."""

    def __init__(self, rank: int, in_max: int, out_max: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        a = torch.empty(rank, in_max, device="cpu")
        b = torch.empty(out_max, rank, device="cpu")
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        nn.init.kaiming_uniform_(b, a=math.sqrt(5), generator=generator)
        self.register_buffer("a", a, persistent=False)
        self.register_buffer("b", b, persistent=False)


@register_adapter("vera", config=VeRAConfig)
class VeRA(AdaptedLinear):
    def __init__(self, base: nn.Linear, config: VeRAConfig, shared: SharedProjections):
        super().__init__(base)
        # A plain attribute, not a sub-module: the model owns the one shared copy.
        object.__setattr__(self, "shared", shared)
        self.lambda_d = nn.Parameter(torch.full((config.rank,), float(config.d_init)))
        self.lambda_b = nn.Parameter(torch.zeros(base.out_features))

    def projections(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shared.a[:, : self.in_features], self.shared.b[: self.out_features]

    def delta_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.projections()
        delta_w = self.lambda_b[:, None] * (b * self.lambda_d[None, :]) @ a
        return delta_w, delta_w.new_zeros(self.out_features)

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        a, b = self.projections()
        return self.lambda_b * F.linear(self.lambda_d * F.linear(x, a), b)

    @classmethod
    def install(cls, model: nn.Module, config: VeRAConfig) -> None:
        sites = cls.sites(model, config)
        shared = SharedProjections(
            config.rank,
            max(m.in_features for _, m in sites),
            max(m.out_features for _, m in sites),
            config.projection_seed,
        )
        model.vera_projections = shared  # registered once, so .to(device) moves it
        for name, module in sites:
            replace_module(model, name, cls(module, config, shared))
