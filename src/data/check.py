"""Inspect a data root: per benchmark and task, what is present, missing or malformed.

    python -m src.data.check                      # data/ (or $PROJECT_ROOT/data)
    python -m src.data.check /datasets --benchmark fewshot --sample 50

Folders are found exactly as the datamodules find them (one table of names,
``src.data.tables``): under each benchmark's folder (``vtab-1k/``, ``fgvc/``, ``few-shot/``,
``domain-generalization/``, ...) or directly under the root. For every split each protocol reads
it prints the sample count and the classes covered, checks that every listed image exists, and
decodes a random sample of them; it flags repeated lines and k-shot lists without k images per
class. Folders no task reads are named with what would make them load. Every problem comes with
its fix. Exit status: 0 when every task found is usable, 1 when one is present but defective
(absent benchmarks and tasks are listed, not failed), 2 with one ``error:`` line when the root
itself is missing.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from src.cli.entry import report_user_errors
from src.data import BENCHMARKS, DATAMODULES
from src.data.base import BenchmarkDataModule
from src.data.images import decode_image
from src.data.lists import read_list_file
from src.data.tables import CONTAINERS, DOMAIN_FOLDERS, TASK_FOLDERS
from src.errors import UserError


@dataclass
class TaskReport:
    name: str
    status: str = "ok"  # ok | missing | broken
    splits: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # make the task unusable (exit status 1)
    notes: list[str] = field(default_factory=list)  # loads, but differs from what it claims
    missing_train: list[str] = field(default_factory=list)  # k-shot training lists not there

    def lines(self) -> list[str]:
        status = "ok" if self.status == "ok" else self.status.upper()
        if self.status == "missing":
            return [f"  {self.name:<28} {status}: {self.splits[0]}"]
        return (
            [f"  {self.name:<28} {status}"]
            + [f"      {split}" for split in self.splits]
            + [f"    ! {problem}" for problem in dict.fromkeys(self.problems)]
            + [f"    ~ {note}" for note in dict.fromkeys(self.notes)]
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
    """(split, is the training split) for one variant, in reading order (``a+b``: a, then b)."""
    train = dm.splits()["train"]
    names = [train, dm.splits()["val"], *dm.test_sets().values()]
    return [(part, name == train) for name in dict.fromkeys(names) for part in name.split("+")]


def _places(dm: BenchmarkDataModule) -> str:
    root = Path(dm.root)
    return ", ".join(f"{root / c}/" for c in dm.containers) + f" or {root}/"


def _check_split(
    dm: BenchmarkDataModule, split: str, is_train: bool, report: TaskReport, sample: int, rng
) -> None:
    try:
        samples = dm.read_split(split)
    except UserError as error:
        report.status = "broken"
        if is_train and re.search(r"train_meta\.list\S* not found", str(error)):
            report.missing_train.append(split)  # one line for all of them, below
        else:
            report.problems.append(str(error))
        return
    labels = Counter(label for _, label in samples)
    distinct = len(set(samples))
    count = (
        f"{len(samples)} images"
        if distinct == len(samples)
        else (f"{len(samples)} lines, {distinct} distinct images")
    )
    report.splits.append(f"{split}: {count}, {len(labels)}/{dm.num_classes} classes")
    if distinct < len(samples):
        report.notes.append(
            f"{split}: {len(samples) - distinct} of its {len(samples)} lines repeat an earlier "
            f"line, so it holds {distinct} images, not {len(samples)}; training uses the list as "
            f"written (repeats included), as the official code does"
        )
    shots = re.search(r"num_shot_(\d+)", split)
    if is_train and shots:
        per_class = Counter(label for _, label in set(samples))
        off = sorted({n for n in per_class.values() if n != int(shots.group(1))})
        if off:
            report.notes.append(
                f"{split}: a {shots.group(1)}-shot list, but some classes have "
                f"{', '.join(map(str, off))} distinct images"
            )
    if is_train and len(labels) < dm.num_classes and dm.train_covers_all_classes:
        report.status = "broken"
        report.problems.append(
            f"{split} has samples of {len(labels)} of {dm.num_classes} classes; "
            f"restore the complete list"
        )
    missing = [path for path, _ in samples if not path.is_file()]
    if missing:
        report.status = "broken"
        report.problems.append(
            f"{split}: {len(missing)} of {len(samples)} listed images not found, e.g. "
            f"{missing[0]}; put the dataset's images where the list places them"
        )
    present = sorted({path for path, _ in samples if path.is_file()})
    for path in rng.sample(present, min(sample, len(present))):
        try:
            decode_image(path, 8)
        except UserError as error:
            report.status = "broken"
            report.problems.append(f"{split}: {error}")


def check_task(
    cls: type[BenchmarkDataModule],
    root: Path,
    task: str,
    sample: int,
    rng: random.Random,
    num_classes: int | None = None,
    label: str | None = None,
) -> TaskReport:
    report = TaskReport(label or f"{cls.benchmark}/{task}")
    seen: set[str] = set()
    for variant in _variants(cls):
        dm = cls(root=str(root), task=task, num_workers=0, num_classes=num_classes, **variant)
        if dm.locate(dm.task_folder_names()) is None:
            report.status = "missing"
            names = " or ".join(dm.task_folder_names())
            report.splits.append(f"no folder {names} under {_places(dm)}")
            return report
        for split, is_train in _splits(dm):
            if split not in seen:
                seen.add(split)
                _check_split(dm, split, is_train, report, sample, rng)
        try:
            dm.class_subsets  # noqa: B018  (domain shift: A/R must cover their 200 classes)
        except UserError as error:
            report.status = "broken"
            report.problems.append(str(error))
    if report.missing_train:
        folder = dm.locate(dm.task_folder_names()) / "annotations"
        names = ", ".join(split.rsplit("/", 1)[-1] for split in report.missing_train)
        report.problems.append(
            f"{len(report.missing_train)} training list(s) not in {folder}: {names}; runs with "
            f"those data.shots / data.split_seed stop with an error (copy them from the source)"
        )
    return report


# ------------------------------------------------------------------------- unknown folders
def _names_read(benchmark: str) -> set[str]:
    names = {n for names in TASK_FOLDERS[benchmark].values() for n in names}
    return names | (
        {n for names in DOMAIN_FOLDERS.values() for n in names} if benchmark == "domain" else set()
    )


def _accepted(benchmark: str) -> str:
    tasks = TASK_FOLDERS[benchmark]
    if benchmark == "domain":
        tasks = {**tasks, **DOMAIN_FOLDERS}
    return "; ".join(" or ".join(names) for names in tasks.values())


def _largest_label(folder: Path) -> int | None:
    """The largest label in a folder's list files (VTAB: *.txt, few-shot: annotations/*)."""
    lists = [*folder.glob("*.txt"), *(p for p in folder.glob("annotations/*") if p.is_file())]
    largest = None
    for path in lists:
        try:
            samples = read_list_file(path, sys.maxsize)
        except UserError:
            continue
        largest = max([largest or 0, *(label for _, label in samples)])
    return largest


