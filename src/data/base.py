"""What every benchmark's datamodule shares; a subclass declares only its tables and files.

A subclass sets the class attributes (``benchmark``, ``display``, ``tasks``,
``layout``, ``protocols``) and implements :meth:`splits` (which split plays train and val),
:meth:`read_split` (one split's samples) and, when it has several, :meth:`test_sets`. Everything
else — locating the task folder, class-count checks, decode-once caching, crops, loaders, the
start-up line — lives here once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from src.data.images import CacheBudget, CachedImageDataset, Sample, build_dataset
from src.data.lists import duplicate_lines
from src.data.tables import CONTAINERS, task_folders
from src.data.transforms import CentreCrop, RandomCropFlip
from src.errors import UserError

log = logging.getLogger(__name__)

# The fine-grained literature's views (VPT, NOAH): resize the shorter side to 256, then a random
# 224 crop + flip for training and the central 224 crop for evaluation; kept for other sizes.
CROP_RATIO = 224 / 256

_STAGE_ROLES = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


class BenchmarkDataModule(L.LightningDataModule):
    """One task of a benchmark; batches are ``(images float [B,3,H,W], labels [B], indices [B])``.

    ``indices`` are positions in the split (PACE-fast keys its history by them).
    ``crop=False`` resizes every image to ``img_size`` and never augments (VTAB's protocol);
    ``crop=True`` caches images with the shorter side at ``img_size / CROP_RATIO`` (centre
    square) and crops ``img_size`` from them on the fly — random + flip for training, central
    for evaluation — so augmentation never re-decodes a file. ``cache_limit_gb`` is the memory
    budget for decoded pixels over all splits; splits beyond it are decoded once into
    ``cache_dir`` and memory-mapped.
    """

    benchmark: ClassVar[str] = ""  # short name: results, reports, config group
    display: ClassVar[str] = ""  # how messages name it
    tasks: ClassVar[dict[str, int]] = {}  # task -> number of classes
    layout: ClassVar[str] = ""  # one line describing the files on disk, for error messages
    protocols: ClassVar[dict[str, str]] = {}  # protocol -> what trains and what evaluates
    custom_tasks: ClassVar[bool] = False  # may data.task name a folder not in ``tasks``?
    train_covers_all_classes: ClassVar[bool] = True  # else only warn when a class has no sample

    def __init__(
        self,
        root: str,
        task: str,
        protocol: str = "final",
        batch_size: int = 64,
        num_workers: int = 2,
        img_size: int = 224,
        num_classes: int | None = None,
        crop: bool = False,
        pin_memory: bool = False,
        drop_last: bool = False,
        decode_threads: int = 4,
        cache_limit_gb: float | None = 16.0,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if protocol not in self.protocols:
            valid = "; ".join(f"{name} ({what})" for name, what in self.protocols.items())
            raise UserError(
                f"unknown {self.display} protocol '{protocol}'; valid: {valid}; set data.protocol"
            )
        for name, value in (("batch_size", batch_size), ("img_size", img_size)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"data.{name} must be a positive integer, got {value!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        self.root = str(root)
        self.task = task
        self.protocol = protocol
        self.num_classes = self._resolve_num_classes(num_classes)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.img_size = img_size
        self.crop = bool(crop)
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.decode_threads = decode_threads
        self.cache_dir = cache_dir
        self._budget = CacheBudget(cache_limit_gb)
        self._task_dir: Path | None = None
        self._samples: dict[str, list[Sample]] = {}
        self._pixels: dict[str, CachedImageDataset] = {}
        self._views: dict[tuple[str, bool], CachedImageDataset] = {}
        self._train_loader: ResumableLoader | None = None
        self._train_order: dict | None = None  # a mid-epoch checkpoint's, until used

    # -------------------------------------------------------------------- subclass interface
    def splits(self) -> dict[str, str]:
        """Which split trains and which validates under ``self.protocol``: {train, val}."""
        raise NotImplementedError

    def test_sets(self) -> dict[str, str]:
        """Test-set name -> split. One set logs ``test/acc``; several log ``test/acc/<name>``."""
        return {"test": self.splits()["test"]}

    def read_split(self, split: str) -> list[Sample]:
        """The samples of one split, labels already in ``[0, num_classes)``."""
        raise NotImplementedError

    def task_folder_names(self) -> tuple[str, ...]:
        """Folder names the task may have on disk (several when tools disagree; see
        ``src.data.tables.TASK_FOLDERS``)."""
        return task_folders(self.benchmark, self.task)

    @classmethod
    def holds_task(cls, folder: Path) -> bool:
        """Does ``folder`` hold this benchmark's split files? Decides only between folders
        directly under data.root, where two benchmarks may use one name (``stanford_cars``)."""
        return folder.is_dir()

    @property
    def containers(self) -> tuple[str, ...]:
        """Benchmark folders under data.root that hold one folder per task."""
        return CONTAINERS[self.benchmark]

    def locate(self, names: tuple[str, ...]) -> Path | None:
        """The first folder called one of ``names`` under a benchmark folder of data.root, or
        directly under data.root (when it is the benchmark folder itself, or RepAdapter's and
        NOAH's scripts' layout) provided it holds this benchmark's files; None if none."""
        root = Path(self.root).expanduser()
        for container in self.containers:
            for name in names:
                if (root / container / name).is_dir():
                    return root / container / name
        for name in names:
            if self.holds_task(root / name):
                return root / name
        return None

    def label_advice(self) -> str:
        """How to fix a label outside [0, num_classes): advice that works for this task."""
        if self.task in self.tasks:
            return (
                f"{self.display} '{self.task}' has {self.num_classes} classes, so the file "
                f"belongs to another task or is damaged; check data.task and restore the file"
            )
        return "set data.num_classes to the real class count (the largest label + 1)"

    @staticmethod
    def image_base(folder: Path, first_relative: str, candidates: tuple[str, ...]) -> Path:
        """The folder a split's relative paths start from: the first candidate under ``folder``
        holding the split's first image (tools differ, e.g. NOAH's Stanford Cars lists omit
        ``images/``); the first candidate when none does, so the error names the expected path.
        """
        for candidate in candidates:
            if (folder / candidate / first_relative).is_file():
                return folder / candidate
        return folder / candidates[0]

    @property
    def class_subsets(self) -> dict[str, list[int]]:
        """Test-set name -> the classes it covers, for sets that cover only some of them."""
        return {}

    # ------------------------------------------------------------------------ task and files
    def _resolve_num_classes(self, num_classes: int | None) -> int:
        known = self.tasks.get(self.task)
        if known is None and (num_classes is None or not self.custom_tasks):
            custom = (
                "; for a custom task in the same layout also pass data.num_classes"
                if self.custom_tasks
                else ""
            )
            raise UserError(
                f"unknown {self.display} task '{self.task}'; valid tasks: "
                f"{', '.join(self.tasks)}{custom}"
            )
        if num_classes is None:
            return known
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"data.num_classes must be a positive integer, got {num_classes!r}")
        if known is not None and num_classes != known:
            raise UserError(
                f"{self.display} task '{self.task}' has {known} classes but "
                f"data.num_classes={num_classes}; set data.num_classes={known} or leave it unset"
            )
        return num_classes

    @property
    def task_dir(self) -> Path:
        """The task folder, found by :meth:`locate`."""
        if self._task_dir is None:
            self._task_dir = self._find_task_dir()
        return self._task_dir

    def _find_task_dir(self) -> Path:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UserError(
                f"{self.display} root {root} does not exist; set data.root so that it contains "
                f"{self.layout}"
            )
        found = self.locate(self.task_folder_names())
        if found is not None:
            return found
        where = [root / c for c in self.containers if (root / c).is_dir()] or [root]
        present = sorted(p.name for folder in where for p in folder.iterdir() if p.is_dir())
        shown = ", ".join(present[:30]) + (", ..." if len(present) > 30 else "")
        tried = [root / c / n for c in self.containers for n in self.task_folder_names()]
        tried += [root / n for n in self.task_folder_names()]
        raise UserError(
            f"task folder for '{self.task}' not found: none of {', '.join(map(str, tried))}; "
            f"folders present: {shown or 'none'}; check data.root and data.task ({self.layout})"
        )

    def samples(self, split: str) -> list[Sample]:
        """A split's samples, read once; ``a+b`` is split ``a`` followed by split ``b``."""
        if split not in self._samples:
            parts = [self.read_split(part) for part in split.split("+")]
            for name, part in zip(split.split("+"), parts, strict=True):
                repeated = duplicate_lines(part)
                if repeated:
                    # NOAH's Oxford Pets 1-shot lists repeat every line. The official code
                    # trains on the list as written, and so does this one, but says so.
                    log.warning(
                        "%s %s: %s lists %d images but only %d distinct ones (%d lines "
                        "repeat another); they are used as listed, repeats included",
                        self.display,
                        self.task,
                        name,
                        len(part),
                        len(part) - repeated,
                        repeated,
                    )
            self._samples[split] = [sample for part in parts for sample in part]
            if split == self.splits()["train"]:
                self._check_coverage(split, self._samples[split])
        return self._samples[split]

    def _check_coverage(self, split: str, samples: list[Sample]) -> None:
        seen = len({label for _, label in samples})
        if seen == self.num_classes:
            return
        message = (
            f"{self.display} {self.task}: training split {split} has samples of {seen} of the "
            f"{self.num_classes} classes"
        )
        if self.train_covers_all_classes:
            raise UserError(f"{message}; the list is incomplete or data.task names another set")
        log.warning("%s; classes without a sample cannot be learnt", message)

    # ------------------------------------------------------------------------------ datasets
    @property
    def _cached_size(self) -> int:
        return round(self.img_size / CROP_RATIO) if self.crop else self.img_size

    def _dataset(self, split: str, train: bool) -> CachedImageDataset:
        # Pixels are keyed by split, so val and test share one decode when they are the same
        # split, and repeated setup() calls (fit then test) are free.
        if split not in self._pixels:
            self._pixels[split] = build_dataset(
                self.samples(split),
                self._cached_size,
                fit="shorter_side" if self.crop else "stretch",
                budget=self._budget,
                cache_dir=self.cache_dir,
                threads=self.decode_threads,
                name=f"{self.benchmark}/{self.task}/{split}",
            )
        key = (split, train and self.crop)
        if key not in self._views:
            pixels = self._pixels[split]
            view = None
            if self.crop:
                view = (RandomCropFlip if train else CentreCrop)(self.img_size)
            self._views[key] = CachedImageDataset(pixels.pixels, pixels.labels, view)
        return self._views[key]

    def dataset(self, role: str) -> CachedImageDataset:
        """The dataset for ``role`` in {train, val, test} (test: the first test set)."""
        if role == "test":
            return self._dataset(next(iter(self.test_sets().values())), train=False)
        return self._dataset(self.splits()[role], train=role == "train")

    def test_datasets(self) -> dict[str, CachedImageDataset]:
        return {name: self._dataset(split, False) for name, split in self.test_sets().items()}

    @property
    def test_set_names(self) -> list[str]:
        return list(self.test_sets())

    @property
    def train_size(self) -> int:
        """Number of training samples (reads the split's file only; no decoding)."""
        return len(self.samples(self.splits()["train"]))

    def describe(self) -> str:
        """One line for the start-up log: task, protocol, what trains and what is tested."""
        split = self.splits()
        tests = ", ".join(
            f"{name}={s} ({len(self.samples(s))})" for name, s in self.test_sets().items()
        )
        view = (
            f"{self.img_size}px crops of {self._cached_size}px (random+flip for training)"
            if self.crop
            else f"{self.img_size}px, no augmentation"
        )
        return (
            f"{self.benchmark}/{self.task} ({self.num_classes} classes) "
            f"protocol={self.protocol}: train={split['train']} ({self.train_size}) "
            f"val={split['val']} ({len(self.samples(split['val']))}) test: {tests}; {view}"
        )

    # ------------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        for role in _STAGE_ROLES.get(stage, ("train", "val", "test")):
            if role == "test":
                self.test_datasets()
            else:
                self.dataset(role)

    def _loader(self, dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        options = dict(
            batch_size=self.batch_size,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
        world = self.trainer.world_size if self.trainer is not None else 1
        if not shuffle or world > 1:
            # Under DDP Lightning swaps in a DistributedSampler itself (resumes at epoch ends).
            return DataLoader(dataset, shuffle=shuffle, **options)
        sampler = EpochShuffle(len(dataset))
        if self._train_order is not None:  # the checkpoint's, for the first loader after it
            sampler.resume(self._train_order["seed"], self._train_order["samples_done"])
            self._train_order = None
            if self.crop:
                log.warning(
                    "resuming part-way through an epoch: its remaining batches come in the same "
                    "order, but their random crops differ from an uninterrupted run's (they are "
                    "drawn as batches load, ahead of training); the run is not bit-identical"
                )
        self._train_loader = ResumableLoader(
            dataset, sampler=sampler, batches_done=self._batches_done, **options
        )
        return self._train_loader

    def _batches_done(self) -> int | None:
        """Training batches finished in the current epoch; None once the epoch has ended."""
        trainer = self.trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done if done < trainer.num_training_batches else None

    # Lightning saves a datamodule's state in every checkpoint and loads it before it builds
    # the training loader (which it does while configuring the optimiser, before it restores
    # its loops: the loader's own load_state_dict would come too late).
    def state_dict(self) -> dict:
        loader = getattr(self, "_train_loader", None)
        order = loader.state_dict() if loader is not None else {}
        return {"train_order": order} if order else {}

    def load_state_dict(self, state: dict) -> None:
        self._train_order = state.get("train_order") or None

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        if self.drop_last:
            # Each rank draws its share of the set; a share smaller than one batch is dropped
            # whole, and Lightning would "train" zero steps and test the untrained model.
            world = self.trainer.world_size if self.trainer is not None else 1
            per_rank = -(-len(dataset) // world)
            if per_rank < self.batch_size:
                raise UserError(
                    f"recipe.drop_last=true drops every training batch: {per_rank} training "
                    f"images per process < data.batch_size={self.batch_size}; lower "
                    "data.batch_size or set recipe.drop_last=false"
                )
        return self._loader(dataset, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(d, shuffle=False) for d in self.test_datasets().values()]
        return loaders[0] if len(loaders) == 1 else loaders

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.test_dataloader()


class EpochShuffle(Sampler[int]):
    """A new random order every epoch that a run resumed part-way through an epoch continues.

    Drawn as ``DataLoader(shuffle=True)`` draws it (one number from torch's global generator
    seeds a permutation), so runs keep the data order they had before this class. A checkpoint
    saved mid-epoch holds the epoch's seed and how many samples were trained on
    (:class:`ResumableLoader`); the resumed run's first epoch is the rest of that order.
    """

    def __init__(self, size: int):
        self.size = size
        self.seed: int | None = None  # of the epoch being iterated
        self._resume: tuple[int, int] | None = None  # (seed, samples done) from a checkpoint

    def __len__(self) -> int:
        return self.size  # the whole epoch, also when resumed: Lightning counts the batches done

    def __iter__(self):
        if self._resume is not None:
            (self.seed, start), self._resume = self._resume, None
        else:
            self.seed, start = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        yield from torch.randperm(self.size, generator=generator).tolist()[start:]

    def resume(self, seed: int, samples_done: int) -> None:
        self._resume = (seed, samples_done)


class ResumableLoader(DataLoader):
    """The training loader, whose :meth:`state_dict` (the epoch's seed and the samples trained
    on) lets a mid-epoch resume train on the samples the stopped run had not reached, in the
    same order. ``batches_done`` reports the current epoch's finished batches (None after its
    end: a resume then starts a new epoch, nothing to skip). The datamodule saves and restores
    the state; having both methods also tells Lightning that the loader resumes mid-epoch.
    """

    def __init__(self, *args, batches_done, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict:
        done = self.batches_done()
        if done is None or self.sampler.seed is None:
            return {}
        return {"seed": self.sampler.seed, "samples_done": done * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Nothing: Lightning calls this after the loader's iterator exists (see
        ``BenchmarkDataModule.load_state_dict``, which restores the order in time)."""
