"""A generated VTAB-1k-format task: real image files and list files, class-dependent content.

Tests build their fixtures with it, and ``make train`` uses it to show a run without any download:

    python -m src.data.synthetic --root data --task synthetic --classes 4
"""

from __future__ import annotations

import argparse
import colorsys
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
