"""Text tasks' losses and PACE's consistency distance on their outputs (docs/text.md).

- ``classification`` (GLUE but STS-B): cross-entropy; distance ``‖f1 − f2‖²`` of the logits, mean
  over samples — exactly the vision objective.
- ``regression`` (STS-B): MSE between the one output and the score; distance ``(f1 − f2)²``.
- ``causal_lm`` (GSM-8K): next-token cross-entropy on the answer tokens only (``targets`` holds the
  token ids at answer positions and ``IGNORE`` elsewhere); distance: the mean over the answer
  positions of the squared L2 distance between the two copies' full-vocabulary logit vectors at
  that position. Logits rather than log-probabilities, as for classification: the penalty is the
  paper's ``‖f1 − f2‖²`` on the network's output, computed on the very positions the loss trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from src.pace.consistency import Objective, full_precision, squared_distance

IGNORE = -100  # label of a position that is not an answer token (prompt, padding)


class Classification(Objective):
    pass


class Regression(Objective):
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # float32 under mixed precision, as every loss term (src/pace/consistency.py)
        prediction = full_precision(outputs[:, 0])
        return F.mse_loss(prediction, targets.to(prediction.dtype))

    def distance(self, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return squared_distance(a, b)


def next_token_view(logits: torch.Tensor, labels: torch.Tensor):
    """Logits at positions 0..T-2 and the tokens they predict (labels shifted by one)."""
    return logits[:, :-1], labels[:, 1:]


class CausalLM(Objective):
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, labels = next_token_view(outputs, targets)
        flat = full_precision(logits).reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE)

    def distance(self, a: torch.Tensor, b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        a, labels = next_token_view(a, targets)
        b, _ = next_token_view(b, targets)
        answer = labels != IGNORE
        per_position = (full_precision(a) - full_precision(b)).pow(2).sum(dim=-1)
        return (per_position * answer).sum() / answer.sum().clamp(min=1)


OBJECTIVES = {
    "classification": Classification,
    "regression": Regression,
    "causal_lm": CausalLM,
}


def make_objective(name: str) -> Objective:
    return OBJECTIVES[name]()
