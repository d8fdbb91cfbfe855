"""The paper's three claims as numbers, per shot count, from the study's final runs.

    .venv/bin/python experiments/fewshot_demo/claims.py logs/fewshot_demo/final [--markdown F]
    .venv/bin/python experiments/fewshot_demo/claims.py logs/fewshot_demo/{final,recipe}

Every method's run is paired with the baseline run of the same shot count and split seed (same
training images, same seed), and each claim is a mean over those pairs with its standard error:

(a) accuracy: test accuracy of the method minus the baseline's, in points;
(b) gradient norm (Thm. 2): the mean ``train/grad_norm`` over the baseline's fitting phase —
    the epochs before the baseline first reaches 100 % training accuracy — as a ratio to the
    baseline's over the same epochs. A ratio at the end of training would compare a baseline
    whose CE gradient has vanished with its training loss against a regularised run that has
    not; the fitting phase is where the two are comparable (README, "What is compared");
(c) distance to the pre-trained model (Thm. 3): the last ``val/fp_distance`` as a ratio to the
    baseline's.

Runs under ``recipe=paper`` (the official code's training switches, docs/recipe.md) are paired
with the baseline of their own recipe, and a second table pairs each of them with the same
method, shots and draw under the project's recipe: the accuracy difference paper − project.

Peak memory (RSS) is the pair's ratio too. Time is not: the runs shared the machine with a
varying load, so their seconds compare nothing; `make bench` measures what each mode costs.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's src

from src.cli.entry import report_user_errors  # noqa: E402
from src.runs import Run, load_runs  # noqa: E402


def curve(run: Run, metric: str) -> dict[int, float]:
    with (run.folder / "summary.csv").open() as f:
        return {int(r["epoch"]): float(r[metric]) for r in csv.DictReader(f) if r.get(metric)}


def fitting_epochs(baseline: Run) -> list[int]:
    """Epochs before the baseline's training accuracy first reaches 100 % (all, if never)."""
    acc = curve(baseline, "train/acc")
    fitted = [e for e, a in sorted(acc.items()) if a >= 1.0]
    return [e for e in sorted(acc) if not fitted or e < fitted[0]]


def mean_se(values: list[float]) -> tuple[float, float, int]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), se, len(values)


def pair_measures(run: Run, baseline: Run) -> dict[str, float]:
    window = fitting_epochs(baseline)
    grad, grad0 = curve(run, "train/grad_norm"), curve(baseline, "train/grad_norm")
    shared = [e for e in window if e in grad and e in grad0]
    fp, fp0 = curve(run, "val/fp_distance"), curve(baseline, "val/fp_distance")
    last = max(set(fp) & set(fp0))

    return {
        "accuracy gain (points)": run.scores()["acc"] - baseline.scores()["acc"],
        "grad-norm ratio, fitting phase": (
            statistics.fmean(grad[e] for e in shared) / statistics.fmean(grad0[e] for e in shared)
        ),
        "FP-distance ratio, last epoch": fp[last] / fp0[last],
        "peak memory ratio": run.results["peak_rss_mb"] / baseline.results["peak_rss_mb"],
        "baseline fitting epochs": len(window),
    }


Key = tuple[int, str, int, str]  # shots, recipe, draw, pace mode


def final_runs(folders: list[Path]) -> dict[Key, Run]:
    runs = [r for r in load_runs(folders) if r.complete and r.protocol == "final"]
    return {
        (int(r.config["data.shots"]), recipe(r), split_seed(r), r.config["pace.mode"]): r
        for r in runs
    }


def method_label(run: Run, recipe_name: str) -> str:
    label = "baseline" if run.config["pace.mode"] == "none" else (
        f"{run.config['pace.mode']} σ={run.config['pace.sigma']} λ={run.config['pace.lam']}"
    )  # fmt: skip
    return label + ("" if recipe_name == "project" else f" · recipe={recipe_name}")


def claims(folders: list[Path]) -> dict[tuple[int, str], dict[str, tuple[float, float, int]]]:
    """{(shots, method label): {measure: (mean, standard error, pairs)}}."""
    by_key = final_runs(folders)
    measures: dict[tuple[int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (shots, recipe_name, draw, mode), run in by_key.items():
        baseline = by_key.get((shots, recipe_name, draw, "none"))
        if mode == "none" or baseline is None:
            continue
        for name, value in pair_measures(run, baseline).items():
            measures[shots, method_label(run, recipe_name)][name].append(value)
    return summarise(measures)


def recipe_effect(folders: list[Path]) -> dict[tuple[int, str], dict[str, tuple]]:
    """{(shots, method · recipe): {"accuracy gain over recipe=project (points)": (mean, se,
    pairs)}}: each run under another recipe (``paper``, or ``paper`` with one switch set back)
    minus the same method, shots and draw under the project's."""
    by_key = final_runs(folders)
    measures: dict[tuple[int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (shots, recipe_name, draw, mode), run in by_key.items():
        project = by_key.get((shots, "project", draw, mode))
        if recipe_name == "project" or project is None:
            continue
        gain = run.scores()["acc"] - project.scores()["acc"]
        name = "accuracy gain over recipe=project (points)"
        measures[shots, method_label(run, recipe_name)][name].append(gain)
    return summarise(measures)


def summarise(measures: dict) -> dict:
    return {
        key: {name: mean_se(values) for name, values in by_name.items()}
        for key, by_name in sorted(measures.items())
    }


def split_seed(run: Run) -> int:
    """The few-shot draw (the report averages over it, so its config leaves it out)."""
    return int(OmegaConf.load(run.folder / "config.yaml").data.split_seed)


def recipe(run: Run) -> str:
    """The run's training recipe as src.report names it: ``paper``, or ``paper
    recipe.drop_last=False`` for a preset with a switch set apart (runs from before the recipe
    group trained with what is now the project's)."""
    switches = sorted(f"{k}={v}" for k, v in run.config.items() if k.startswith("recipe."))
    return " ".join([str(run.config.get("recipe", "project")), *switches])


def markdown(table: dict) -> str:
    names = list(next(iter(table.values())))
    lines = ["| shots | method | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for (shots, label), by_name in table.items():
        cells = []
        for name in names:
            mean, se, n = by_name[name]
            spread = f" ± {se:.2f}" if n > 1 else ""  # one pair has no standard error
            if name == "baseline fitting epochs":
                cells.append(f"{mean:.0f}")
            else:
                cells.append(f"{mean:+.2f}{spread} (n={n})" if "gain" in name
                             else f"{mean:.2f}{spread}")  # fmt: skip
        lines.append(f"| {shots} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    text = markdown(claims(args.folders))
    effect = recipe_effect(args.folders)
    if effect:
        text += "\n\n" + markdown(effect)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
