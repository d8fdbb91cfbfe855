"""Image files to cached uint8 pixels, and the datasets that serve them.

Every benchmark decodes each image once: into memory while the datamodule's budget
(``data.cache_limit_gb``) lasts, and otherwise into a memory-mapped ``.npy`` file under
``data.cache_dir``, which later epochs (and later runs) read instead of re-decoding full-size
JPEGs. Per-item views (crop, flip) work on those cached uint8 tensors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from src.data.transforms import normalise
from src.errors import UserError

log = logging.getLogger(__name__)

Sample = tuple[Path, int]
View = Callable[[torch.Tensor], torch.Tensor]

# stretch: resize to size x size (VTAB's preprocessing, aspect ratio not kept).
# shorter_side: resize the shorter side to size, then centre-crop size x size (aspect kept).
FITS = ("stretch", "shorter_side")


def one_line(text: object, limit: int = 200) -> str:
    """Keep user-facing messages on one line and readable when the offending text is huge."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _fit(image: Image.Image, size: int, fit: str) -> Image.Image:
    if fit == "stretch":
        return image.resize((size, size), Image.Resampling.BICUBIC)
    width, height = image.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_image(path: str | Path, size: int, fit: str = "stretch") -> torch.Tensor:
    """Read one image as RGB and fit it to (size, size); returns uint8 [3, size, size]."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            rgb = _fit(image.convert("RGB"), size, fit)
    except FileNotFoundError:
        raise UserError(
            f"image {path} not found; a list file names it: put the dataset's image there "
            f"(or point data.root at the tree that has it; layouts: docs/data.md)"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL signals unreadable/truncated files with OSError (UnidentifiedImageError) and
        # some broken headers with ValueError/SyntaxError.
        raise UserError(
            f"cannot decode image {path}: {one_line(error)}; "
            f"replace the file or remove its line from the list file"
        ) from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_into(
    out, paths: Sequence[Path], size: int, fit: str = "stretch", threads: int = 4
) -> None:
    """Decode ``paths`` into ``out[i]`` (a preallocated uint8 tensor or memory-mapped array).

    Threads suffice because PIL releases the GIL while decoding and resizing.
    """

    def fill(index: int) -> None:
        # Looked up at call time so tests can count decodes by patching this module.
        pixels = decode_image(paths[index], size, fit)
        out[index] = pixels if isinstance(out, torch.Tensor) else pixels.numpy()

    if threads <= 1:
        for index in range(len(paths)):
            fill(index)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(len(paths))))  # list() re-raises the first worker error


class CachedImageDataset(Dataset):
    """Items ``(image float [3,H,W], label int64, index)`` from uint8 pixels decoded once.

    ``pixels`` is an in-memory uint8 tensor [N,3,S,S] or the path of a ``.npy`` file with the
    same array, memory-mapped on first access in each worker (a mapped array would be copied if
    it were pickled to the workers). ``view`` maps one uint8 image to the one the model sees
    (a crop, a flip); ``index`` is the position in the split, which per-sample state such as
    PACE-fast's logit history is keyed by.
    """

    def __init__(self, pixels: torch.Tensor | Path, labels: torch.Tensor, view: View | None = None):
        if isinstance(pixels, torch.Tensor) and (
            pixels.dtype != torch.uint8 or pixels.dim() != 4 or len(pixels) != len(labels)
        ):
            raise ValueError("pixels must be uint8 [N,3,H,W] with one label per image")
        self.pixels = pixels
        self.labels = labels
        self.view = view
        self._mapped: np.ndarray | None = None

    @property
    def on_disk(self) -> bool:
        return not isinstance(self.pixels, torch.Tensor)

    def __len__(self) -> int:
        return len(self.labels)

    def uint8(self, index: int) -> torch.Tensor:
        """The cached pixels of item ``index`` (before the view)."""
        if not self.on_disk:
            return self.pixels[index]
        if self._mapped is None:
            self._mapped = open_cache(Path(self.pixels), len(self.labels))
        try:
            return torch.from_numpy(np.array(self._mapped[index]))
        except (OSError, ValueError) as error:  # the file shrank under us (deleted, disk full)
            raise cache_unreadable(Path(self.pixels), error) from None

    def __getitem__(self, index: int):
        image = self.uint8(index)
        if self.view is not None:
            image = self.view(image)
        return normalise(image), self.labels[index], index

    def __getstate__(self):
        return {**self.__dict__, "_mapped": None}


def open_cache(path: Path, count: int) -> np.ndarray:
    """The memory-mapped pixels of a decoded-image cache file; a damaged one is a UserError (in
    a DataLoader worker too, where it is first opened)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise cache_unreadable(path, error) from None
    if array.ndim != 4 or array.shape[0] != count or array.dtype != np.uint8:
        raise cache_unreadable(path, f"holds {array.shape} {array.dtype}, not {count} images")
    return array


