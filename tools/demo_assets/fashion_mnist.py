"""Build a VTAB-1k-style demo task from Fashion-MNIST (Debian package ``dataset-fashion-mnist``).

The result looks exactly like a task folder made by NOAH's VTAB preparation script, so the normal
VTAB datamodule reads it unchanged::

    <out>/train800.txt  val200.txt  train800val200.txt  test.txt  prepare_demo.json
    <out>/images/train/012345.png     (index into the official training set)
    <out>/images/test/000042.png      (index into the official test set)

train800/val200 are disjoint, class-balanced draws from the official training set; test is a
class-stratified, seeded subset of the official test set (``n_test=0`` keeps all 10,000).

    python -m tools.demo_assets.fashion_mnist [--source DIR] [--out DIR] [--seed 0] [--n-test 2000]
        [--force]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from src.cli.entry import report_user_errors
from src.errors import UserError
from tools.demo_assets.common import asset_parser, atomic_output

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path("data/vtab-1k/fashion_mnist")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
LIST_FILES = ("train800.txt", "val200.txt", "train800val200.txt", "test.txt")
META_FILE = "prepare_demo.json"
# IDX magic numbers: 0x0801 = unsigned bytes, 1 dimension; 0x0803 = unsigned bytes, 3 dimensions.
MAGIC_LABELS, MAGIC_IMAGES = 2049, 2051
SOURCE_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------------------------
# IDX reading
# --------------------------------------------------------------------------------------------
def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a uint8 array, validating its header."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip signature; decide by content, not by file extension
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UserError(f"{path}: corrupt gzip data ({exc}); re-install the dataset") from exc
    if len(raw) < 8:
        raise UserError(f"{path}: too short to be an IDX file; re-install the dataset")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise UserError(
            f"{path}: bad IDX magic number {magic} (expected {expected_magic}); "
            "the file is not the expected Fashion-MNIST IDX file, re-install the dataset"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    n_bytes = int(np.prod(dims))
    if len(raw) != header + n_bytes:
        raise UserError(
            f"{path}: IDX header says {dims} ({n_bytes} bytes) but the file holds "
            f"{len(raw) - header} data bytes; the file is truncated or corrupt, re-install it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(source: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (source / name).is_file():
            return source / name
    raise UserError(
        f"{source / (stem + '.gz')} not found; the Fashion-MNIST folder is incomplete, "
        "re-install dataset-fashion-mnist or pass --source"
    )


def load_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 28, 28] and labels [N] of ``split`` ('train' or 'test'), cross-checked."""
    img_path = _find(source, SOURCE_FILES[f"{split}_images"])
    lab_path = _find(source, SOURCE_FILES[f"{split}_labels"])
    images = read_idx(img_path, MAGIC_IMAGES)
    labels = read_idx(lab_path, MAGIC_LABELS)
    if len(images) != len(labels):
        raise UserError(
            f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} "
            "labels; re-install the dataset"
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise UserError(f"{lab_path}: label {labels.max()} out of range 0..9; re-install it")
    return images, labels