def _scans(benchmark: str, container: str) -> bool:
    """Is ``container`` this benchmark's to report on? Not when it is another's first folder
    (few-shot/ belongs to few-shot, though domain shift finds NOAH's imagenet/ there)."""
    return not any(cs[0] == container for b, cs in CONTAINERS.items() if b != benchmark)


def _unknown_folders(cls: type[BenchmarkDataModule], root: Path) -> list[Path]:
    """Folders in this benchmark's place that no task of any benchmark searching there reads."""
    unknown = []
    for container in CONTAINERS[cls.benchmark]:
        folder = root / container
        if not folder.is_dir() or not _scans(cls.benchmark, container):
            continue
        read = set().union(*(_names_read(b) for b, cs in CONTAINERS.items() if container in cs))
        unknown += [
            p
            for p in sorted(folder.iterdir())
            if p.is_dir() and p.name not in read and not p.name.startswith(".")
        ]
    containers = {c for cs in CONTAINERS.values() for c in cs}
    unknown += [
        p
        for p in sorted(root.iterdir())
        if p.is_dir()
        and p.name not in containers
        and p.name not in _names_read(cls.benchmark)
        and cls.holds_task(p)
        and not p.name.startswith(".")
    ]
    return unknown


def _report_unknown(
    cls: type[BenchmarkDataModule], root: Path, folder: Path, sample: int, rng
) -> tuple[list[str], bool]:
    """Lines about a folder no task reads, and whether it is usable. Advice is only given when
    the checker has just loaded the folder with it."""
    if cls.benchmark == "domain" or not cls.custom_tasks:
        return [
            f"  {folder}: not read by {cls.display}; its folder names are: "
            f"{_accepted(cls.benchmark)}; rename the folder if it is one of these"
        ], True
    largest = _largest_label(folder)
    if largest is None:
        return [f"  {folder}: no list files; not a {cls.display} task ({cls.layout})"], True
    task = folder.name
    label = f"{cls.benchmark}/{task} (custom)"
    report = check_task(cls, root, task, sample, rng, num_classes=largest + 1, label=label)
    lines = report.lines()
    if report.status == "ok":
        lines.append(
            f"      loads as a custom task: data.task={task} data.num_classes={largest + 1} "
            f"(the largest label + 1)"
        )
    return lines, report.status != "broken"


