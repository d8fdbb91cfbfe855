"""Gradient-selected sparse fine-tuning: GRFT (rows/columns) and GPS (top-K per neuron).

Both need one pass over the training data *before* fine-tuning (:func:`gradient_scores`): the
model as built (pre-trained backbone, freshly initialised head) runs in eval mode (no dropout or
drop-path) on every training batch, and the gradient of the cross-entropy with respect to each
target weight ``W0`` is accumulated. The choice is saved with the adapter weights (buffers
``rows``/``cols`` or ``index``) and restored on resume or evaluation without another pass.

- ``grft`` (Liu et al. 2025): per matrix, the sum over batches of squared gradients per row and
  per column. Every row costs ``in`` parameters, every column ``out``; rows and columns are ranked
  together by their score per parameter (mean squared gradient) and taken greedily while they fit
  the budget — ``budget`` × the backbone's parameter count (head excluded), either over all
  matrices at once (``budget_scope: global``) or for each matrix separately (``per_matrix``).
  Rows/columns with a zero score are never taken. Only the selected rows/columns train, as dense
  increments ``Δ_rows [k_r, in]`` and ``Δ_cols [out, k_c]`` (small optimiser state, no masked
  full-size gradients); a weight in both a selected row and column has two increments.
  ``Δh(x) = ΔW x`` with ``ΔW`` those rows/columns (mergeable). The regulariser ``μ‖Δ‖²`` keeping
  the weights near the pre-trained ones enters as its exact gradient ``2μΔ``, added to the
  increments' gradients after each backward pass (so the logged loss stays CE + consistency;
  with gradient accumulation it is added once per micro-batch).
- ``gps`` (Zhang et al. 2024): per output neuron (row), the ``top_k`` weights with the largest
  accumulated ``|gradient|`` train as increments ``values [out, K]`` at ``index [out, K]``, plus an
  increment of each adapted linear's bias. ``Δh(x) = ΔW x + Δb`` (mergeable).

Choices the papers leave open, made here: cross-entropy through the new head as the scoring loss;
eval mode for the pass; per-batch (not per-sample) gradients; scores summed over batches.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from src.adapters.base import (
    AdaptedLinear,
    branch_modules,
    head_parameter_names,
    register_adapter,
)
from src.adapters.schemas import GPSConfig, GRFTConfig


def gradient_scores(
    model: nn.Module,
    loader,
    layers: list[AdaptedLinear],
    statistic: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    desc: str,
) -> list[dict[str, torch.Tensor]]:
    """Sum over ``loader``'s batches of ``statistic(∂CE/∂W0)`` for each layer's frozen weight."""
    was_training = model.training
    model.eval()
    weights = [layer.base.weight for layer in layers]
    for w in weights:
        w.requires_grad_(True)
    device = weights[0].device
    totals: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", file=sys.stderr):
            x, y = batch[0].to(device), batch[1].to(device)
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
            for total, grad in zip(totals, grads, strict=True):
                for key, value in statistic(grad.detach()).items():
                    total[key] = total[key] + value if key in total else value
    finally:
        for w in weights:
            w.requires_grad_(False)
        model.train(was_training)
    return totals


class _Calibrated(AdaptedLinear):
    """A linear whose trainable structure is chosen by a data pass (empty until then)."""

    SELECTION: tuple[str, ...] = ()  # buffer names that hold the choice

    def is_calibrated(self) -> bool:
        return getattr(self, self.SELECTION[0]).numel() > 0

    def restore_selection(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        self.select(*(state[prefix + name] for name in self.SELECTION))

    @classmethod
    def needs_calibration(cls, model: nn.Module) -> bool:
        return any(isinstance(m, cls) and not m.is_calibrated() for _, m in branch_modules(model))

    @classmethod
    def layers(cls, model: nn.Module) -> list[_Calibrated]:
        return [m for _, m in branch_modules(model) if isinstance(m, cls)]

    @staticmethod
    def statistic(grad: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the scoring pass accumulates from one batch's gradient of a weight."""
        raise NotImplementedError

    @classmethod
    def select_by_scores(cls, model: nn.Module, config, scores: list[dict]) -> None:
        raise NotImplementedError

    @classmethod
    def calibrate(cls, model: nn.Module, train_loader, config) -> None:
        layers = cls.layers(model)
        desc = f"{config.name.upper()} scoring"
        scores = gradient_scores(model, train_loader, layers, cls.statistic, desc)
        cls.select_by_scores(model, config, scores)


