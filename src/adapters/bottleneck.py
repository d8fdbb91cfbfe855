"""Bottleneck adapters: ``s · up(act(down(·)))`` beside or after a block's MLP, and RepAdapter.

- ``adapter`` (Houlsby et al. 2019, one adapter per block after the MLP as in the VTAB tables):
  sequential, ``Δh = s · up(act(down(h0)))`` where ``h0`` is the MLP output.
- ``adaptformer`` (Chen et al. 2022): parallel, ``Δh = s · up(relu(down(x)))`` where ``x`` is the
  block's un-normalised stream that also feeds ``norm2 → mlp``; scale 0.1.

Both: ``down [dim, C]`` Kaiming-uniform, ``up [C, dim]`` and both biases zero (identity at init);
not mergeable (the activation sits between the projections). Site: ``sites.block_mlps``, so the
branch is added before the block's layer-scale / drop-path like the MLP output it accompanies.

- ``repadapter`` (Luo et al. 2023): a *linear* sequential adapter before ``attn.qkv`` and
  ``mlp.fc1``: ``x ↦ x + s · (U (D x + b_D) + b_U)`` with ``D [dim, in]`` Xavier, ``U`` grouped
  (``groups`` blocks of ``[in/g, dim/g]``) zero. Seen through the frozen linear that follows,
  ``Δh = s · W0 (U (D x + b_D) + b_U)``; mergeable (``ΔW = s W0 U D``,
  ``Δb = s W0 (U b_D + b_U)``), which is how RepAdapter is deployed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.adapters import sites
from src.adapters.base import AdaptedLinear, BranchModule, register_adapter
from src.adapters.schemas import (
    ACTIVATIONS,
    AdaptFormerConfig,
    BottleneckConfig,
    RepAdapterConfig,
)


class _Bottleneck(BranchModule):
    def __init__(self, base: nn.Sequential, config: BottleneckConfig):
        super().__init__(base)
        channels = _channels(base)
        self.down = nn.Linear(channels, config.dim)
        self.act = getattr(nn, ACTIVATIONS[config.act])()
        self.up = nn.Linear(config.dim, channels)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = float(config.scale)

    def bottleneck(self, t: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(t)))

    @classmethod
    def sites(cls, model, config):
        return sites.block_mlps(model, config)

    def extra_repr(self) -> str:
        return f"dim={self.down.out_features}, scale={self.scale:.4g}"


def _channels(fused_mlp: nn.Sequential) -> int:
    norm = fused_mlp[0]
    return (
        norm.normalized_shape[-1]
        if isinstance(norm, nn.LayerNorm)
        else fused_mlp[1].fc1.in_features
    )


@register_adapter("adapter", config=BottleneckConfig)
class SequentialAdapter(_Bottleneck):
    """``Δh = s · up(act(down(h0)))`` on the MLP output ``h0``."""

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(h0)


@register_adapter("adaptformer", config=AdaptFormerConfig)
class AdaptFormer(_Bottleneck):
    """``Δh = s · up(relu(down(x)))`` on the block's stream ``x``, in parallel with the MLP."""

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(x)


@register_adapter("repadapter", config=RepAdapterConfig)
class RepAdapter(AdaptedLinear):
    def __init__(self, base: nn.Linear, config: RepAdapterConfig):
        super().__init__(base)
        inp, g = base.in_features, config.groups
        self.groups = g
        self.scale = float(config.scale)
        self.down = nn.Parameter(nn.init.xavier_uniform_(torch.empty(config.dim, inp)))
        self.down_bias = nn.Parameter(torch.zeros(config.dim))
        # Grouped 1x1 convolution dim -> in: group i maps inputs i·dim/g.. to outputs i·in/g..
        self.up = nn.Parameter(torch.zeros(inp, config.dim // g))
        self.up_bias = nn.Parameter(torch.zeros(inp))

    def up_matrix(self) -> torch.Tensor:
        """The grouped up-projection as a block-diagonal ``[in, dim]`` matrix."""
        return torch.block_diag(*self.up.chunk(self.groups, dim=0))

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """``s · (U (D x + b_D) + b_U)``, the adapter's addition to the linear's input."""
        return self.scale * F.linear(
            F.linear(x, self.down, self.down_bias), self.up_matrix(), self.up_bias
        )

    def delta_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        w0, up = self.base.weight, self.up_matrix()
        delta_w = self.scale * (w0 @ up @ self.down)
        delta_b = self.scale * (w0 @ (up @ self.down_bias + self.up_bias))
        return delta_w, delta_b

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return F.linear(self.adapter_output(x), self.base.weight)
