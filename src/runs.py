"""Finished runs read back from their folders: what each one is, and which setting it belongs to.

A run is a folder holding ``results.json`` (and the resolved ``config.yaml`` the run wrote).
:class:`Run` knows its benchmark, task, protocol and scores; its ``config`` keeps only the keys
that name its setting (``src/run/keys.py``: seeds, few-shot draws and plumbing are left out), with
the recipe named instead of listed and the backbone's weights as recorded. :func:`row_key` is
that setting without what a table's column stands for (the task, the paper recipe's values), and
:func:`labels_for` names each setting by what differs between them. ``src.report``, ``src.plots``,
``src.select`` and the study scripts (``experiments/*/claims.py``) read runs through here.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from src import CONF_DIR
from src.data import TEXT_DATAMODULES, benchmark_of
from src.data.tables import VTAB_TASKS
from src.errors import UserError
from src.paper_setup import task_recipe
from src.run.folder import RUN_FILES, RunFolder
from src.run.keys import key_role
from src.run.loggers import flatten as flatten_config
from src.text.report_tables import text_scores

# What a VTAB column / a few-shot column is, rather than part of a row's configuration.
COLUMN_KEYS = ("data.task", "data.num_classes", "data.shots")


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
        name = benchmark_of(str(self.config.get("data._target_", ""))) or "other"
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
    path = RunFolder(folder).config
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
    """conf/recipe/<name>.yaml as {name: {"recipe.<switch>": value}}, the switches that name a
    setting only (a run's config has no others: ``recipe.grad_norm_every`` is a diagnostic's)."""
    presets = {
        path.stem: OmegaConf.load(path) for path in sorted((CONF_DIR / "recipe").glob("*.yaml"))
    }
    return {
        name: {
            f"recipe.{k}": v for k, v in preset.items() if key_role(f"recipe.{k}").names_the_setting
        }
        for name, preset in presets.items()
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
        for path in sorted(folder.rglob(RUN_FILES["results"].name)):
            try:
                results = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise UserError(f"{path} is not valid JSON; delete it or re-run that job") from None
            runs.append(Run(path.parent, results, _config_of(path.parent, results)))
    if not runs:
        raise UserError(f"no results.json under {', '.join(map(str, folders))}; train first")
    return runs


# --------------------------------------------------------------------------------- rows
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
