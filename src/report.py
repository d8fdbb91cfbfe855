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
import functools
import json
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from src import CONF_DIR
from src.cli.entry import report_user_errors
from src.data.tables import (
    DATAMODULES,
    DOMAIN_TEST_SETS,
    FEWSHOT_TASKS,
    FGVC_TASKS,
    SHOTS,
    VTAB_GROUPS,
    VTAB_TASKS,
)
from src.errors import UserError
from src.paper_setup import task_recipe
from src.run.keys import key_role
from src.run.loggers import flatten as flatten_config
from src.text.report_tables import TEXT_BUILDERS, TEXT_DATAMODULES, text_scores

# What a VTAB column / a few-shot column is, rather than part of a row's configuration.
COLUMN_KEYS = ("data.task", "data.num_classes", "data.shots")

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


def flatten(tree: dict) -> dict:
    """Dotted keys as for the loggers, with lists as tuples so that a config can be a row key."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flatten_config(tree).items()}


@dataclass
class Run:
    folder: Path
    results: dict
    config: dict  # flat resolved config: the keys that name its setting (src/run/keys.py)

    @property
    def benchmark(self) -> str:
        target = str(self.config.get("data._target_", "")).rsplit(".", 1)[-1]
        modules = {**DATAMODULES, **TEXT_DATAMODULES}
        name = {v: k for k, v in modules.items()}.get(target, "other")
        return "other" if name == "vtab" and self.task not in VTAB_TASKS else name

    @property
    def task(self) -> str:
        return str(self.config.get("data.task", self.results.get("task")))

    @property
    def protocol(self) -> str:
        return str(self.config.get("data.protocol", self.results.get("protocol", "final")))

    @property
    def complete(self) -> bool:
        wanted = self.config.get("trainer.max_epochs")
        return wanted is None or self.results.get("epochs", 0) >= wanted

    def scores(self) -> dict[str, float]:
        """Accuracy in % per test set ("acc" for one): test under final, validation under tune."""
        metrics = self.results.get("metrics", {})
        if self.benchmark in TEXT_DATAMODULES:  # GLUE's metric per task, GSM-8K's exact match
            return text_scores(self.benchmark, self.task, self.protocol, metrics)
        if self.protocol == "tune":
            return {"acc": 100 * metrics["val/acc"]} if "val/acc" in metrics else {}
        if "test/acc" in metrics:
            return {"acc": 100 * metrics["test/acc"]}
        prefix = "test/acc/"
        return {k[len(prefix) :]: 100 * v for k, v in metrics.items() if k.startswith(prefix)}


def _config_of(folder: Path, results: dict) -> dict:
    path = folder / "config.yaml"
    if path.is_file():
        flat = flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    else:  # a results.json written before config.yaml existed: its own fields
        names = {"task": "data.task", "protocol": "data.protocol", "pace": "pace.mode",
                 "sigma": "pace.sigma", "lam": "pace.lam", "adapter": "adapter.name",
                 "rank": "adapter.rank", "lr": "optim.lr", "backbone": "backbone.name"}  # fmt: skip
        flat = {key: results[field] for field, key in names.items() if field in results}
    flat["backbone.weights"] = weights_identity(flat.get("backbone.weights"), results)
    if flat.get("pace.mode") == "none":  # σ, λ do nothing without PACE
        unused = ("sigma", "lam", "pace.sigma", "pace.lam")
        flat = {k: v for k, v in flat.items() if k not in unused}
    return fold_recipe({k: v for k, v in flat.items() if key_role(k).names_the_setting})


def weights_identity(configured, results: dict) -> str:
    """Which weights the run started from, as results.json records it (the tag, or the file's
    content: two copies of one file are the same weights, two files under one name are not).
    Runs written before it was recorded: what their config said, where null meant random."""
    recorded = (results.get("weights") or {}).get("source")
    if recorded:
        return recorded
    if configured is None or configured == "random":
        return "random"
    return configured if configured == "hub" or ":" in str(configured) else f"file:{configured}"


@functools.cache
def recipe_presets() -> dict[str, dict]:
    """conf/recipe/<name>.yaml as {name: {"recipe.<switch>": value}}."""
    return {
        path.stem: {f"recipe.{k}": v for k, v in OmegaConf.load(path).items()}
        for path in sorted((CONF_DIR / "recipe").glob("*.yaml"))
    }


@functools.cache
def recipe_mirrors() -> dict[str, str]:
    """Config keys that copy a recipe switch (``data.drop_last: ${recipe.drop_last}``), found in
    the group files, as {key: "recipe.<switch>"}."""
    mirrors = {}
    for path in [*CONF_DIR.glob("*.yaml"), *CONF_DIR.glob("*/*.yaml")]:
        text = path.read_text()
        if "${recipe." not in text or "@package _global_" in text:  # experiments set values
            continue
        prefix = "" if path.parent == CONF_DIR else f"{path.parent.name}."
        for key, value in flatten(OmegaConf.to_container(OmegaConf.create(text))).items():
            if isinstance(value, str) and re.fullmatch(r"\$\{recipe\.\w+\}", value):
                mirrors[prefix + key] = value[2:-1]
    return mirrors


def fold_recipe(flat: dict) -> dict:
    """Name the run's recipe (``recipe=paper``) instead of listing its switches: the switches
    become the preset they match best, plus each switch set apart from it; the keys that only
    copy a switch go. A run from before the recipe group is returned as it is."""
    switches = {k: v for k, v in flat.items() if k.startswith("recipe.")}
    if not switches:
        return flat
    name, preset = max(
        recipe_presets().items(),
        key=lambda item: sum(switches.get(k) == v for k, v in item[1].items()),
    )
    mirrors = recipe_mirrors()
    kept = {
        k: v
        for k, v in flat.items()
        if not k.startswith("recipe.") and not (k in mirrors and flat.get(mirrors[k]) == v)
    }
    return kept | {"recipe": name} | {k: v for k, v in switches.items() if preset.get(k) != v}


def load_runs(folders: list[Path]) -> list[Run]:
    runs = []
    for folder in folders:
        if not folder.exists():
            raise UserError(f"no such folder: {folder}")
        for path in sorted(folder.rglob("results.json")):
            try:
                results = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise UserError(f"{path} is not valid JSON; delete it or re-run that job") from None
            runs.append(Run(path.parent, results, _config_of(path.parent, results)))
    if not runs:
        raise UserError(f"no results.json under {', '.join(map(str, folders))}; train first")
    return runs


# ------------------------------------------------------------------------------ recipes
def row_key(run: Run) -> tuple:
    """The run's configuration without what a column stands for: the task, and the values the
    task's paper recipe set (a deviation from the recipe stays part of the row)."""
    recipe = task_recipe(run.benchmark, run.task)
    return tuple(
        sorted(
            (k, v)
            for k, v in run.config.items()
            if k not in COLUMN_KEYS and not (k in recipe and recipe[k] == v)
        )
    )


