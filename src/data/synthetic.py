"""Generated tasks in each benchmark's real on-disk layout: real image files, real list / JSON
files, class-dependent content (VTAB-1k, FGVC, few-shot, ImageNet domain shift).

Tests build their fixtures with it, and ``make train`` uses it to show a run without any download:

    python -m src.data.synthetic --root data --task synthetic --classes 4
"""

from __future__ import annotations

import argparse
import colorsys
import json
from pathlib import Path

import numpy as np
from PIL import Image

VTAB_SPLIT_FILES = ("train800", "val200", "test")


def _class_image(label: int, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image whose colour and stripe direction identify the class.

    Hue separates classes (evenly spaced around the colour wheel) and the stripe orientation
    (4 directions) is a second, spatial cue; both survive JPEG compression. Per-image noise,
    brightness and stripe phase keep samples distinct so the task is learnable, not trivial.
    """
    hue = label / num_classes
    base = np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.8)) * 255.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    direction = [xs, ys, xs + ys, xs - ys][label % 4]
    period = max(size / 4.0, 4.0)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 35.0 * np.sign(np.sin(2 * np.pi * direction / period + phase))
    brightness = rng.uniform(-15.0, 15.0)
    noise = rng.normal(0.0, 10.0, size=(size, size, 3))
    image = base[None, None, :] + (stripes + brightness)[..., None] + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def write_vtab_task(
    root: Path,
    task: str = "toy",
    num_classes: int = 4,
    n_train: int = 32,
    n_val: int = 16,
    n_test: int = 32,
    img_size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a VTAB-1k-style task under ``<root>/vtab-1k/<task>`` and return the task folder.

    Labels cycle 0..num_classes-1 through each split, so every split is balanced.
    ``train800val200.txt`` is train800 followed by val200, as in NOAH's lists.
    """
    task_dir = Path(root) / "vtab-1k" / task
    rng = np.random.default_rng(seed)
    lines: dict[str, list[str]] = {}
    for split, count in zip(VTAB_SPLIT_FILES, (n_train, n_val, n_test), strict=True):
        image_dir = task_dir / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        lines[split] = []
        for index in range(count):
            label = index % num_classes
            relative = f"images/{split}/{index:06d}.jpg"
            pixels = _class_image(label, num_classes, img_size, rng)
            Image.fromarray(pixels, "RGB").save(task_dir / relative, quality=90)
            lines[split].append(f"{relative} {label}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, split_lines in lines.items():
        (task_dir / f"{split}.txt").write_text("\n".join(split_lines) + "\n")
    return task_dir


def _write_images(
    folder: Path, relatives: list[str], labels: list[int], num_classes: int, size: int, rng
) -> None:
    for relative, label in zip(relatives, labels, strict=True):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # Non-square images, so crops and aspect-keeping resizes are exercised.
        pixels = _class_image(label, num_classes, size, rng)[:, : size * 3 // 4]
        Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(path, quality=90)


def _write_list(path: Path, relatives: list[str], labels: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{r} {y}" for r, y in zip(relatives, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def write_fewshot_task(
    root: Path,
    task: str = "toy",
    num_classes: int = 4,
    shots: tuple[int, ...] = (1, 2),
    split_seeds: tuple[int, ...] = (0, 1),
    n_val: int = 8,
    n_test: int = 12,
    img_size: int = 40,
    seed: int = 0,
) -> Path:
    """NOAH's few-shot layout under ``<root>/few-shot/<task>``: a pool of training images,
    ``annotations/train_meta.list.num_shot_<k>.seed_<s>`` drawing k per class from it, and
    ``val_meta.list`` / ``test_meta.list``; paths relative to ``images/``."""
    task_dir = Path(root) / "few-shot" / task
    rng = np.random.default_rng(seed)
    pool = max(shots) * len(split_seeds)
    train_rel = [f"train/{c:03d}_{i:03d}.jpg" for c in range(num_classes) for i in range(pool)]
    train_lab = [c for c in range(num_classes) for _ in range(pool)]
    _write_images(task_dir / "images", train_rel, train_lab, num_classes, img_size, rng)
    for k in shots:
        for s in split_seeds:
            # Disjoint draws per seed; class-major order as in NOAH's lists.
            chosen = [c * pool + s * max(shots) + i for c in range(num_classes) for i in range(k)]
            _write_list(
                task_dir / "annotations" / f"train_meta.list.num_shot_{k}.seed_{s}",
                [train_rel[i] for i in chosen],
                [train_lab[i] for i in chosen],
            )
    for split, count in (("val", n_val), ("test", n_test)):
        relatives = [f"{split}/{i:05d}.jpg" for i in range(count)]
        labels = [i % num_classes for i in range(count)]
        _write_images(task_dir / "images", relatives, labels, num_classes, img_size, rng)
        _write_list(task_dir / "annotations" / f"{split}_meta.list", relatives, labels)
    return task_dir


def write_fgvc_task(
    root: Path,
    task: str = "cub",
    num_classes: int = 4,
    counts: tuple[int, int, int] = (12, 4, 8),
    first_id: int = 1,
    image_folder: str = "images",
    img_size: int = 40,
    seed: int = 0,
) -> Path:
    """VPT's FGVC layout under ``<root>/fgvc/<task>``: train/val/test.json mapping paths
    (relative to ``image_folder``) to the dataset's own label ids ``first_id, first_id+1, …``."""
    task_dir = Path(root) / "fgvc" / task
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        relatives = [f"{i % num_classes:03d}.class/{split}_{i:04d}.jpg" for i in range(count)]
        labels = [i % num_classes for i in range(count)]
        _write_images(task_dir / image_folder, relatives, labels, num_classes, img_size, rng)
        table = {r: first_id + y for r, y in zip(relatives, labels, strict=True)}
        (task_dir / f"{split}.json").write_text(json.dumps(table))
    return task_dir


def write_domain_sets(
    root: Path,
    task: str = "toynet",
    num_classes: int = 6,
    shots: int = 2,
    n_test: int = 6,
    subset: tuple[int, ...] = (1, 3, 5),
    img_size: int = 40,
    seed: int = 0,
) -> Path:
    """This project's domain-shift tree (NOAH's file format) under ``<root>/domain-adaptation/``:
    the source set ``<task>`` (``images/train``, ``images/val``, a ``shots``-shot training list and
    ``val_meta.list``) and the four shifted sets, whose ``-a``/``-r`` lists use only the
    ``subset`` classes (source-class ids, as ImageNet-A/-R use ImageNet-1K ids)."""
    base = Path(root) / "domain-adaptation"
    rng = np.random.default_rng(seed)
    source = base / task
    train_rel = [f"n{c:05d}/{c}_{i}.jpg" for c in range(num_classes) for i in range(shots)]
    train_lab = [c for c in range(num_classes) for _ in range(shots)]
    _write_images(source / "images" / "train", train_rel, train_lab, num_classes, img_size, rng)
    _write_list(
        source / "annotations" / f"train_meta.list.num_shot_{shots}.seed_0", train_rel, train_lab
    )
    sets = {"": range(num_classes), "imagenetv2": range(num_classes)}
    sets |= {"imagenet-sketch": range(num_classes), "imagenet-a": subset, "imagenet-r": subset}
    for folder, classes in sets.items():
        classes = list(classes)
        labels = [classes[i % len(classes)] for i in range(n_test)]
        relatives = [f"{'val' if not folder else 'x'}/{i:05d}.jpg" for i in range(n_test)]
        image_root = source / "images" / "val" if not folder else base / folder
        _write_images(image_root, relatives, labels, num_classes, img_size, rng)
        _write_list((base / (folder or task)) / "annotations" / "val_meta.list", relatives, labels)
    return base


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path("data"), help="data root (holds vtab-1k/)"
    )
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--train", type=int, default=160, help="images in train800")
    parser.add_argument("--val", type=int, default=40, help="images in val200")
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    args = parser.parse_args(argv)
    task_dir = args.root / "vtab-1k" / args.task
    if (task_dir / "test.txt").is_file():
        print(f"{task_dir} exists; delete it to regenerate")
        return
    write_vtab_task(args.root, args.task, args.classes, args.train, args.val, args.test, args.size)
    print(
        f"wrote {task_dir}: {args.classes} classes, {args.train}+{args.val} train, {args.test} test"
    )


if __name__ == "__main__":
    main()
