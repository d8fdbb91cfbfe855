"""Inspect a data root: per benchmark and task, what is present, missing or malformed.

    python -m src.data.check                      # data/ (or $PROJECT_ROOT/data)
    python -m src.data.check /datasets --benchmark fewshot --sample 50

For every split each protocol reads it prints the sample count and the classes covered, checks
that every listed image exists, and decodes a random sample of them. Every problem comes with
its fix. Exit status: 0 when every task found is usable, 1 when one is present but defective
(absent benchmarks and tasks are listed, not failed).
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from src.data import BENCHMARKS
from src.data.base import BenchmarkDataModule
from src.data.images import decode_image
from src.errors import UserError


@dataclass
class TaskReport:
    name: str
    status: str = "ok"  # ok | missing | broken
    splits: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        status = "ok" if self.status == "ok" else self.status.upper()
        if self.status == "missing":
            return [f"  {self.name:<28} {status}: {self.splits[0]}"]
        return (
            [f"  {self.name:<28} {status}"]
            + [f"      {split}" for split in self.splits]
            + [f"    ! {problem}" for problem in dict.fromkeys(self.problems)]
        )


def _variants(cls: type[BenchmarkDataModule]) -> list[dict]:
    """Constructor arguments covering every split the benchmark's protocols read."""
    variants = [{"protocol": protocol} for protocol in cls.protocols]
    if "shots" in cls.__init__.__code__.co_varnames:
        from src.data.fewshot import SHOTS, SPLIT_SEEDS

        shots = SHOTS if cls.benchmark == "fewshot" else (16,)
        variants = [
            {**v, "shots": k, "split_seed": s} for v in variants for k in shots for s in SPLIT_SEEDS
        ]
    return variants


def _splits(dm: BenchmarkDataModule) -> list[tuple[str, bool]]:
    """(split, is the training split) for one variant, in reading order."""
    train = dm.splits()["train"]
    names = [train, dm.splits()["val"], *dm.test_sets().values()]
    return [(name, name == train) for name in dict.fromkeys(names)]


def check_task(
    cls: type[BenchmarkDataModule], root: Path, task: str, sample: int, rng: random.Random
) -> TaskReport:
    report = TaskReport(f"{cls.benchmark}/{task}")
    seen: set[str] = set()
    for variant in _variants(cls):
        dm = cls(root=str(root), task=task, num_workers=0, **variant)
        try:
            dm.task_dir  # noqa: B018  (locates the folder or raises the fix)
        except UserError:
            report.status = "missing"
            report.splits.append(f"no folder {' or '.join(dm.task_folder_names())} here")
            return report
        for split, is_train in _splits(dm):
            if split in seen:
                continue
            seen.add(split)
            try:
                # Bypass the training-coverage check: it is reported below, not raised.
                samples = [s for part in split.split("+") for s in dm.read_split(part)]
            except UserError as error:
                report.status = "broken"
                report.problems.append(str(error))
                continue
            classes = len({label for _, label in samples})
            report.splits.append(
                f"{split}: {len(samples)} images, {classes}/{dm.num_classes} classes"
            )
            if is_train and classes < dm.num_classes and dm.train_covers_all_classes:
                report.status = "broken"
                report.problems.append(
                    f"{split} has samples of {classes} of {dm.num_classes} classes; "
                    f"restore the complete list"
                )
            missing = [path for path, _ in samples if not path.is_file()]
            if missing:
                report.status = "broken"
                report.problems.append(
                    f"{split}: {len(missing)} of {len(samples)} images missing, e.g. {missing[0]}; "
                    f"restore them or remove their lines"
                )
            present = [path for path, _ in samples if path.is_file()]
            for path in rng.sample(present, min(sample, len(present))):
                try:
                    decode_image(path, 8)
                except UserError as error:
                    report.status = "broken"
                    report.problems.append(f"{split}: {error}")
        try:
            dm.class_subsets  # noqa: B018  (domain shift: A/R must cover their 200 classes)
        except UserError as error:
            report.status = "broken"
            report.problems.append(str(error))
    return report


def check_root(
    root: Path, benchmarks: list[str] | None = None, sample: int = 20, seed: int = 0
) -> tuple[list[str], bool]:
    """Report lines and whether every task found is usable."""
    from src.data.text_check import check_text_root

    rng = random.Random(seed)
    lines, healthy = [f"data root {root}"], True
    for name, cls in BENCHMARKS.items():
        if benchmarks and name not in benchmarks:
            continue
        container = root / cls.container
        if not container.is_dir():
            lines.append(f"{name}: not present (expected {cls.layout})")
            continue
        lines.append(f"{name}: {container}")
        known = {
            folder for task in cls.tasks for folder in cls(str(root), task).folders_used()
        }
        for task in cls.tasks:
            report = check_task(cls, root, task, sample, rng)
            healthy &= report.status != "broken"
            lines += report.lines()
        extra = sorted(
            p.name
            for p in container.iterdir()
            if p.is_dir() and p.name not in known and not p.name.startswith(".")
        )
        if extra:
            shown = ", ".join(extra)
            lines.append(f"  other folders (custom tasks; pass data.num_classes): {shown}")
    text_lines, text_healthy = check_text_root(root, benchmarks)  # GLUE, GSM-8K
    return lines + text_lines, healthy and text_healthy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="data root (default: data/)")
    from src.data.text_check import TEXT_BENCHMARKS

    parser.add_argument(
        "--benchmark", action="append", choices=sorted([*BENCHMARKS, *TEXT_BENCHMARKS])
    )
    parser.add_argument("--sample", type=int, default=20, help="images decoded per split")
    args = parser.parse_args(argv)
    root = args.root
    if root is None:
        import os

        root = Path(os.environ.get("PROJECT_ROOT", ".")) / "data"
    if not root.is_dir():
        print(f"error: data root {root} does not exist; pass the folder holding vtab-1k/, "
              f"fgvc/, few-shot/ or domain-adaptation/", file=sys.stderr)
        return 2
    lines, healthy = check_root(root, args.benchmark, args.sample)
    print("\n".join(lines))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