def _only_where_set(key: str) -> bool:
    """Keys that label only the rows that have them: PACE's modes' (they mean nothing for a
    baseline row, nor lazy's for fast) and a recipe switch set apart from the run's preset."""
    return (key.startswith("pace.") and key != "pace.mode") or key.startswith("recipe")


def labels_for(keys: list[tuple]) -> dict[tuple, str]:
    """Name each row by the settings that differ between rows (PACE's always shown)."""
    always = ("pace.mode", "pace.sigma", "pace.lam")
    # The top-level sigma and lam are what pace.sigma and pace.lam are set from.
    differing = {k for key in keys for k, _ in key} - {*always, "sigma", "lam"}

    def rows_it_applies_to(k: str) -> list[dict]:
        # A PACE key that a row lacks belongs to another mode (pace.interval is lazy's), and a
        # recipe switch it lacks is its preset's, so those are compared among the rows that
        # have them; any other missing key is the task recipe's.
        rows = [dict(key) for key in keys]
        return [row for row in rows if k in row] if _only_where_set(k) else rows

    differing = {
        k
        for k in differing
        if k.startswith("recipe.")  # a switch set apart from its preset: always said
        or len({row.get(k) for row in rows_it_applies_to(k)}) > 1
    }
    labels = {}
    for key in keys:
        values = dict(key)
        mode = values.get("pace.mode", "?")
        parts = ["baseline" if mode == "none" else {"pace": "PACE"}.get(mode, f"PACE-{mode}")]
        if mode != "none":
            parts.append(f"σ={values.get('pace.sigma')} λ={values.get('pace.lam')}")
        parts += [
            f"{k}={values.get(k, 'recipe')}"
            for k in sorted(differing)
            if k in values or not _only_where_set(k)
        ]
        labels[key] = " ".join(parts)
    return labels


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
    **TEXT_BUILDERS,  # glue, gsm8k (src/text/report_tables.py)
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
