"""Close the loop after a search: best setting per task and method on val, then the final runs.

    python -m src.select logs/train/multiruns/<time>              # print the final commands
    python -m src.select logs/train/multiruns/<time> --launch     # ...and run them
    python -m src.select sweep_a sweep_b --seeds 1,2,3,4,5 --out best.yaml

Tune on val, retrain on train+val with the chosen setting over several seeds: reads every
``results.json`` of the ``tune`` protocol below the given folders (a grid, an Optuna search, or
both), groups the runs by task and method (PACE mode + adapter), averages ``val/acc`` over the
runs of one setting (the overrides that decide the result, ``src/run/keys.py``: seeds, few-shot
draws and plumbing are not part of it) and picks the best setting of each group. The choice is
written as YAML (``selected.yaml`` in the first folder by default) with, for each group, the
command that trains it on the ``final`` protocol (train800val200 → test) with every seed (and
every draw the search used), through the launcher the search used, into
``<first folder>/final/<task>_<method>/``. ``python -m src.report`` then tabulates those runs.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from src.cli.entry import report_user_errors
from src.errors import UserError
from src.run.keys import KeyRole, key_role
from src.runs import load_runs

# The final command sets these itself (data.protocol=final, seed=<--seeds>): the search's go.
_SET_BY_FINAL = ("data.protocol", "seed")
# Hydra overrides that the final runs take over from the search (the launcher and its options).
_LAUNCHER_PREFIXES = ("hydra/launcher=", "hydra.launcher.")


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _read_overrides(run_dir: Path) -> tuple[list[str], list[str]]:
    """The job's own overrides and the launcher overrides of its sweep, as Hydra recorded them."""
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        raise UserError(f"{run_dir} has no .hydra/hydra.yaml; select reads runs of src.train -m")
    hydra_cfg = yaml.safe_load(hydra_file.read_text())["hydra"]
    task = list(hydra_cfg["overrides"]["task"])
    launcher = [o for o in hydra_cfg["overrides"]["hydra"] if o.startswith(_LAUNCHER_PREFIXES)]
    launcher_choice = hydra_cfg["runtime"]["choices"].get("hydra/launcher")
    if launcher_choice and launcher_choice != "basic":
        launcher = [f"hydra/launcher={launcher_choice}"] + [
            o for o in launcher if not o.startswith("hydra/launcher=")
        ]
    return task, launcher


def select_best(runs: list[dict]) -> list[dict]:
    """The best setting (mean val/acc over seeds) of every (task, method) among tune runs."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        if run.get("protocol") == "tune" and "val/acc" in run["metrics"]:
            groups[(run["task"], f"{run['pace']}_{run['adapter']}")].append(run)
    if not groups:
        raise UserError(
            "no finished run of the tune protocol (results.json with val/acc) in those folders; "
            "search with data.protocol=tune or hparams_search=pace_grid / pace_optuna"
        )
    selections = []
    for (task, method), members in sorted(groups.items()):
        for run in members:
            run["task_overrides"], run["launcher_overrides"] = _read_overrides(Path(run["run_dir"]))
            run["setting"] = {
                k: v for k, v in map(_split, run["task_overrides"]) if key_role(k).names_the_setting
            }
        # Runs that differ only in their seed, draw or plumbing are one setting: compare
        # settings by their mean.
        by_setting: dict[str, list[dict]] = defaultdict(list)
        for run in members:
            by_setting[yaml.safe_dump(run["setting"], sort_keys=True)].append(run)
        scores = {
            key: statistics.fmean(r["metrics"]["val/acc"] for r in group)
            for key, group in by_setting.items()
        }
        best_key = max(scores, key=scores.get)
        best = by_setting[best_key][0]
        swept = sorted(
            {k for r in members for k, v in r["setting"].items()
             if any(o["setting"].get(k) != v for o in members)}
        )  # fmt: skip
        overrides = final_overrides(by_setting[best_key])
        selections.append(
            {
                "task": task,
                "method": method,
                "val_acc": round(scores[best_key], 6),
                "seeds": len(by_setting[best_key]),
                "candidates": len(by_setting),
                "chosen": {k: best["setting"][k] for k in swept},
                "overrides": overrides,
                "launcher": best["launcher_overrides"],
                "run_dir": best["run_dir"],
            }
        )
    return selections


def final_overrides(setting_runs: list[dict]) -> list[str]:
    """The chosen setting's overrides for its final runs: what decides the result and the
    plumbing (logger, data.root ...) as the search ran them, without the search's own keys. A
    replicate the final command does not set (``data.split_seed``) takes every value the
    setting was measured with."""
    kept, replicates = [], defaultdict(list)
    for run in setting_runs:
        for override in run["task_overrides"]:
            name, _, value = override.partition("=")
            key = _split(override)[0]
            role = key_role(key)
            if key in _SET_BY_FINAL or role is KeyRole.SEARCH:
                continue
            if role is KeyRole.REPLICATE:
                if value not in replicates[name]:
                    replicates[name].append(value)
            elif run is setting_runs[0]:
                kept.append(override)
    return kept + [f"{name}={','.join(values)}" for name, values in replicates.items()]


def final_command(selection: dict, seeds: str, sweep_dir: Path) -> list[str]:
    """`python -m src.train` arguments for the final protocol with every seed, as a multirun."""
    return [
        *selection["overrides"],
        "data.protocol=final",
        f"seed={seeds}",
        *selection["launcher"],
        f"hydra.sweep.dir={sweep_dir / 'final' / (selection['task'] + '_' + selection['method'])}",
        "-m",
    ]


@report_user_errors
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders of tune runs")
    parser.add_argument("--seeds", default="1,2,3", help="seeds of the final runs (default 1,2,3)")
    parser.add_argument("--out", type=Path, help="where to write the choice (selected.yaml)")
    parser.add_argument("--launch", action="store_true", help="run the final commands now")
    args = parser.parse_args(argv)

    runs = [
        {**run.results, "task": run.task, "protocol": run.protocol, "run_dir": str(run.folder)}
        for run in load_runs(args.folders)
    ]
    selections = select_best(runs)
    for selection in selections:
        selection["command"] = [sys.executable, "-m", "src.train"] + final_command(
            selection, args.seeds, args.folders[0]
        )
    out = args.out or args.folders[0] / "selected.yaml"
    out.write_text(yaml.safe_dump(selections, sort_keys=False))
    print(f"# best settings on val/acc: {out}")
    for selection in selections:
        print(
            f"# {selection['task']} {selection['method']}: val/acc {selection['val_acc']:.4f} "
            f"with {selection['chosen']} ({selection['candidates']} settings compared)"
        )
        print(shlex.join(["python", *selection["command"][1:]]))
    if args.launch:
        for selection in selections:
            subprocess.run(selection["command"], check=True)
    return selections


if __name__ == "__main__":
    main()
