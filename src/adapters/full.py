"""Full fine-tuning and linear probing, written on the branch contract.

- ``full``: every Linear and LayerNorm of the backbone gets a dense increment ``ΔW, Δb`` (init 0),
  so ``Δh = (W − W0) x + (b − b0)`` — for a LayerNorm ``(γ − γ0) ⊙ x̂ + (β − β0)`` — is what PACE
  perturbs. Every other backbone parameter (patch-embedding convolution, class token, position
  table, Swin's relative-position tables) gets a :class:`ParameterDelta` ``p0 + Δ``, without
  noise. Mergeable.
- ``linear``: only the new classification head trains; there is no branch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from src.adapters import sites
from src.adapters.base import (
    BranchModule,
    ParameterDelta,
    branch_modules,
    register_adapter,
)
from src.adapters.schemas import AdapterConfig


class DenseDelta(BranchModule):
    """A dense increment for each parameter of a module that is affine in its parameters."""

    mergeable = True

    def __init__(self, base: nn.Module, config: AdapterConfig):
        super().__init__(base)
        self.delta_weight = nn.Parameter(torch.zeros_like(base.weight))
        self.delta_bias = (
            nn.Parameter(torch.zeros_like(base.bias)) if base.bias is not None else None
        )

    def merged_delta(self) -> dict[str, torch.Tensor]:
        delta = {"weight": self.delta_weight}
        if self.delta_bias is not None:
            delta["bias"] = self.delta_bias
        return delta

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        # Linear and LayerNorm are affine in (weight, bias): f(x; W0+ΔW) = f(x; W0) + f(x; ΔW).
        return functional_call(self.base, self.merged_delta(), (x,))


@register_adapter("full", config=AdapterConfig)
class Full(DenseDelta):
    @classmethod
    def sites(cls, model, config):
        leaves = sites.backbone_leaves(model, config, (nn.Linear, nn.LayerNorm))
        return [(n, m) for n, m in leaves if getattr(m, "weight", None) is not None]

    @classmethod
    def install(cls, model, config) -> None:
        super().install(model, config)
        skip = sites.head_module_ids(model)
        skip |= {id(m) for _, b in branch_modules(model) for m in b.modules()}
        chosen = {id(b) for _, b in sites.selected_blocks(model, config)}
        skip |= {
            id(m) for b in sites.iter_blocks(model) if id(b) not in chosen for m in b.modules()
        }
        for module in list(model.modules()):
            if id(module) not in skip:
                for name, _ in list(module.named_parameters(recurse=False)):
                    ParameterDelta.install(module, name)


@register_adapter("linear", config=AdapterConfig)
class LinearProbe(BranchModule):
    """Nothing to install: the head (trainable by ``train_head``) is the whole method."""

    @classmethod
    def install(cls, model, config) -> None:
        return None