# --------------------------------------------------------------------------------------------
# Split selection
# --------------------------------------------------------------------------------------------
def _per_class(total: int, n_classes: int) -> list[int]:
    """Spread ``total`` as evenly as possible over classes (first classes get the remainder)."""
    return [total // n_classes + (c < total % n_classes) for c in range(n_classes)]


def stratified_pick(
    labels: np.ndarray, counts: list[list[int]], rng: np.random.Generator, what: str
) -> list[np.ndarray]:
    """Draw disjoint index sets per class; ``counts[k][c]`` = how many of class c go to set k."""
    picks: list[list[np.ndarray]] = [[] for _ in counts]
    for c in range(len(CLASS_NAMES)):
        pool = rng.permutation(np.flatnonzero(labels == c))
        need = sum(k[c] for k in counts)
        if need > len(pool):
            raise UserError(
                f"{what}: class {c} has {len(pool)} images but {need} are needed; "
                "ask for fewer images (e.g. a smaller --n-test)"
            )
        start = 0
        for k, per_class in enumerate(counts):
            picks[k].append(pool[start : start + per_class[c]])
            start += per_class[c]
    # Sorted by source index: stable, readable lists; the datamodule shuffles for training.
    return [np.sort(np.concatenate(p)) for p in picks]


# --------------------------------------------------------------------------------------------
# Output folder
# --------------------------------------------------------------------------------------------
def is_complete(out: Path) -> bool:
    """True when all four list files exist and every image they list exists."""
    for name in LIST_FILES:
        lst = out / name
        if not lst.is_file():
            return False
        for line in lst.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2 or not (out / parts[0]).is_file():
                return False
    return True


def _write_images(folder: Path, split: str, idx: np.ndarray, images: np.ndarray) -> None:
    (folder / "images" / split).mkdir(parents=True, exist_ok=True)
    for i in idx:
        # uint8 [28, 28] becomes a grayscale ("L") PNG: lossless, pixels round-trip exactly.
        Image.fromarray(images[i]).save(folder / _rel(split, i))


def _rel(split: str, i: int) -> str:
    return f"images/{split}/{int(i):06d}.png"


def _write_list(path: Path, split: str, idx: np.ndarray, labels: np.ndarray) -> None:
    path.write_text("".join(f"{_rel(split, i)} {int(labels[i])}\n" for i in idx))


def prepare(
    source: Path = DEFAULT_SOURCE,
    out: Path = DEFAULT_OUT,
    seed: int = 0,
    n_test: int = 2000,
    n_train: int = 800,
    n_val: int = 200,
    force: bool = False,
) -> dict:
    """Write the task folder; return a summary dict (``skipped`` is True if it was complete)."""
    source, out = Path(source), Path(out)
    meta = {
        "source": str(source),
        "seed": seed,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "classes": list(CLASS_NAMES),
    }
    if not force and is_complete(out):
        old = out / META_FILE
        if old.is_file():
            prev = json.loads(old.read_text())
            diff = [k for k in ("seed", "n_train", "n_val", "n_test") if prev.get(k) != meta[k]]
            if diff:  # never silently keep a task built with other settings
                raise UserError(
                    f"{out} was built with different {', '.join(diff)} "
                    f"({', '.join(f'{k}={prev.get(k)}' for k in diff)}); "
                    "pass --force to rebuild it"
                )
        return {**meta, "out": str(out), "skipped": True}
    if not source.is_dir():
        raise UserError(
            f"Fashion-MNIST not found at {source}; install Debian package "
            "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
            "or pass --source"
        )
    if min(n_train, n_val, n_test) < 0:
        raise UserError(
            f"split sizes must be >= 0, got n_train={n_train} n_val={n_val} "
            f"n_test={n_test}; pass non-negative sizes"
        )

    train_x, train_y = load_split(source, "train")
    test_x, test_y = load_split(source, "test")
    k = len(CLASS_NAMES)
    # Separate child streams so changing n_test never changes the train/val draw.
    rng_train, rng_test = (np.random.default_rng([seed, s]) for s in (0, 1))
    tr, va = stratified_pick(
        train_y, [_per_class(n_train, k), _per_class(n_val, k)], rng_train, "training split"
    )
    if n_test == 0:
        te = np.arange(len(test_y))
    else:
        (te,) = stratified_pick(test_y, [_per_class(n_test, k)], rng_test, "test split")

    with atomic_output(out) as tmp:
        _write_images(tmp, "train", np.concatenate([tr, va]), train_x)
        _write_images(tmp, "test", te, test_x)
        _write_list(tmp / "train800.txt", "train", tr, train_y)
        _write_list(tmp / "val200.txt", "train", va, train_y)
        _write_list(tmp / "train800val200.txt", "train", np.concatenate([tr, va]), train_y)
        _write_list(tmp / "test.txt", "test", te, test_y)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {
        **meta,
        "out": str(out),
        "skipped": False,
        "counts": {"train800": len(tr), "val200": len(va), "test": len(te)},
    }


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    source_help = "folder with the Fashion-MNIST IDX files (.gz or raw)"
    p = asset_parser(__doc__, "--source", DEFAULT_SOURCE, source_help, DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=2000, help="test subset size; 0 = all 10,000")
    # The list files keep their VTAB names; other sizes are for tests and quick experiments.
    p.add_argument("--n-train", type=int, default=800, help="train800 size (class-balanced)")
    p.add_argument("--n-val", type=int, default=200, help="val200 size (class-balanced)")
    _build(p.parse_args(argv))


def _build(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    s = prepare(a.source, a.out, a.seed, a.n_test, a.n_train, a.n_val, a.force)
    if s["skipped"]:
        print(f"fashion_mnist: {a.out} already complete, nothing to do (--force rebuilds)")
        return
    c = s["counts"]
    print(
        f"fashion_mnist: wrote {a.out} (train800={c['train800']} val200={c['val200']} "
        f"test={c['test']}, seed={a.seed}) in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
