"""Write a VTAB-layout task (e.g. the demo's Fashion-MNIST) in NOAH's few-shot layout.

    python -m tools.demo_assets.to_fewshot   # data/vtab-1k/fashion_mnist -> data/few-shot/...
    python -m src.train experiment=fewshot_pace data.task=fashion_mnist data.num_classes=10 \\
        data.shots=1,2,4,8,16 data.split_seed=0,1,2 -m

For each shot count k and split seed s, ``annotations/train_meta.list.num_shot_<k>.seed_<s>``
holds k images per class drawn from ``train800.txt`` (seeded; for one seed the smaller draws are
prefixes of the larger ones, so 1-shot ⊂ 2-shot ⊂ … as the shots grow); ``val_meta.list`` is
``val200.txt`` (disjoint from every draw) and ``test_meta.list`` is ``test.txt``. Images are not
copied: ``<out>/images`` is a symbolic link to the source task's ``images/`` folder, and list
paths are relative to it, as in NOAH's lists. The ``annotations/`` folder is built beside its
target and renamed into place, so a rerun replaces all lists at once and leaves no stale ones.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from src.cli.entry import report_user_errors
from src.data.lists import read_list_file
from src.data.tables import SHOTS, SPLIT_SEEDS
from src.errors import UserError
from tools.demo_assets.common import asset_parser, atomic_output

DEFAULT_SOURCE = Path("data/vtab-1k/fashion_mnist")
DEFAULT_OUT = Path("data/few-shot/fashion_mnist")


def _relative_to_images(task_dir: Path, path: Path) -> str:
    relative = path.relative_to(task_dir)
    if relative.parts[0] != "images":
        raise UserError(
            f"{path} is not under {task_dir / 'images'}; the source must be a VTAB-layout task "
            f"whose list paths start with images/"
        )
    return str(Path(*relative.parts[1:]))


def draw_shots(labels: list[int], shots: int, seed: int, max_shots: int) -> list[int]:
    """Indices of ``shots`` samples per class, class-major; prefixes of the ``max_shots`` draw."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(by_class):
        pool = by_class[label]
        if len(pool) < max_shots:
            raise UserError(
                f"class {label} has {len(pool)} training images, fewer than {max_shots} shots; "
                f"lower --shots"
            )
        order = rng.permutation(len(pool))[:max_shots]
        chosen += [pool[i] for i in sorted(order[:shots])]
    return chosen


def convert(
    source: Path,
    out: Path,
    num_classes: int,
    shots: tuple[int, ...] = SHOTS,
    seeds: tuple[int, ...] = SPLIT_SEEDS,
) -> Path:
    source, out = Path(source).resolve(), Path(out)
    if not (source / "train800.txt").is_file():
        raise UserError(
            f"{source} is not a VTAB-layout task folder (no train800.txt); "
            f"make one first, e.g. python -m tools.demo_assets.fashion_mnist"
        )
    splits = {
        name: read_list_file(source / f"{name}.txt", num_classes)
        for name in ("train800", "val200", "test")
    }
    out.mkdir(parents=True, exist_ok=True)
    link = out / "images"
    if link.is_symlink() or link.exists():
        if link.resolve() != (source / "images").resolve():
            raise UserError(f"{link} exists and is not a link to {source / 'images'}; remove it")
    else:
        link.symlink_to(source / "images", target_is_directory=True)

    def write(folder: Path, name: str, samples) -> None:
        lines = [f"{_relative_to_images(source, path)} {label}" for path, label in samples]
        (folder / name).write_text("\n".join(lines) + "\n")

    train = splits["train800"]
    labels = [label for _, label in train]
    with atomic_output(out / "annotations") as annotations:
        annotations.mkdir()
        for seed in seeds:
            for k in shots:
                chosen = draw_shots(labels, k, seed, max(shots))
                write(
                    annotations,
                    f"train_meta.list.num_shot_{k}.seed_{seed}",
                    [train[i] for i in chosen],
                )
        write(annotations, "val_meta.list", splits["val200"])
        write(annotations, "test_meta.list", splits["test"])
    meta = {
        "source": str(source),
        "shots": list(shots),
        "seeds": list(seeds),
        "num_classes": num_classes,
    }
    (out / "to_fewshot.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    source_help = "VTAB-layout task folder (train800.txt, val200.txt, test.txt)"
    parser = asset_parser(__doc__, "--source", DEFAULT_SOURCE, source_help, DEFAULT_OUT, False)
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    parser.add_argument(
        "--shots", default=",".join(map(str, SHOTS)), help="comma-separated shot counts"
    )
    parser.add_argument(
        "--seeds", default=",".join(map(str, SPLIT_SEEDS)), help="comma-separated split seeds"
    )
    _build(parser.parse_args(argv))


def _build(args: argparse.Namespace) -> None:
    try:
        shots = tuple(int(x) for x in args.shots.split(","))
        seeds = tuple(int(x) for x in args.seeds.split(","))
    except ValueError:
        raise UserError("--shots and --seeds take comma-separated integers") from None
    out = convert(args.source, args.out, args.classes, shots, seeds)
    print(f"wrote {out}: {len(shots)} shot counts x {len(seeds)} split seeds")


if __name__ == "__main__":
    main()
