"""The paper's tables from finished runs, with the published rows beside them.

    python -m src.report logs/train/multiruns/<time> [more folders…]
    python -m src.report logs/vtab --markdown vtab.md --csv vtab.csv

Reads every ``results.json`` (and the run's resolved ``config.yaml``) below the given folders.
Runs are grouped by the keys of their resolved config that decide the result
(``src/run/keys.py``): seeds and few-shot draws are averaged over, paths, loggers, workers and
threads are left out, and runs differing in anything else (backbone, epochs, batch or image size,
rank, devices …) are never averaged as if they were seeds. Per benchmark:

- VTAB-1k: the 19 tasks, the three group means, the mean of the group means (the PACE, GLoRA
  and NOAH papers' "Mean Acc.") and the mean of the 19 tasks (V-PETL Bench's) — both labelled;
- FGVC: five datasets and their mean; few-shot: dataset x shots (over split seeds) and the mean
  of the five datasets; domain shift: each test set and their mean;
- anything else (e.g. the demo task): one row per configuration.

Cells are mean ± std over seeds. A missing task is printed as missing, and a mean over it is
not computed. Protocol guard: a number is final only from ``data.protocol=final`` at the last
epoch; ``tune`` runs get their own tables, titled as such; runs that stopped early are skipped
and listed. Nothing here picks a best value, least of all by test accuracy.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from src.cli.entry import report_user_errors
from src.data.tables import (
    DOMAIN_TEST_SETS,
    FEWSHOT_TASKS,
    FGVC_TASKS,
    SHOTS,
    VTAB_GROUPS,
    VTAB_TASKS,
)
from src.runs import COLUMN_KEYS, Run, labels_for, load_runs, row_key
from src.text.report_tables import glue_table, gsm8k_table

# The published numbers (Ni et al., PACE, NeurIPS 2024).
PAPER_VTAB = {
    "baseline": [74.9, 93.3, 72.0, 99.4, 91.0, 91.5, 54.8, 83.2, 95.7, 86.9, 74.2,
                 83.0, 70.5, 51.9, 81.4, 77.9, 51.7, 33.6, 44.4],
    "+PACE": [79.0, 94.2, 73.6, 99.4, 92.4, 93.7, 58.0, 87.4, 96.4, 89.3, 77.1,
              84.9, 70.9, 54.9, 84.3, 84.7, 57.3, 39.3, 44.8],
}  # fmt: skip
PAPER_FGVC_MEAN = {"baseline": 90.8, "+PACE": 91.5}
PAPER_FEWSHOT_MEAN = {  # 1, 2, 4, 8, 16 shots
    "baseline": [43.0, 53.5, 62.6, 73.2, 81.2],
    "+PACE": [46.2, 55.3, 63.9, 73.9, 81.9],
}
PAPER_DOMAIN = {"baseline": {"mean": 44.8}, "+PACE": {
    "imagenet": 79.0, "v2": 69.4, "sketch": 31.8, "a": 16.3, "r": 35.2, "mean": 46.3}}  # fmt: skip


# -------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    values: list[float]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        if not self.values:
            return "missing"
        return f"{self.mean:.2f} ± {self.std:.2f}" if len(self.values) > 1 else f"{self.mean:.2f}"


def _mean(values: list[float | None]) -> float | None:
    """A mean only over complete inputs: one missing value makes the mean missing."""
    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    records: list[dict]  # long form for the CSV

    def markdown(self) -> str:
        header = "| configuration | " + " | ".join(self.columns) + " |"
        rule = "|---" * (len(self.columns) + 1) + "|"
        body = ["| " + label + " | " + " | ".join(cells) + " |" for label, cells in self.rows]
        return f"### {self.title}\n\n" + "\n".join([header, rule, *body]) + "\n"


def _title(name: str, protocol: str, what: str) -> str:
    if protocol == "tune":
        return (
            f"{name} — TUNE protocol: {what} on the validation split, for choosing "
            f"hyper-parameters; not a reportable result"
        )
    return f"{name} — final protocol: test accuracy (%) at the last epoch, mean ± std over seeds"


def _cells(runs: list[Run], column_of) -> dict[tuple, dict[str, Cell]]:
    """row key -> column -> Cell of every run's score for that column."""
    table: dict[tuple, dict[str, Cell]] = defaultdict(lambda: defaultdict(lambda: Cell([])))
    for run in runs:
        for column, value in column_of(run).items():
            table[row_key(run)][column].values.append(value)
    return table