# ------------------------------------------------------------------------------------ roots
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
        located = {
            task: cls(str(root), task).locate(cls(str(root), task).task_folder_names())
            for task in cls.tasks
        }
        # Benchmark folders present: its own ones, and a shared one (few-shot/ for domain
        # shift's imagenet) only when a task of this benchmark was found in it.
        holding = {folder.parent for folder in located.values() if folder is not None}
        own = [
            root / c
            for c in CONTAINERS[name]
            if (root / c).is_dir() and (_scans(name, c) or root / c in holding)
        ]
        unknown = _unknown_folders(cls, root)
        if not own and not holding:
            if unknown and cls.custom_tasks and name != "domain":
                lines.append(f"{name}: no task of its own, other folders:")
            else:
                lines.append(f"{name}: not present (expected {cls.layout})")
                continue
        elif not own:
            folders = " or ".join(f"{c}/" for c in CONTAINERS[name])
            lines.append(
                f"{name}: task folders directly under {root} (no {folders} folder); the "
                f"datamodules read them there: pass data.root={root}"
            )
        else:
            lines.append(f"{name}: {', '.join(map(str, own))}")
        for task in cls.tasks:
            report = check_task(cls, root, task, sample, rng)
            healthy &= report.status != "broken"
            lines += report.lines()
        for folder in unknown:
            more, usable = _report_unknown(cls, root, folder, sample, rng)
            healthy &= usable
            lines += more
    text_lines, text_healthy = check_text_root(root, benchmarks)  # GLUE, GSM-8K
    return lines + text_lines, healthy and text_healthy


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="data root (default: data/)")
    parser.add_argument("--benchmark", action="append", choices=sorted(DATAMODULES))
    parser.add_argument("--sample", type=int, default=20, help="images decoded per split")
    args = parser.parse_args(argv)
    root = args.root
    if root is None:
        import os

        root = Path(os.environ.get("PROJECT_ROOT", ".")) / "data"
    if not root.is_dir():
        folders = sorted({f"{c}/" for cs in CONTAINERS.values() for c in cs})
        raise UserError(
            f"data root {root} does not exist; pass the folder holding "
            f"{', '.join(folders)} or the task folders themselves"
        )
    lines, healthy = check_root(root, args.benchmark, args.sample)
    print("\n".join(lines))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
