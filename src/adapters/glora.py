"""GLoRA (Chavan et al. 2023, eq. 10) and the paper's adapters, which are fixed GLoRA paths.

For a frozen linear ``W0 [out, in]``, ``b0 [out]``::

    W' = W0 + W0 ⊙ A + B          b' = b0 + b0 ⊙ D + E + W0 · C

so ``Δh(x) = x · (W0 ⊙ A + B)ᵀ + b0 ⊙ D + E + W0 · C`` (mergeable). Each path is one of
``lora`` (a rank-r product), ``vector``, ``scalar`` or ``none``; D and E are vectors at most.
Shapes: A, B ``[out, in]`` (lora ``d [out, r] · u [r, in]``, vector ``[out, 1]``); C ``[in, 1]``
(lora ``d [in, r] · u [r, 1]``, vector ``[in, 1]``); D, E ``[out]`` (vector) or ``[1]``.
Initialisation: the ``d`` factor of a LoRA pair is 0 and its ``u`` Xavier-uniform; vectors and
scalars are 0 — so every GLoRA model equals the pre-trained one at init.

The PACE paper's baseline and its two ablations are GLoRA paths (their parameters keep the
paper's names D_W, U_W, D_P, U_P, δb, so saved adapters stay loadable):
``lora_mul_vpt_add`` = A lora, C lora, D vector; ``lora_add`` = B lora, E vector;
``vpt_add`` = C lora.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.adapters.base import AdaptedLinear, register_adapter
from src.adapters.schemas import GLORA_PATHS as PATHS
from src.adapters.schemas import GLoRAConfig, RankConfig


def _zeros(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape))


def _xavier(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(*shape)))


@register_adapter("glora", config=GLoRAConfig)
class GLoRA(AdaptedLinear):
    """``Δh(x) = x · (W0 ⊙ A + B)ᵀ + b0 ⊙ D + E + W0 · C`` with the configured paths."""

    # Parameter names: ``d_<path>``, ``u_<path>`` (LoRA factors) or ``<path>``, unless renamed.
    NAMES: dict[str, str] = {}

    def __init__(self, base: nn.Linear, config: RankConfig):
        super().__init__(base)
        self.paths = self.path_kinds(config)
        out, inp, r = base.out_features, base.in_features, config.rank
        # (rows of the lora d factor / of a vector, columns of the lora u factor)
        shapes = {"a": (out, inp), "b": (out, inp), "c": (inp, 1)}
        # Creation order d_a, u_a, d_b, … keeps the random stream identical across presets.
        for path in PATHS:
            kind = self.paths[path]
            if kind == "lora":
                rows, cols = shapes[path]
                setattr(self, self.NAMES.get(f"d_{path}", f"d_{path}"), _zeros(rows, r))
                setattr(self, self.NAMES.get(f"u_{path}", f"u_{path}"), _xavier(r, cols))
            elif kind == "vector":
                shape = (shapes[path][0], 1) if path in "abc" else (out,)
                setattr(self, self.NAMES.get(path, path), _zeros(*shape))
            elif kind == "scalar":
                setattr(self, self.NAMES.get(path, path), _zeros(1))

    @classmethod
    def path_kinds(cls, config: RankConfig) -> dict[str, str]:
        return {p: getattr(config, p) for p in PATHS}

    def path(self, name: str) -> torch.Tensor | None:
        kind = self.paths[name]
        if kind == "none":
            return None
        if kind == "lora":
            return self.param(f"d_{name}") @ self.param(f"u_{name}")
        return self.param(name)

    def param(self, generic: str) -> nn.Parameter:
        return getattr(self, self.NAMES.get(generic, generic))

    def delta_weight(self) -> torch.Tensor:
        # Only the terms present: every step builds this [out, in] tensor (merged and noisy
        # passes alike), so a zero-filled start and an extra add are measurable.
        w0 = self.base.weight
        a, b = self.path("a"), self.path("b")
        if a is None and b is None:
            return torch.zeros_like(w0)
        if a is None:
            return b.expand_as(w0)
        delta_w = w0 * a
        return delta_w if b is None else delta_w + b

    def delta_bias(self) -> torch.Tensor:
        w0, b0 = self.base.weight, self.base_bias()
        c, d, e = self.path("c"), self.path("d"), self.path("e")
        delta_b = torch.zeros_like(b0)
        if c is not None:
            delta_b = delta_b + (w0 @ c.expand(w0.shape[1], 1)).squeeze(-1)
        if d is not None:
            delta_b = delta_b + b0 * d
        if e is not None:
            delta_b = delta_b + e
        return delta_b

    def delta_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.delta_weight(), self.delta_bias()

    def dense_delta(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        cheap = self.paths["a"] == "none" and self.paths["b"] in ("none", "lora")
        return None if cheap else self.delta_weight_and_bias()

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        if self.paths["a"] == "none" and self.paths["b"] == "none":
            return self.delta_bias()  # input-independent: a bias shift that broadcasts
        if self.paths["a"] == "none" and self.paths["b"] == "lora":
            # Two thin matmuls instead of forming the full [out, in] product D_B U_B.
            return F.linear(F.linear(x, self.param("u_b")), self.param("d_b"), self.delta_bias())
        return super().branch(x, h0)

    def extra_repr(self) -> str:
        chosen = ", ".join(f"{p}={k}" for p, k in self.paths.items() if k != "none")
        return f"{super().extra_repr()}, {chosen}"


class _Preset(GLoRA):
    """A GLoRA path fixed by the method; its config only has ``rank`` and ``targets``."""

    PRESET: dict[str, str] = {}

    @classmethod
    def path_kinds(cls, config: RankConfig) -> dict[str, str]:
        return {p: cls.PRESET.get(p, "none") for p in PATHS}


@register_adapter("lora_mul_vpt_add", config=RankConfig)
class LoRAMulVPTAdd(_Preset):
    """``Δh(x) = x · (W0 ⊙ D_A U_A)ᵀ + W0 · (D_C U_C) + b0 ⊙ d`` — the PACE paper's baseline."""

    PRESET = {"a": "lora", "c": "lora", "d": "vector"}
    NAMES = {"d_a": "d_w", "u_a": "u_w", "d_c": "d_p", "u_c": "u_p", "d": "delta_b"}


@register_adapter("lora_add", config=RankConfig)
class LoRAAdd(_Preset):
    """``Δh(x) = D_B (U_B x) + e``."""

    PRESET = {"b": "lora", "e": "vector"}
    NAMES = {"d_b": "d_w", "u_b": "u_w", "e": "delta_b"}


@register_adapter("vpt_add", config=RankConfig)
class VPTAdd(_Preset):
    """``Δh = W0 · (D_C U_C)``: a learned additive input prompt seen through W0 (a bias shift)."""

    PRESET = {"c": "lora"}
    NAMES = {"d_c": "d_p", "u_c": "u_p"}