def _records(benchmark, protocol, label, column, cell_or_value) -> dict:
    if isinstance(cell_or_value, Cell):
        c = cell_or_value
        return {"benchmark": benchmark, "protocol": protocol, "configuration": label,
                "column": column, "mean": c.mean, "std": c.std if c.values else None,
                "n": len(c.values)}  # fmt: skip
    return {"benchmark": benchmark, "protocol": protocol, "configuration": label,
            "column": column, "mean": cell_or_value, "std": None, "n": None}  # fmt: skip


def vtab_table(runs: list[Run], protocol: str) -> Table:
    tasks = list(VTAB_TASKS)
    groups = list(VTAB_GROUPS)
    means = [*groups, "mean of group means", "mean of 19 tasks"]
    columns = tasks + means
    cells = _cells(runs, lambda run: {run.task: run.scores()["acc"]} if run.scores() else {})
    labels = labels_for(list(cells))
    rows, records = [], []

    def add(label: str, per_task: dict[str, float | None], texts: list[str]) -> None:
        group_means = [_mean([per_task[t] for t in VTAB_GROUPS[g]]) for g in groups]
        derived = group_means + [_mean(group_means), _mean([per_task[t] for t in tasks])]
        rows.append((label, texts + [_num(v) for v in derived]))
        records.extend(
            _records("vtab", protocol, label, c, v) for c, v in zip(means, derived, strict=True)
        )

    for key, by_task in cells.items():
        label = labels[key]
        add(label, {t: by_task[t].mean for t in tasks}, [by_task[t].text() for t in tasks])
        records.extend(_records("vtab", protocol, label, t, by_task[t]) for t in tasks)
    for name, values in PAPER_VTAB.items():
        add(f"paper: {name}", dict(zip(tasks, values, strict=True)), [f"{v:.1f}" for v in values])
    return Table(_title("VTAB-1k", protocol, "accuracy"), columns, rows, records)


def fgvc_table(runs: list[Run], protocol: str) -> Table:
    tasks = list(FGVC_TASKS)
    cells = _cells(runs, lambda run: {run.task: run.scores()["acc"]} if run.scores() else {})
    labels = labels_for(list(cells))
    rows, records = [], []
    for key, by_task in cells.items():
        mean = _mean([by_task[t].mean for t in tasks])
        rows.append((labels[key], [by_task[t].text() for t in tasks] + [_num(mean)]))
        records += [_records("fgvc", protocol, labels[key], t, by_task[t]) for t in tasks]
        records.append(_records("fgvc", protocol, labels[key], "mean", mean))
    for name, mean in PAPER_FGVC_MEAN.items():
        rows.append((f"paper: {name}", ["—"] * len(tasks) + [f"{mean:.1f}"]))
    return Table(_title("FGVC", protocol, "accuracy"), tasks + ["mean"], rows, records)


def fewshot_table(runs: list[Run], protocol: str) -> Table:
    """Rows: configuration x dataset, plus the mean of the paper's five datasets; columns: shots."""
    present = sorted({run.task for run in runs}, key=lambda t: (t not in FEWSHOT_TASKS, t))
    paper_tasks = set(present) & set(FEWSHOT_TASKS)  # custom tasks alone get no paper rows
    columns = [f"{k}-shot" for k in SHOTS]

    def column_of(run: Run) -> dict[str, float]:
        shots = run.config.get("data.shots")
        return {f"{run.task}|{shots}-shot": run.scores()["acc"]} if run.scores() else {}

    cells = _cells(runs, column_of)
    labels = labels_for(list(cells))
    rows, records = [], []
    for key, by_column in cells.items():
        for task in present:
            row = [by_column[f"{task}|{c}"] for c in columns]
            rows.append((f"{labels[key]} · {task}", [cell.text() for cell in row]))
            records += [
                _records("fewshot", protocol, labels[key], f"{task} {c}", cell)
                for c, cell in zip(columns, row, strict=True)
            ]
        if not paper_tasks:
            continue
        mean = [_mean([by_column[f"{t}|{c}"].mean for t in FEWSHOT_TASKS]) for c in columns]
        rows.append((f"{labels[key]} · mean of 5", [_num(m) for m in mean]))
        records += [
            _records("fewshot", protocol, labels[key], f"mean of 5 {c}", m)
            for c, m in zip(columns, mean, strict=True)
        ]
    for name, values in PAPER_FEWSHOT_MEAN.items() if paper_tasks else ():
        rows.append((f"paper: {name} · mean of 5", [f"{v:.1f}" for v in values]))
    what = "accuracy (mean over split seeds and seeds)"
    return Table(_title("Few-shot", protocol, what), columns, rows, records)


