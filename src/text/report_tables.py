"""``src.report``'s text tables: GLUE (the paper's Table 5) and GSM-8K (Table 6), paper rows beside.

A GLUE cell is the task's reported metric × 100 (Matthews correlation for CoLA, Pearson for STS-B,
accuracy for the others, see ``src.text.metrics``) on dev under ``final``; a GSM-8K cell is the
exact-match accuracy in %. Under ``tune`` the numbers are the held-out part of train.
"""

from __future__ import annotations

from src.text.tasks import main_metric

GLUE_COLUMNS = ["cola", "stsb", "mrpc", "rte", "qnli", "sst2"]
# Ni et al., PACE (NeurIPS 2024), Table 5 (RoBERTa-base) and Table 6 (Phi-3-mini).
PAPER_GLUE = {
    "LoRA": [63.4, 91.5, 89.7, 86.6, 93.3, 95.1],
    "+PACE": [66.2, 92.0, 91.4, 86.9, 93.6, 95.6],
}
PAPER_GLUE_AVERAGE = {"LoRA": 86.6, "+PACE": 87.6}
PAPER_GSM8K = {"pre-trained": 62.01, "full fine-tuning": 73.16, "LoRA": 75.66, "+PACE": 78.77}


def text_scores(benchmark: str, task: str, protocol: str, metrics: dict) -> dict[str, float]:
    """{"acc": score in %} of a text run, or {} when it has none."""
    if benchmark == "gsm8k":
        key = "test/exact_match"
    else:
        key = f"{'val' if protocol == 'tune' else 'test'}/{main_metric(task)}"
    return {"acc": 100 * metrics[key]} if key in metrics else {}


def glue_table(runs, protocol: str):
    from src.report import Table, _cells, _mean, _num, _records
    from src.runs import labels_for

    cells = _cells(runs, lambda run: {run.task: run.scores()["acc"]} if run.scores() else {})
    labels = labels_for(list(cells))
    columns = [*GLUE_COLUMNS, "average"]
    rows, records = [], []
    for key, by_task in cells.items():
        average = _mean([by_task[t].mean for t in GLUE_COLUMNS])
        rows.append((labels[key], [by_task[t].text() for t in GLUE_COLUMNS] + [_num(average)]))
        records += [_records("glue", protocol, labels[key], t, by_task[t]) for t in GLUE_COLUMNS]
        records.append(_records("glue", protocol, labels[key], "average", average))
    for name, values in PAPER_GLUE.items():
        texts = [f"{v:.1f}" for v in values] + [f"{PAPER_GLUE_AVERAGE[name]:.1f}"]
        rows.append((f"paper: {name} (RoBERTa-base)", texts))
    what = "MCC (cola), Pearson (stsb), accuracy (others) × 100"
    if protocol == "tune":
        title = f"GLUE — TUNE protocol: {what} on the held-out tenth of train; not reportable"
    else:
        title = f"GLUE — final protocol: {what} on dev at the last epoch, mean ± std over seeds"
    return Table(title, columns, rows, records)


def gsm8k_table(runs, protocol: str):
    from src.report import Table, _cells, _records
    from src.runs import labels_for

    cells = _cells(runs, lambda run: {"exact match %": run.scores()["acc"]} if run.scores() else {})
    labels = labels_for(list(cells))
    rows, records = [], []
    for key, by_column in cells.items():
        rows.append((labels[key], [by_column["exact match %"].text()]))
        records.append(
            _records("gsm8k", protocol, labels[key], "exact match", by_column["exact match %"])
        )
    for name, value in PAPER_GSM8K.items():
        rows.append((f"paper: {name} (Phi-3-mini)", [f"{value:.2f}"]))
    where = "the held-out 5 % of train" if protocol == "tune" else "test"
    title = (
        f"GSM-8K — {protocol} protocol: exact match of the final number after greedy "
        f"generation, on {where}, mean ± std over seeds"
    )
    return Table(title, ["exact match %"], rows, records)
