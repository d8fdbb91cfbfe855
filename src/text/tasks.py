"""Which metric each GLUE task reports, free of torch (``src.report`` reads it).

GLUE convention (the GLUE paper; LoRA's and PACE's Table 5): Matthews correlation for CoLA,
Pearson and Spearman correlation for STS-B, accuracy and F1 for MRPC, accuracy elsewhere. The
first metric of a task is the one its table reports; MRPC's is accuracy, as in LoRA's RoBERTa
table that PACE's LoRA row reproduces.
"""

from __future__ import annotations

GLUE_METRICS = {
    "cola": ("mcc", "acc"),
    "stsb": ("pearson", "spearman"),
    "mrpc": ("acc", "f1"),
}
DEFAULT_METRICS = ("acc",)


def glue_metric_names(task: str) -> tuple[str, ...]:
    return GLUE_METRICS.get(task, DEFAULT_METRICS)


def main_metric(task: str) -> str:
    """The metric a GLUE table reports for ``task`` (``glue_<task>`` or the bare name)."""
    return glue_metric_names(task.removeprefix("glue_"))[0]
