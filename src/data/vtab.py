"""VTAB-1k in the layout produced by NOAH's preparation script.

`<root>/vtab-1k/<task>/{train800,val200,train800val200,test}.txt`, lines
`images/<split>/000123.jpg <label>` relative to the task folder. VTAB uses no augmentation, so
each split is decoded and resized once at setup and kept in memory as uint8.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from src.data.lists import Sample, build_dataset, read_list_file
from src.errors import UserError

VTAB_GROUPS: dict[str, list[str]] = {
    "Natural": [
        "cifar",
        "caltech101",
        "dtd",
        "oxford_flowers102",
        "oxford_iiit_pet",
        "svhn",
        "sun397",
    ],
    "Specialized": ["patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"],
    "Structured": [
        "clevr_count",
        "clevr_dist",
        "dmlab",
        "kitti",
        "dsprites_loc",
        "dsprites_ori",
        "smallnorb_azi",
        "smallnorb_ele",
    ],
}

VTAB_TASKS: dict[str, int] = {
    "cifar": 100,
    "caltech101": 102,
    "dtd": 47,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
}

# Which list file plays which role. "tune" selects hyper-parameters on val200; "final" is the
# reported number: train on all 1000 labelled images, evaluate on the official test split.
PROTOCOL_SPLITS: dict[str, dict[str, str]] = {
    "tune": {"train": "train800", "val": "val200", "test": "val200"},
    "final": {"train": "train800val200", "val": "test", "test": "test"},
}

LIST_FILES = ("train800", "val200", "train800val200", "test")

_LAYOUT = (
    "<root>/vtab-1k/<task>/train800.txt, val200.txt, train800val200.txt, test.txt with lines "
    "'images/<split>/000123.jpg <label>' (the layout produced by NOAH's VTAB-1k preparation)"
)

_STAGE_ROLES = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
    None: ("train", "val", "test"),
}


def _resolve_num_classes(task: str, num_classes: int | None) -> int:
    known = VTAB_TASKS.get(task)
    if known is None and num_classes is None:
        raise UserError(
            f"unknown VTAB task '{task}'; valid tasks: {', '.join(VTAB_TASKS)}; "
            f"for a custom task in the same layout also pass data.num_classes"
        )
    if num_classes is None:
        return known
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"data.num_classes must be a positive integer, got {num_classes!r}")
    if known is not None and num_classes != known:
        raise UserError(
            f"VTAB task '{task}' has {known} classes but data.num_classes={num_classes}; "
            f"set data.num_classes={known} or leave it unset"
        )
    return num_classes


class VTABDataModule(L.LightningDataModule):
    """One VTAB-1k task; batches are ``(images float [B,3,H,W], labels int64 [B], indices [B])``.

    ``indices`` are positions in the split's list file (PACE-fast keys its history by them).
    ``cache_limit_gb`` bounds the in-memory cache per split; a larger split (some VTAB test sets
    have tens of thousands of images) is decoded on access instead. ``None`` = always cache.
    """

    def __init__(
        self,
        root: str,
        task: str,
        protocol: str = "final",
        batch_size: int = 64,
        num_workers: int = 2,
        img_size: int = 224,
        num_classes: int | None = None,
        pin_memory: bool = False,
        decode_threads: int = 4,
        cache_limit_gb: float | None = 16.0,
        drop_last: bool = False,
    ):
        super().__init__()
        if protocol not in PROTOCOL_SPLITS:
            raise UserError(
                f"unknown VTAB protocol '{protocol}'; valid: tune (train800 -> val200), "
                f"final (train800val200 -> test); set data.protocol"
            )
        for name, value in (("batch_size", batch_size), ("img_size", img_size)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"data.{name} must be a positive integer, got {value!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        self.root = str(root)
        self.task = task
        self.protocol = protocol
        self.num_classes = _resolve_num_classes(task, num_classes)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.img_size = img_size
        self.pin_memory = pin_memory
        self.decode_threads = decode_threads
        self.cache_limit_gb = cache_limit_gb
        self.drop_last = drop_last  # train loader only (docs/recipe.md)
        self.splits = PROTOCOL_SPLITS[protocol]
        self._task_dir: Path | None = None
        self._samples: dict[str, list[Sample]] = {}
        self._datasets: dict[str, Dataset] = {}

    # ----------------------------------------------------------------------------- locating data
    @property
    def task_dir(self) -> Path:
        """The task folder; ``root`` may be the folder above ``vtab-1k`` or ``vtab-1k`` itself."""
        if self._task_dir is None:
            self._task_dir = self._find_task_dir()
        return self._task_dir

    def _find_task_dir(self) -> Path:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UserError(
                f"VTAB root {root} does not exist; set data.root so that it contains {_LAYOUT}"
            )
        candidates = (root / self.task, root / "vtab-1k" / self.task)
        for candidate in candidates:
            if candidate.is_dir():
                return candidate
        container = root / "vtab-1k" if (root / "vtab-1k").is_dir() else root
        present = sorted(p.name for p in container.iterdir() if p.is_dir())
        shown = ", ".join(present[:30]) + (", ..." if len(present) > 30 else "")
        raise UserError(
            f"task folder for '{self.task}' not found at {candidates[1]} or {candidates[0]}; "
            f"folders present under {container}: {shown or 'none'}; check data.root and data.task"
        )

    def _split_samples(self, split: str) -> list[Sample]:
        if split not in self._samples:
            self._samples[split] = read_list_file(
                self.task_dir / f"{split}.txt", self.num_classes, layout_hint=_LAYOUT
            )
        return self._samples[split]

    def _split_dataset(self, split: str) -> Dataset:
        # Keyed by list-file name, so val and test share one decode when they are the same
        # split, and repeated setup() calls (fit then test) are free.
        if split not in self._datasets:
            self._datasets[split] = build_dataset(
                self._split_samples(split),
                self.img_size,
                threads=self.decode_threads,
                cache_limit_gb=self.cache_limit_gb,
                name=f"vtab/{self.task}/{split}",
            )
        return self._datasets[split]

    # ------------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        for role in _STAGE_ROLES.get(stage, _STAGE_ROLES[None]):
            self._split_dataset(self.splits[role])

    @property
    def train_size(self) -> int:
        """Number of training samples (reads the list file only; no decoding needed)."""
        return len(self._split_samples(self.splits["train"]))

    def dataset(self, role: str) -> Dataset:
        """The dataset for ``role`` in {train, val, test}, decoding it on first use."""
        return self._split_dataset(self.splits[role])

    def _loader(self, role: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        # No sampler here: under DDP Lightning swaps in a DistributedSampler itself.
        return DataLoader(
            self.dataset(role),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