@register_adapter("grft", config=GRFTConfig)
class GRFT(_Calibrated):
    SELECTION = ("rows", "cols")

    def __init__(self, base: nn.Linear, config: GRFTConfig):
        super().__init__(base)
        self.mu = float(config.mu)
        # The factor the backpropagated loss carries: float16 mixed precision multiplies it by
        # the GradScaler's scale and divides the gradients by it after backward, so the penalty
        # added during backward must carry it too (else it would be divided by ~65,536).
        self.loss_scale = 1.0
        self.select(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))

    def select(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        device = self.base.weight.device
        self.register_buffer("rows", rows.to(device=device, dtype=torch.long))
        self.register_buffer("cols", cols.to(device=device, dtype=torch.long))
        w = self.base.weight
        self.delta_rows = nn.Parameter(w.new_zeros(len(rows), self.in_features))
        self.delta_cols = nn.Parameter(w.new_zeros(self.out_features, len(cols)))
        for p in (self.delta_rows, self.delta_cols):
            p.register_post_accumulate_grad_hook(self._add_penalty_gradient)

    def _add_penalty_gradient(self, param: nn.Parameter) -> None:
        if self.mu:  # ∂(μ‖Δ‖²)/∂Δ, in the scale of the gradient it joins (see set_loss_scale)
            param.grad.add_(param.detach(), alpha=2 * self.mu * self.loss_scale)

    def delta_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.base.weight
        delta_w = torch.zeros_like(w).index_add(0, self.rows, self.delta_rows)
        delta_w = delta_w.index_add(1, self.cols, self.delta_cols)
        return delta_w, w.new_zeros(self.out_features)

    def branch(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(h0).index_add(-1, self.rows, F.linear(x, self.delta_rows))
        return out + F.linear(x.index_select(-1, self.cols), self.delta_cols)

    @staticmethod
    def statistic(grad: torch.Tensor) -> dict[str, torch.Tensor]:
        squared = grad.pow(2)
        return {"rows": squared.sum(1), "cols": squared.sum(0)}

    @classmethod
    def select_by_scores(cls, model, config: GRFTConfig, scores: list[dict]) -> None:
        layers = cls.layers(model)
        head = head_parameter_names(model)
        backbone = sum(
            p.numel()
            for n, p in model.named_parameters()
            if n not in head and not n.endswith(("delta_rows", "delta_cols"))
        )
        # candidates: (score per parameter, cost, layer index, "rows"/"cols", index)
        candidates = []
        for i, (layer, s) in enumerate(zip(layers, scores, strict=True)):
            out, inp = layer.out_features, layer.in_features
            candidates += [(v / inp, inp, i, "rows", j) for j, v in enumerate(s["rows"].tolist())]
            candidates += [(v / out, out, i, "cols", j) for j, v in enumerate(s["cols"].tolist())]
        candidates = sorted((c for c in candidates if c[0] > 0), key=lambda c: -c[0])
        if config.budget_scope == "global":
            shared = [config.budget * backbone]  # one remaining budget that every matrix draws on
            left = [shared] * len(layers)
        else:
            left = [[config.budget * m.base.weight.numel()] for m in layers]
        chosen = {(i, kind): [] for i in range(len(layers)) for kind in ("rows", "cols")}
        for _, cost, i, kind, j in candidates:
            if cost <= left[i][0]:
                left[i][0] -= cost
                chosen[(i, kind)].append(j)
        for i, layer in enumerate(layers):
            layer.select(
                torch.tensor(sorted(chosen[(i, "rows")]), dtype=torch.long),
                torch.tensor(sorted(chosen[(i, "cols")]), dtype=torch.long),
            )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rows={len(self.rows)}, cols={len(self.cols)}"


@register_adapter("gps", config=GPSConfig)
class GPS(_Calibrated):
    SELECTION = ("index",)

    def __init__(self, base: nn.Linear, config: GPSConfig):
        super().__init__(base)
        self.delta_bias = nn.Parameter(base.weight.new_zeros(base.out_features))
        self.select(torch.zeros(base.out_features, 0, dtype=torch.long))

    def select(self, index: torch.Tensor) -> None:
        w = self.base.weight
        self.register_buffer("index", index.to(device=w.device, dtype=torch.long))
        self.values = nn.Parameter(w.new_zeros(index.shape))

    def is_calibrated(self) -> bool:
        return self.index.shape[1] > 0

    def delta_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(self.base.weight).scatter(
            1, self.index, self.values
        ), self.delta_bias

    @staticmethod
    def statistic(grad: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"abs": grad.abs()}

    @classmethod
    def select_by_scores(cls, model: nn.Module, config: GPSConfig, scores: list[dict]) -> None:
        for layer, s in zip(cls.layers(model), scores, strict=True):
            k = min(config.top_k, layer.in_features)
            layer.select(s["abs"].topk(k, dim=1).indices.sort(dim=1).values)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, top_k={self.index.shape[1]}"


def set_loss_scale(model: nn.Module, scale: float) -> None:
    """Tell the layers that add a gradient during backward (GRFT's penalty) the loss's scale."""
    for _, module in branch_modules(model):
        if isinstance(module, GRFT):
            module.loss_scale = float(scale)
