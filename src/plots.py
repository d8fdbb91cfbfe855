"""Plot the paper's two diagnostics against training steps, one line per method.

    python -m src.plots logs/demo/final --out experiments/demo/diagnostics.png

``train/grad_norm`` (‖∇CE‖, Thm. 2: PACE should make it smaller) and ``val/fp_distance`` (squared
logit distance to the pre-trained model, Thm. 3: PACE should keep it smaller) are read from every
run's ``csv/metrics.csv``; runs of the same method are averaged over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from src.errors import UserError

METRICS = ("train/grad_norm", "val/fp_distance")
LABELS = {"none": "baseline", "pace": "PACE", "lazy": "PACE-lazy", "fast": "PACE-fast"}


def read_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} from a run's CSV log."""
    curves: dict[str, dict[int, float]] = {m: {} for m in METRICS}
    with (run_dir / "csv" / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            for metric in METRICS:
                if row.get(metric):
                    curves[metric][int(row["step"])] = float(row[metric])
    return curves


def collect(folders: list[Path]) -> dict[str, list[dict[str, dict[int, float]]]]:
    by_method: dict[str, list] = defaultdict(list)
    for folder in folders:
        for results in sorted(folder.rglob("results.json")):
            if (results.parent / "csv" / "metrics.csv").is_file():
                mode = json.loads(results.read_text())["pace"]
                by_method[mode].append(read_curves(results.parent))
    if not by_method:
        raise UserError(f"no runs with csv/metrics.csv under {', '.join(map(str, folders))}")
    return by_method


def mean_curve(curves: list[dict[int, float]]) -> tuple[list[int], list[float]]:
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return steps, [sum(c[s] for c in curves) / len(curves) for s in steps]


def plot(by_method, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4))
    for ax, metric in zip(axes, METRICS, strict=True):
        for mode in ("none", "pace", "lazy", "fast"):
            if mode in by_method:
                steps, values = mean_curve([run[metric] for run in by_method[mode]])
                n = len(by_method[mode])
                ax.plot(
                    steps,
                    values,
                    marker="." if len(steps) < 30 else None,
                    label=f"{LABELS[mode]} (n={n})",
                )
        ax.set_xlabel("training step")
        ax.set_title(metric)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot grad-norm and fp-distance curves.")
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("diagnostics.png"))
    args = parser.parse_args(argv)
    try:
        plot(collect(args.folders), args.out)
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
