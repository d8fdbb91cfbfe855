"""The text demo's results: accuracy per draw, and each method's paired gains over LoRA.

    .venv/bin/python experiments/text_demo/claims.py logs/demo_text/<date> [--markdown F]

The runs are ``experiment=text_demo`` on ``TWEETS-k<k>-s<draw>`` (src.report cannot pair them:
the draw is in the task's folder name, not in ``data.split_seed``). Each method's run is paired
with the LoRA run (``pace=none``) of the same k and draw, and the measures are the vision
few-shot study's, computed by its code (experiments/fewshot_demo/claims.py), not a copy:

(a) accuracy gain in points on dev.tsv at the end (the run's ``test/acc``; the text demo's
    ``final`` protocol tests on dev), mean ± standard error over the draws, with the paired t
    (n − 1 degrees of freedom) beside it; a gain inside 2 s.e. is reported as a null result;
(b) ``train/grad_norm`` over LoRA's fitting phase (the epochs before it first reaches 100 %
    training accuracy) as a ratio to LoRA's (Thm. 2);
(c) the last ``val/fp_distance`` as a ratio to LoRA's (Thm. 3).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the checkout's src

from src.cli.entry import report_user_errors  # noqa: E402
from src.errors import UserError  # noqa: E402
from src.runs import Run, load_runs  # noqa: E402


def _fewshot_claims():
    """experiments/fewshot_demo/claims.py, a script rather than a package: loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "fewshot_claims", HERE.parent / "fewshot_demo" / "claims.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fewshot = _fewshot_claims()
DRAW = re.compile(r"-k(\d+)-s(\d+)$")  # TWEETS-k16-s0: 16 per class, draw 0
Key = tuple[int, int, str]  # shots, draw, pace mode


def demo_runs(folders: list[Path]) -> dict[Key, Run]:
    """The complete final runs of draw folders ``<TASK>-k<k>-s<draw>``, by (k, draw, mode)."""
    runs: dict[Key, Run] = {}
    for run in load_runs(folders):
        match = DRAW.search(run.task)
        if not (run.complete and run.protocol == "final" and match):
            continue
        key = (int(match[1]), int(match[2]), str(run.config["pace.mode"]))
        if key in runs:
            raise UserError(
                f"two runs of k {key[0]}, draw {key[1]}, pace={key[2]}: {runs[key].folder} and "
                f"{run.folder}; give the folders of one study"
            )
        runs[key] = run
    if not runs:
        raise UserError(
            f"no complete data.protocol=final run of a TASK-k<k>-s<draw> task under "
            f"{', '.join(map(str, folders))}; is this a make demo-text folder?"
        )
    return runs


def label(run: Run) -> str:
    return (
        "LoRA"
        if run.config["pace.mode"] == "none"
        else "LoRA+" + fewshot.method_label(run, "project")
    )


def accuracy_table(runs: dict[Key, Run]) -> str:
    draws = sorted({draw for _, draw, _ in runs})
    lines = ["| k | method | " + " | ".join(f"draw {d}" for d in draws) + " |",
             "|---" * (len(draws) + 2) + "|"]  # fmt: skip
    methods = sorted(
        {(k, mode) for k, _, mode in runs}, key=lambda km: (km[0], km[1] != "none", km[1])
    )
    for k, mode in methods:
        by_draw = {d: runs[k, d, mode] for d in draws if (k, d, mode) in runs}
        cells = [f"{by_draw[d].scores()['acc']:.1f}" if d in by_draw else "–" for d in draws]
        lines.append(f"| {k} | {label(next(iter(by_draw.values())))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_claims(runs: dict[Key, Run]) -> dict:
    """{(k, method): {measure: (mean, s.e., pairs)}}, each run paired with LoRA on its draw."""
    measures: dict = defaultdict(lambda: defaultdict(list))
    for (k, draw, mode), run in sorted(runs.items()):
        baseline = runs.get((k, draw, "none"))
        if mode == "none" or baseline is None:
            continue
        for name, value in fewshot.pair_measures(run, baseline).items():
            measures[k, label(run)][name].append(value)
    return fewshot.summarise(measures)


def verdicts(claims: dict) -> list[str]:
    """The accuracy gain's paired t and whether it is a null result (inside 2 s.e.)."""
    lines = []
    for (k, method), by_name in claims.items():
        mean, se, n = by_name["accuracy gain (points)"]
        if n < 2:
            lines.append(
                f"- k {k}, {method}: {mean:+.2f} points from one draw: no s.e., no verdict"
            )
            continue
        t = mean / se if se > 0 else float("inf") * (1 if mean >= 0 else -1)
        verdict = "null result (inside 2 s.e.)" if abs(mean) <= 2 * se else (
            "gain" if mean > 0 else "loss") + " beyond 2 s.e."  # fmt: skip
        lines.append(f"- k {k}, {method}: {mean:+.2f} ± {se:.2f} points, paired t = {t:.2f} "
                     f"({n - 1} d.o.f.): {verdict}")  # fmt: skip
    return lines


def report(folders: list[Path]) -> str:
    runs = demo_runs(folders)
    claims = paired_claims(runs)
    parts = ["Accuracy on dev.tsv (%), last epoch:", "", accuracy_table(runs)]
    if claims:
        parts += ["", "Paired with LoRA on the same draw (mean ± s.e. over draws):", "",
                  fewshot.markdown(claims), "", *verdicts(claims)]  # fmt: skip
    else:
        parts += ["", "No method has a LoRA run on the same draw to pair with."]
    return "\n".join(parts)


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    text = report(args.folders)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