def domain_table(runs: list[Run], protocol: str) -> Table:
    sets = list(DOMAIN_TEST_SETS)
    cells = _cells(runs, lambda run: run.scores())
    labels = labels_for(list(cells))
    rows, records = [], []
    for key, by_set in cells.items():
        mean = _mean([by_set[s].mean for s in sets])
        rows.append((labels[key], [by_set[s].text() for s in sets] + [_num(mean)]))
        records += [_records("domain", protocol, labels[key], s, by_set[s]) for s in sets]
        records.append(_records("domain", protocol, labels[key], "mean", mean))
    for name, values in PAPER_DOMAIN.items():
        rows.append((f"paper: {name}", [_num(values.get(c)) for c in sets + ["mean"]]))
    title = _title("ImageNet domain shift", protocol, "accuracy")
    title += " (ImageNet-A/-R: logits restricted to their 200 classes)"
    return Table(title, sets + ["mean"], rows, records)


def other_table(runs: list[Run], protocol: str) -> Table:
    """One row per configuration and task (tasks outside the paper's benchmarks)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(sorted(run.config.items()))].append(run)
    labels = labels_for([tuple((k, v) for k, v in key if k not in COLUMN_KEYS) for key in groups])
    columns = ["task", "accuracy %", "seeds", "s / epoch", "peak RSS MB", "trainable params"]
    rows, records = [], []
    for key, members in groups.items():
        label = labels[tuple((k, v) for k, v in key if k not in COLUMN_KEYS)]
        cell = Cell([run.scores()["acc"] for run in members if "acc" in run.scores()])
        epoch_s = statistics.fmean(
            r.results.get("fit_seconds", 0) / max(1, r.results.get("epochs", 1)) for r in members
        )
        rss = max(r.results.get("peak_rss_mb", 0.0) for r in members)
        params = members[0].results.get("params", {}).get("trainable")
        rows.append((label, [members[0].task, cell.text(), str(len(members)), f"{epoch_s:.0f}",
                             f"{rss:.0f}", f"{params:,}" if params else "?"]))  # fmt: skip
        records.append(_records("other", protocol, f"{label} {members[0].task}", "acc", cell))
    return Table(_title("Runs", protocol, "accuracy"), columns, rows, records)


BUILDERS = {
    "vtab": vtab_table,
    "fgvc": fgvc_table,
    "fewshot": fewshot_table,
    "domain": domain_table,
    "glue": glue_table,  # the text tables: src/text/report_tables.py
    "gsm8k": gsm8k_table,
    "other": other_table,
}


def build_tables(runs: list[Run]) -> tuple[list[Table], list[Run]]:
    """Tables per benchmark and protocol (final first), and the runs skipped as incomplete."""
    skipped = [run for run in runs if not run.complete]
    by_table: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.complete:
            by_table[run.benchmark, run.protocol].append(run)
    order = list(BUILDERS)
    keys = sorted(by_table, key=lambda k: (k[1] != "final", order.index(k[0])))
    return [BUILDERS[b](by_table[b, p], p) for b, p in keys], skipped


def render(tables: list[Table], skipped: list[Run]) -> str:
    parts = [table.markdown() for table in tables]
    if skipped:
        folders = ", ".join(str(run.folder) for run in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        parts.append(
            f"Skipped {len(skipped)} run(s) that stopped before trainer.max_epochs "
            f"(a number counts only at the last epoch): {folders}{more}\n"
        )
    return "\n".join(parts)


def write_csv(tables: list[Table], path: Path) -> None:
    records = [record for table in tables for record in table.records]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["benchmark"])
        writer.writeheader()
        writer.writerows(records)


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The paper's tables from src.train run folders.")
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--csv", type=Path, help="also write every cell (long form) as CSV")
    args = parser.parse_args(argv)
    tables, skipped = build_tables(load_runs(args.folders))
    text = render(tables, skipped)
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    if args.csv:
        write_csv(tables, args.csv)


if __name__ == "__main__":
    main()
