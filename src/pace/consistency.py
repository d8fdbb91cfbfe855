"""The training objectives: plain CE and the PACE paper's three consistency losses.

Each regulariser maps a batch ``(x, y, index)`` to :class:`LossParts`. ``f(x; z)`` below is the
model's logits under fresh branch noise ``z``; the noise itself lives on the model (``noise.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from src.errors import check_choice
from src.pace.droppath import paired_batch
from src.pace.twin import twin_forward

HISTORY_INITS = ("unseen", "zeros")
# PACE-fast's history of every training sample's last logits (see FastPACE.prepare).
HISTORY_DTYPE = torch.float32


@dataclass
class LossParts:
    loss: torch.Tensor
    ce: torch.Tensor
    consistency: torch.Tensor
    logits: torch.Tensor  # logits of the samples the CE was computed on
    targets: torch.Tensor


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (unchanged when it already is).

    Under mixed precision the logits come out of the head in bf16/fp16; the loss terms are
    computed from them in float32 — the difference of two nearly equal logit vectors and its sum
    of squares over the classes would otherwise be rounded to 8 (bf16) or 11 (fp16) bits, and
    fp16 squares overflow above 256. Autocast does this for the CE by itself; the consistency
    terms are plain arithmetic, which autocast runs in their inputs' dtype.
    """
    return t.to(torch.promote_types(t.dtype, torch.float32))


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the squared L2 distance between logit vectors, in float32 or wider."""
    return (full_precision(a) - full_precision(b)).pow(2).sum(dim=-1).mean()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The CE in float32 or wider, also outside autocast (e.g. a model cast to bf16)."""
    return F.cross_entropy(full_precision(logits), y)


class Objective:
    """What the outputs are trained on (the task loss, logged as ``ce``) and PACE's distance
    between two copies' outputs. The default is image classification: cross-entropy and
    ``squared_distance`` of the logits; text tasks (regression, causal LM) subclass it in
    ``src/text/objectives.py``."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(outputs, targets)

    def distance(self, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return squared_distance(a, b)


class Regulariser(nn.Module):
    """Baseline objective: one pass, cross-entropy only (``pace=none``)."""

    def __init__(self, lam: float = 0.0, objective: Objective | None = None):
        super().__init__()
        self.lam = float(lam)
        self.objective = objective or Objective()

    def forward(self, model, x, y, index, step: int) -> LossParts:
        logits = model(x)
        ce = self.objective.loss(logits, y)
        return LossParts(ce, ce, ce.new_zeros(()), logits, y)

    def prepare(self, num_train: int, num_classes: int) -> None:
        """Called once the training-set size is known (before a checkpoint is restored)."""


class PACE(Regulariser):
    """``CE(f1, y) + λ‖f1 − f2‖²`` from one forward of ``[x; x]`` with shared drop-path masks.

    ``share_prefix``: compute the layers before the first noise once for both copies
    (``src/pace/twin.py``); False runs the whole network on ``[x; x]`` (the test oracle).
    """

    def __init__(self, lam: float = 0.0, share_prefix: bool = True, objective=None):
        super().__init__(lam, objective)
        self.share_prefix = share_prefix

    def pace_loss(self, model, x, y) -> LossParts:
        if self.share_prefix:
            f1, f2 = twin_forward(model, x).chunk(2)
        else:
            with paired_batch(model):
                f1, f2 = model(torch.cat([x, x])).chunk(2)
        ce = self.objective.loss(f1, y)
        consistency = self.objective.distance(f1, f2, y)
        return LossParts(ce + self.lam * consistency, ce, consistency, f1, y)

    def forward(self, model, x, y, index, step: int) -> LossParts:
        return self.pace_loss(model, x, y)


class LazyPACE(PACE):
    """Every ``interval``-th step, full PACE on the first half of the batch; else one noisy pass."""

    def __init__(self, lam: float, interval: int = 2, share_prefix: bool = True, objective=None):
        super().__init__(lam, share_prefix, objective)
        if interval < 1:
            raise ValueError(f"lazy interval must be >= 1, got {interval}")
        self.interval = int(interval)

    def forward(self, model, x, y, index, step: int) -> LossParts:
        if step % self.interval == 0:
            half = max(1, x.shape[0] // 2)
            return self.pace_loss(model, x[:half], y[:half])
        return super(PACE, self).forward(model, x, y, index, step)


def _gather_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, so every rank's history buffer sees every visited sample."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


class FastPACE(Regulariser):
    """One noisy pass; consistency with the logits the same sample had on its previous visit.

    ``history[i]`` holds sample ``i``'s last logits. ``history_init`` decides what a first visit
    compares against (docs/recipe.md): ``unseen`` (the project's) — nothing, the sample adds no
    consistency term; ``zeros`` (the official code's) — a zero vector, so the first visit's term
    is ‖f(x)‖² and epoch 1 pulls logits toward 0. Both are one rule: ``seen`` starts all-False
    or all-True. The term is averaged over the whole batch, so unseen samples count as zero.
    """

    def __init__(self, lam: float, history_init: str = "unseen", objective=None):
        super().__init__(lam, objective)
        check_choice("recipe.fast_history_init", history_init, HISTORY_INITS)
        self.history_init = history_init
        self.register_buffer("history", torch.zeros(0, 0))
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))

    def prepare(self, num_train: int, num_classes: int) -> None:
        if self.history.shape != (num_train, num_classes):
            device = self.history.device
            # float32 in every training precision: autocast never casts buffers, and the logits
            # (bf16/fp16 under mixed precision) are widened when stored, so nothing rounds twice.
            self.history = torch.zeros(num_train, num_classes, device=device, dtype=HISTORY_DTYPE)
            first_visit_counts = self.history_init == "zeros"
            self.seen = torch.full((num_train,), first_visit_counts, device=device)

    def forward(self, model, x, y, index, step: int) -> LossParts:
        if self.history.numel() == 0:
            raise RuntimeError("FastPACE.prepare(num_train, num_classes) was not called")
        logits = model(x)
        ce = self.objective.loss(logits, y)
        seen = self.seen[index]
        diff = (full_precision(logits) - self.history[index]).pow(2).sum(dim=-1)
        consistency = (diff * seen).sum() / x.shape[0]
        with torch.no_grad():
            all_index = _gather_across_ranks(index)
            # Widened before the gather: it also keeps bf16 out of collectives (gloo has none).
            rows = _gather_across_ranks(logits.detach().to(self.history.dtype))
            self.history[all_index] = rows
            self.seen[all_index] = True
        return LossParts(ce + self.lam * consistency, ce, consistency, logits, y)
