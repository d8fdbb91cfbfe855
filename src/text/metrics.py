"""GLUE's metrics per task (torchmetrics; which ones: ``src.text.tasks``) and GSM-8K's exact
match of the final number."""

from __future__ import annotations

import re

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassMatthewsCorrCoef,
)
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from src.text.tasks import glue_metric_names, main_metric  # noqa: F401  (main_metric re-exported)


def make_metric(name: str, num_classes: int) -> Metric:
    if name == "acc":
        return MulticlassAccuracy(num_classes, average="micro")
    if name == "mcc":
        return MulticlassMatthewsCorrCoef(num_classes)
    if name == "f1":
        return BinaryF1Score()
    if name == "pearson":
        return PearsonCorrCoef()
    if name == "spearman":
        return SpearmanCorrCoef()
    raise ValueError(f"unknown metric {name}")


def metric_inputs(name: str, outputs: torch.Tensor) -> torch.Tensor:
    """What metric ``name`` takes from the head's outputs: logits, class ids, or the value."""
    if name in ("pearson", "spearman"):
        return outputs[:, 0].float()
    if name == "f1":
        return outputs.argmax(dim=-1)
    return outputs


class GlueMetrics(nn.Module):
    """One stage's GLUE metrics of a task, logged as ``<stage>/<name>``."""

    def __init__(self, task: str, num_classes: int):
        super().__init__()
        self.names = glue_metric_names(task)
        self.metrics = nn.ModuleDict({n: make_metric(n, max(num_classes, 2)) for n in self.names})

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        for name, metric in self.metrics.items():
            metric.update(metric_inputs(name, outputs.detach()), targets)


# ---------------------------------------------------------------- GSM-8K

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def normalise_number(text: str) -> str | None:
    """``'1,234.50'`` → ``'1234.5'``, ``'$7'`` → ``'7'``, ``'3.0'`` → ``'3'``; None if no number."""
    match = _NUMBER.search(text.replace(" ", "")) if text else None
    if match is None:
        return None
    raw = match.group(0).replace(",", "").replace("$", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    if value == int(value):
        return str(int(value))
    return repr(value)


def final_number(text: str) -> str | None:
    """The answer a GSM-8K solution gives: the number after the last ``####``; a generation
    without ``####`` gives its last number (docs/text.md)."""
    if "####" in text:
        return normalise_number(text.rsplit("####", 1)[1].strip().split("\n")[0])
    numbers = _NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


class ExactMatch(MeanMetric):
    """Share of generations whose final number equals the reference's (GSM-8K accuracy)."""

    def update_texts(self, generated: list[str], references: list[str]) -> None:
        hits = [
            float(final_number(g) is not None and final_number(g) == final_number(r))
            for g, r in zip(generated, references, strict=True)
        ]
        self.update(torch.tensor(hits), weight=1.0)
