"""Plots from run folders, one line per setting as src.report groups them (src/runs.py).

    python -m src.plots logs/demo/final --out diagnostics.png        # the paper's diagnostics
    python -m src.plots logs/demo/tune --heatmap sweep.png           # σ x λ from a tune sweep
    python -m src.plots logs/fewshot_demo/final --shots shots.png    # accuracy vs shots

Diagnostics: ``train/grad_norm`` (‖∇CE‖, Thm. 2: PACE should make it smaller) and
``val/fp_distance`` (squared logit distance to the pre-trained model, Thm. 3: PACE should keep it
smaller), one line per configuration, averaged over its seeds. Curves come from each run's
``summary.csv`` (one row per epoch, written whatever the logger), else from ``csv/metrics.csv``.

Beside them ``train/acc``, which shows when a run has fitted its training set.

Shots: accuracy against ``data.shots``, one line per configuration of everything else, mean and
standard error over split seeds and seeds (few-shot runs).

Heatmap: mean validation accuracy over seeds for every (σ, λ) of a sweep, one panel per
configuration of everything else. It exists to choose σ and λ, so it reads ``tune`` runs only:
under ``final`` the validation split is the test set.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from src.cli.entry import report_user_errors
from src.errors import UserError
from src.run.folder import RunFolder
from src.runs import Run, labels_for, load_runs

METRICS = ("train/grad_norm", "val/fp_distance", "train/acc")
LOG_SCALE = ("train/grad_norm", "val/fp_distance")
SWEPT = ("sigma", "lam", "pace.sigma", "pace.lam")

Curve = dict[int, float]


def read_curves(run_dir: Path, source: str) -> dict[str, Curve]:
    """{metric: {x: value}}: x is the epoch in summary.csv, the step in csv/metrics.csv."""
    folder = RunFolder(run_dir)
    path, x = (folder.summary, "epoch") if source == "summary" else (folder.metrics_csv, "step")
    curves: dict[str, Curve] = {m: {} for m in METRICS}
    with path.open() as f:
        for row in csv.DictReader(f):
            for metric in METRICS:
                if row.get(metric):
                    curves[metric][int(row[x])] = float(row[metric])
    return curves


def _source(runs: list[Run]) -> str:
    folders = [RunFolder(run.folder) for run in runs]
    if all(folder.summary.is_file() for folder in folders):
        return "summary"
    if all(folder.metrics_csv.is_file() for folder in folders):
        return "metrics"
    raise UserError(
        "some runs have neither summary.csv nor csv/metrics.csv; train them with the default "
        "callbacks (callbacks.epoch_summary writes summary.csv)"
    )


def collect(folders: list[Path]) -> tuple[dict[str, list[dict[str, Curve]]], str]:
    """{configuration label: [curves of each seed]} and the x axis ('epoch' or 'step')."""
    runs = load_runs(folders)
    source = _source(runs)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(sorted(run.config.items()))].append(run)
    labels = labels_for(list(groups))
    by_label = {
        labels[key]: [read_curves(run.folder, source) for run in members]
        for key, members in groups.items()
    }
    return by_label, "epoch" if source == "summary" else "training step"


def mean_curve(curves: list[Curve]) -> tuple[list[int], list[float]]:
    """Mean over seeds at the x values every seed has."""
    xs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return xs, [sum(c[x] for c in curves) / len(curves) for x in xs]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_diagnostics(by_label: dict, xlabel: str, out: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(16, 4))
    for ax, metric in zip(axes, METRICS, strict=True):
        for label, runs in sorted(by_label.items()):
            xs, values = mean_curve([run[metric] for run in runs])
            ax.plot(xs, values, marker="." if len(xs) < 30 else None,
                    label=f"{label} (n={len(runs)})")  # fmt: skip
        ax.set_xlabel(xlabel)
        ax.set_title(metric)
        ax.set_yscale("log" if metric in LOG_SCALE else "linear")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def shot_curves(folders: list[Path]) -> dict[str, dict[int, list[float]]]:
    """{configuration label: {shots: [accuracy % per split seed and seed]}} from few-shot runs."""
    runs = [run for run in load_runs(folders) if "data.shots" in run.config and run.scores()]
    if not runs:
        raise UserError("no finished few-shot runs (data.shots) with an accuracy to plot")
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        others = sorted((k, v) for k, v in run.config.items() if k != "data.shots")
        groups[tuple(others)].append(run)
    labels = labels_for(list(groups))
    curves = {}
    for key, members in groups.items():
        by_shots: dict[int, list[float]] = defaultdict(list)
        for run in members:
            by_shots[int(run.config["data.shots"])].append(run.scores()["acc"])
        curves[labels[key]] = dict(by_shots)
    return curves


def standard_error(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def plot_shots(curves: dict, out: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, by_shots in sorted(curves.items()):
        shots = sorted(by_shots)
        means = [statistics.fmean(by_shots[k]) for k in shots]
        errors = [standard_error(by_shots[k]) for k in shots]
        n = min(len(by_shots[k]) for k in shots)
        ax.errorbar(shots, means, yerr=errors, marker="o", capsize=3, label=f"{label} (n={n})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({k for c in curves.values() for k in c}))
    ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("shots per class")
    ax.set_ylabel("accuracy % (mean ± s.e.)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def sweep_grids(folders: list[Path]) -> dict[str, dict[tuple[float, float], list[float]]]:
    """{configuration label: {(σ, λ): [val accuracy % per seed]}} from tune runs."""
    runs = [run for run in load_runs(folders) if run.config.get("pace.mode") != "none"]
    final = [run for run in runs if run.protocol != "tune"]
    if final:
        raise UserError(
            f"{final[0].folder} ran data.protocol={final[0].protocol}; a σ x λ heatmap chooses "
            f"hyper-parameters, so build it from data.protocol=tune runs only"
        )
    if not runs:
        raise UserError("no PACE runs (pace.mode other than none) to put on a σ x λ grid")
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[tuple(sorted((k, v) for k, v in run.config.items() if k not in SWEPT))].append(run)
    labels = labels_for(list(groups))
    grids = {}
    for key, members in groups.items():
        grid: dict[tuple[float, float], list[float]] = defaultdict(list)
        for run in members:
            if "acc" in run.scores():
                sigma = run.config.get("pace.sigma", run.config.get("sigma"))
                lam = run.config.get("pace.lam", run.config.get("lam"))
                grid[float(sigma), float(lam)].append(run.scores()["acc"])
        grids[labels[key]] = dict(grid)
    return grids


def plot_heatmap(grids: dict, out: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 4), squeeze=False)
    for ax, (label, grid) in zip(axes[0], sorted(grids.items()), strict=True):
        sigmas = sorted({s for s, _ in grid})
        lams = sorted({lam for _, lam in grid})
        values = [
            [statistics.fmean(grid[s, lam]) if (s, lam) in grid else math.nan for lam in lams]
            for s in sigmas
        ]
        image = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    n = len(grid[sigmas[i], lams[j]])
                    ax.text(j, i, f"{value:.1f}\n(n={n})", ha="center", va="center",
                            color="white", fontsize="small")  # fmt: skip
        ax.set_xticks(range(len(lams)), [f"{v:g}" for v in lams])
        ax.set_yticks(range(len(sigmas)), [f"{v:g}" for v in sigmas])
        ax.set_xlabel("λ")
        ax.set_ylabel("σ")
        ax.set_title(f"{label}\nval accuracy % (tune)", fontsize="small")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Diagnostics curves and σ x λ heatmaps.")
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument(
        "--out", type=Path, help="diagnostics plot (default: diagnostics.png in the first folder)"
    )
    parser.add_argument("--heatmap", type=Path, help="σ x λ heatmap of a tune sweep")
    parser.add_argument("--shots", type=Path, help="accuracy vs shots of few-shot runs")
    args = parser.parse_args(argv)
    if args.shots:
        plot_shots(shot_curves(args.folders), args.shots)
        print(f"wrote {args.shots}")
    if args.heatmap:
        plot_heatmap(sweep_grids(args.folders), args.heatmap)
        print(f"wrote {args.heatmap}")
    if args.out or not (args.heatmap or args.shots):
        out = args.out or args.folders[0] / "diagnostics.png"
        plot_diagnostics(*collect(args.folders), out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