def cache_unreadable(path: Path, error: object) -> UserError:
    return UserError(
        f"decoded-image cache {path} is unreadable ({one_line(error)}); delete it and run "
        "again (the images are decoded anew)"
    )


def _cache_file(cache_dir: Path, samples: Sequence[Sample], size: int, fit: str) -> Path:
    """One file per (image list, size, fit): a later run on the same split reuses it."""
    digest = hashlib.sha256(f"{size}|{fit}".encode())
    for path, label in samples:
        digest.update(f"{path}|{label}\n".encode())
    return cache_dir / f"{digest.hexdigest()[:24]}_{len(samples)}x{size}.npy"


def _decode_to_disk(
    samples: Sequence[Sample], size: int, fit: str, cache_dir: Path, threads: int, name: str
) -> Path:
    target = _cache_file(cache_dir, samples, size, fit)
    if target.is_file():
        try:
            open_cache(target, len(samples))
            log.info("%s: reusing decoded images in %s", name, target)
            return target
        except UserError as damaged:  # e.g. truncated by a full disk: decode again
            log.warning("%s; decoding again", damaged)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=cache_dir, suffix=".partial.npy")
        os.close(handle)
    except OSError as error:
        raise UserError(
            f"cannot write the decoded-image cache in {cache_dir} ({one_line(error)}); "
            f"set data.cache_dir to a writable folder with space"
        ) from None
    start = time.perf_counter()
    try:
        shape = (len(samples), 3, size, size)
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        decode_into(array, [p for p, _ in samples], size, fit, threads)
        array.flush()
        del array
        os.replace(partial, target)  # atomic: a concurrent run sees a whole file or none
    finally:
        Path(partial).unlink(missing_ok=True)
    log.info(
        "%s: decoded %d images at %dx%d in %.1fs into %s",
        name,
        len(samples),
        size,
        size,
        time.perf_counter() - start,
        target,
    )
    return target


class CacheBudget:
    """How many bytes of decoded pixels may still be held in memory (None = unlimited)."""

    def __init__(self, limit_gb: float | None):
        self.left = None if limit_gb is None else limit_gb * 1e9

    def take(self, nbytes: int) -> bool:
        if self.left is None:
            return True
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


def build_dataset(
    samples: Sequence[Sample],
    size: int,
    fit: str = "stretch",
    view: View | None = None,
    budget: CacheBudget | None = None,
    cache_dir: str | Path | None = None,
    threads: int = 4,
    name: str = "split",
) -> CachedImageDataset:
    """Decode a split once: into memory within ``budget``, else into a mapped file."""
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    nbytes = len(samples) * 3 * size * size
    if budget is None or budget.take(nbytes):
        start = time.perf_counter()
        pixels = torch.empty((len(samples), 3, size, size), dtype=torch.uint8)
        decode_into(pixels, [p for p, _ in samples], size, fit, threads)
        log.info(
            "%s: decoded %d images at %dx%d in %.1fs (%.2f GB in memory)",
            name,
            len(samples),
            size,
            size,
            time.perf_counter() - start,
            nbytes / 1e9,
        )
        return CachedImageDataset(pixels, labels, view)
    folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "pace-decoded"
    log.warning(
        "%s: %.1f GB of pixels exceed data.cache_limit_gb; caching them on disk in %s",
        name,
        nbytes / 1e9,
        folder,
    )
    return CachedImageDataset(
        _decode_to_disk(samples, size, fit, folder, threads, name), labels, view
    )
