"""Image-list datasets: `relative/path.jpg <label>` files, as used by VTAB-1k and few-shot.

Also the one place that turns an image file into pixels, so every benchmark resizes the same way
(PIL bicubic, which is what torchvision's Resize does on PIL images in the reference code).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from src.data.transforms import normalise
from src.errors import UserError

log = logging.getLogger(__name__)

LINE_FORM = "<relative/image/path> <integer label>"

Sample = tuple[Path, int]


def _one_line(text: str, limit: int = 200) -> str:
    """Keep user-facing messages on one line and readable when the offending text is huge."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def read_list_file(
    path: str | Path,
    num_classes: int,
    base_dir: str | Path | None = None,
    layout_hint: str | None = None,
) -> list[Sample]:
    """Parse a list file into (image path, label) pairs.

    Image paths are resolved against ``base_dir`` (default: the folder holding the list file,
    which is the task folder for VTAB-1k). ``layout_hint`` is appended to the "missing file"
    error so callers can describe their benchmark's layout.
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    if not path.is_file():
        hint = layout_hint or f"a text file with one '{LINE_FORM}' line per image"
        raise UserError(f"list file {path} not found; expected {hint}")
    samples: list[Sample] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        # rsplit keeps paths with spaces intact: the label is always the last token.
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise UserError(
                f"{path}:{number}: malformed line '{_one_line(line)}'; expected '{LINE_FORM}'"
            )
        relative, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise UserError(
                f"{path}:{number}: label '{_one_line(label_text)}' is not an integer; "
                f"expected '{LINE_FORM}'"
            ) from None
        if not 0 <= label < num_classes:
            raise UserError(
                f"{path}:{number}: label {label} is outside [0, {num_classes}); "
                f"fix the list file or set data.num_classes to the real class count"
            )
        samples.append((base / relative, label))
    if not samples:
        raise UserError(f"list file {path} has no samples; expected '{LINE_FORM}' lines")
    return samples


def decode_image(path: str | Path, size: int) -> torch.Tensor:
    """Read one image as RGB, bicubic-resize to (size, size); returns uint8 [3, size, size]."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    except FileNotFoundError:
        raise UserError(
            f"image {path} not found; restore it or remove its line from the list file"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL signals unreadable/truncated files with OSError (UnidentifiedImageError) and
        # some broken headers with ValueError/SyntaxError.
        raise UserError(
            f"cannot decode image {path}: {_one_line(error)}; "
            f"replace the file or remove its line from the list file"
        ) from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_images(paths: Sequence[Path], size: int, threads: int = 4) -> torch.Tensor:
    """Decode many images into one preallocated uint8 tensor [N, 3, size, size].

    Threads suffice because PIL releases the GIL while decoding and resizing; writing into a
    preallocated tensor avoids a second full-size copy from torch.stack.
    """
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def fill(index: int) -> None:
        # Looked up at call time so tests can count decodes by patching this module.
        out[index] = decode_image(paths[index], size)

    if threads <= 1:
        for index in range(len(paths)):
            fill(index)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            # list() re-raises the first worker exception (e.g. a UserError for a bad file).
            list(pool.map(fill, range(len(paths))))
    return out


class DecodedImageDataset(Dataset):
    """Images decoded once into memory; items are normalised on the fly.

    Items are ``(image float [3,H,W], label int64, index)``; ``index`` is the position in the
    split's list file, which per-sample state (e.g. PACE-fast's logit history) is keyed by.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("images must be uint8 [N,3,H,W] with one label per image")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return normalise(self.images[index]), self.labels[index], index


class LazyImageDataset(Dataset):
    """Same items as DecodedImageDataset but decodes on every access (for splits too big to
    hold in memory)."""

    def __init__(self, paths: Sequence[Path], labels: torch.Tensor, size: int):
        self.paths = list(paths)
        self.labels = labels
        self.size = size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return normalise(decode_image(self.paths[index], self.size)), self.labels[index], index


def build_dataset(
    samples: Sequence[Sample],
    size: int,
    threads: int = 4,
    cache_limit_gb: float | None = None,
    name: str = "split",
) -> Dataset:
    """Decode a split into memory, or fall back to lazy decoding above ``cache_limit_gb``."""
    paths = [path for path, _ in samples]
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    cache_bytes = len(paths) * 3 * size * size
    if cache_limit_gb is not None and cache_bytes > cache_limit_gb * 1e9:
        # Check existence now so a missing file fails at setup, not after hours of training.
        for path in paths:
            if not path.is_file():
                raise UserError(
                    f"image {path} not found; restore it or remove its line from the list file"
                )
        log.warning(
            "%s: %d images at %dx%d need %.1f GB > data.cache_limit_gb=%s; decoding lazily",
            name,
            len(paths),
            size,
            size,
            cache_bytes / 1e9,
            cache_limit_gb,
        )
        return LazyImageDataset(paths, labels, size)
    start = time.perf_counter()
    images = decode_images(paths, size, threads)
    log.info(
        "%s: decoded %d images at %dx%d in %.1fs (%.2f GB in memory)",
        name,
        len(paths),
        size,
        size,
        time.perf_counter() - start,
        cache_bytes / 1e9,
    )
    return DecodedImageDataset(images, labels)
