"""Visual prompt tuning (Jia et al. 2022): ``n`` learned tokens inserted after the prefix tokens.

- ``vpt_deep``: before every block k its own prompts ``P_k [n, C]`` are inserted, and the block's
  outputs at those positions are dropped after it — the "replace before every block" of VPT-Deep.
- ``vpt_shallow``: ``P_0`` is inserted before block 0 and travels through every block; the prompt
  positions are dropped after the last block, so pooling and the head see the usual tokens.

``Δh`` is the prompt tokens themselves: PACE multiplies them by ``z ⊙ P_k`` (one ``z`` per sample
and channel). Under the ViT σ schedule block 0 has σ = 0, so shallow prompts are never perturbed.
Initialisation as in VPT: uniform ±√(6 / (3·p² + C)) for patch size p — not the pre-trained
model at init (prompts change attention), and not mergeable. ViT family only: Swin's shifted
windows have no place for free tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from src.adapters.base import BranchModule, register_adapter
from src.adapters.schemas import VPTConfig
from src.adapters.sites import backbone_architecture, replace_module, selected_blocks
from src.errors import UserError


class PromptedBlock(BranchModule):
    """A block with prompt tokens inserted before it and/or stripped after it."""

    identity_at_init = False

    def __init__(self, block: nn.Module, prompts: nn.Parameter | None, num_prefix: int, strip: int):
        super().__init__(block)
        self.prompts = prompts
        self.num_prefix = num_prefix
        self.strip = strip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.branch_enabled:
            return self.base(x)
        if self.prompts is not None:
            p = self.prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
            noise = self.branch_noise
            if noise is not None and noise.is_active():
                p = noise(p)
            x = torch.cat([x[:, : self.num_prefix], p, x[:, self.num_prefix :]], dim=1)
        x = self.base(x)
        if self.strip:
            x = torch.cat([x[:, : self.num_prefix], x[:, self.num_prefix + self.strip :]], dim=1)
        return x

    def extra_repr(self) -> str:
        n = 0 if self.prompts is None else self.prompts.shape[0]
        return f"prompts={n}, strip={self.strip}"

    @classmethod
    def install(cls, model: nn.Module, config: VPTConfig) -> None:
        if backbone_architecture(model) != "vit":
            raise UserError(
                f"adapter '{config.name}' needs a ViT-style backbone (model.blocks); "
                f"{type(model).__name__} is not one"
            )
        chosen = selected_blocks(model, config)
        if cls.DEEP:
            plan = {k: (True, config.num_tokens) for k, _ in chosen}
        else:  # shallow: prompts enter before the first chosen block and leave after the last
            plan = {chosen[0][0]: (True, 0)}
            last = len(model.blocks) - 1
            plan[last] = (plan.get(last, (False, 0))[0], config.num_tokens)
        patch = model.patch_embed.patch_size
        dim = model.embed_dim
        bound = math.sqrt(6.0 / (3 * math.prod(patch) + dim))
        for k, (insert, strip) in plan.items():
            prompts = None
            if insert:
                prompts = nn.Parameter(torch.empty(config.num_tokens, dim).uniform_(-bound, bound))
            block = cls(model.blocks[k], prompts, model.num_prefix_tokens, strip)
            replace_module(model, f"blocks.{k}", block)


@register_adapter("vpt_deep", config=VPTConfig)
class VPTDeep(PromptedBlock):
    DEEP = True


@register_adapter("vpt_shallow", config=VPTConfig)
class VPTShallow(PromptedBlock):
    DEEP = False
