"""Summarise finished runs: one row per configuration, mean ± std over seeds.

    python -m src.report logs/demo/final                 # a table on stdout
    python -m src.report logs/demo/final --markdown out.md --csv out.csv

Reads every ``results.json`` below the given folders (written by ``src.train``), so it works on a
single run, a multirun sweep, or several sweeps at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from src.errors import UserError

# Runs that differ only in their seed are one configuration.
CONFIG_KEYS = ("task", "protocol", "pace", "sigma", "lam", "adapter", "rank", "lr")


def load_results(folders: list[Path]) -> list[dict]:
    runs = []
    for folder in folders:
        if not folder.exists():
            raise UserError(f"no such folder: {folder}")
        for path in sorted(folder.rglob("results.json")):
            run = json.loads(path.read_text())
            run["run_dir"] = str(path.parent)
            runs.append(run)
    if not runs:
        raise UserError(f"no results.json under {', '.join(map(str, folders))}; train first")
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> list[dict]:
    """Group runs by configuration (all but the seed) and aggregate their numbers."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[tuple(run.get(k) for k in CONFIG_KEYS)].append(run)
    rows = []
    for key, members in groups.items():
        metric = "test/acc" if all("test/acc" in r["metrics"] for r in members) else "val/acc"
        acc = [100 * r["metrics"][metric] for r in members if metric in r["metrics"]]
        epoch_s = [r["fit_seconds"] / max(1, r["epochs"]) for r in members]
        acc_mean, acc_std = _mean_std(acc)
        rows.append(
            {
                **dict(zip(CONFIG_KEYS, key, strict=True)),
                "seeds": len(members),
                "metric": metric,
                "acc_mean": acc_mean,
                "acc_std": acc_std,
                "epoch_seconds": statistics.fmean(epoch_s),
                "peak_rss_mb": max(r.get("peak_rss_mb", 0.0) for r in members),
                "trainable_params": members[0].get("params", {}).get("trainable"),
            }
        )
    order = {"none": 0, "pace": 1, "lazy": 2, "fast": 3}
    return sorted(rows, key=lambda r: (order.get(r["pace"], 9), r["sigma"], r["lam"], r["lr"] or 0))


def to_markdown(rows: list[dict]) -> str:
    header = (
        "| method | σ | λ | lr | protocol | metric | accuracy % (mean ± std) | seeds "
        "| s / epoch | peak RSS MB | trainable params |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        method = "baseline" if r["pace"] == "none" else f"PACE-{r['pace']}".replace("-pace", "")
        sigma, lam = ("–", "–") if r["pace"] == "none" else (r["sigma"], r["lam"])
        params = f"{r['trainable_params']:,}" if r["trainable_params"] else "?"
        lines.append(
            f"| {method} | {sigma} | {lam} | {r['lr']} | {r['protocol']} | {r['metric']} "
            f"| {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {r['seeds']} "
            f"| {r['epoch_seconds']:.0f} | {r['peak_rss_mb']:.0f} | {params} |"
        )
    return header + "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Summarise src.train run folders.")
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--csv", type=Path, help="also write the rows as CSV")
    args = parser.parse_args(argv)
    try:
        rows = summarise(load_results(args.folders))
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    table = to_markdown(rows)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
