"""Channel-wise scale and shift of a module's output: SSF and BitFit.

- ``ssf`` (Lian et al. 2022): ``γ ⊙ h0 + β`` after the patch embedding, every block norm and
  linear (``targets``), and the final norm; γ ~ N(1, std²), β ~ N(0, std²) with std 0.02 — so the
  model is *not* the pre-trained one at init. ``Δh = (γ − 1) ⊙ h0 + β``.
- ``bitfit`` (Zaken et al. 2022): every bias of the backbone trains. Each Linear/LayerNorm bias
  ``b`` becomes ``b + δ`` with ``δ`` init 0: ``Δh = δ`` (a bias shift). The patch embedding's
  convolution bias gets the same ``+ δ`` as a :class:`ParameterDelta`, without noise (its output
  is not channel-last; under the ViT schedule block 0's σ is 0 anyway).

Mergeable into Linear and LayerNorm sites (``W ← γ ⊙ W``, ``b ← γ ⊙ b + β``); the patch-embedding
site of SSF runs as two paths.
"""

from __future__ import annotations

import torch
from torch import nn

from src.adapters import sites
from src.adapters.base import BranchModule, ParameterDelta, register_adapter
from src.adapters.schemas import AdapterConfig, SSFConfig


def _channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    return module.proj.out_channels  # timm PatchEmbed (output [B, N, C] or [B, H, W, C])


class ScaleShift(BranchModule):
    """``Δh = (γ − 1) ⊙ h0 + β`` over the last (channel) dimension; γ only when ``scaled``."""

    scaled = True

    def __init__(self, base: nn.Module, config: AdapterConfig):
        super().__init__(base)
        c = _channels(base)
        std = getattr(config, "init_std", 0.0)
        if self.scaled:
            self.gamma = nn.Parameter(torch.empty(c).normal_(1.0, std))
        self.beta = nn.Parameter(torch.empty(c).normal_(0.0, std) if std else torch.zeros(c))
        self.mergeable = (
            isinstance(base, nn.Linear | nn.LayerNorm)
            and getattr(base, "weight", None) is not None
            and base.bias is not None
        )

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return (self.gamma - 1) * h0 + self.beta if self.scaled else self.beta

    def merged_delta(self) -> dict[str, torch.Tensor]:
        if not self.scaled:
            return {"bias": self.beta}
        g = self.gamma - 1
        w = self.base.weight
        return {
            "weight": (g[:, None] if w.dim() == 2 else g) * w,
            "bias": g * self.base.bias + self.beta,
        }


@register_adapter("ssf", config=SSFConfig)
class SSF(ScaleShift):
    identity_at_init = False

    @classmethod
    def sites(cls, model, config):
        return (
            sites.embed(model)
            + sites.block_linears(model, config)
            + sites.block_norms(model, config)
            + sites.final_norm(model)
        )


@register_adapter("bitfit", config=AdapterConfig)
class BitFit(ScaleShift):
    scaled = False

    @classmethod
    def sites(cls, model, config):
        leaves = sites.backbone_leaves(model, config, (nn.Linear, nn.LayerNorm))
        return [(n, m) for n, m in leaves if getattr(m, "bias", None) is not None]

    @classmethod
    def install(cls, model, config) -> None:
        super().install(model, config)
        head = sites.head_module_ids(model)
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None and id(m) not in head:
                ParameterDelta.install(m, "bias")
