"""What the text datamodules share: tokenise once (cached on disk like decoded images), serve
``(inputs [B, 2, T], label, index)`` batches, and the datamodule protocol of the image ones.

``inputs`` stacks token ids and attention mask so a batch stays one tensor: PACE's ``[x; x]`` and
PACE-lazy's ``x[:half]`` work unchanged and PACE-fast gets the sample index. Batches are padded to
their longest sequence only — on the right for training and scoring, on the left for prompts that
are continued by generation (GSM-8K's test).

The token cache: ``<cache_dir>/tokens/<benchmark>-<task>-<split>-<key>.pt`` where ``key`` hashes the
split file's bytes, the tokenizer (its full serialisation) and the tokenisation settings, so a
changed file or tokenizer never reuses stale tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from src.errors import UserError

log = logging.getLogger(__name__)

CACHE_VERSION = "1"  # bump when what is cached changes
PAD_SIDES = ("right", "left")


class TokenDataset(Dataset):
    """Token id sequences with a label each (an int, a float, or a label sequence)."""

    def __init__(self, ids: list[torch.Tensor], labels: list, pad_side: str = "right"):
        if len(ids) != len(labels):
            raise ValueError("one label per sequence")
        self.ids = ids
        self.labels = labels
        self.pad_side = pad_side

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return self.ids[index], self.labels[index], index


def tokenizer_key(tokenizer) -> str:
    """A digest of everything that decides the tokens: the tokenizer's whole serialisation."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Calls with truncation/padding arguments store them in the serialisation: not identity.
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        text = json.dumps(state, sort_keys=True)
    else:
        text = repr(sorted(tokenizer.get_vocab().items()))
    extra = f"{tokenizer.pad_token_id}|{tokenizer.eos_token_id}|{tokenizer.bos_token_id}"
    return hashlib.blake2b((text + extra).encode(), digest_size=8).hexdigest()


def file_key(paths: list[Path]) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.name.encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()


def cached_tokens(cache_dir: str | None, name: str, key: str, make: Callable[[], dict]) -> dict:
    """``make()``'s result (a dict of tensors/lists), from ``cache_dir`` when it was made before."""
    if not cache_dir:
        return make()
    folder = Path(cache_dir).expanduser() / "tokens"
    path = folder / f"{name.replace('/', '-')}-{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as error:  # a partial or foreign file: tokenise again
            log.warning("re-tokenising %s: unreadable cache %s (%s)", name, path, error)
    made = make()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        torch.save(made, tmp)
        os.replace(tmp, path)  # atomic: a concurrent run reads a whole file or none
    except OSError as error:  # a read-only cache folder only costs the tokenisation next time
        log.warning("token cache not written to %s (%s)", folder, error)
    return made


def pad_batch(items, pad_id: int, pad_side: str, label_pad: int | None):
    """Collate ``(ids, label, index)`` items into ``([B, 2, T], labels, indices)``."""
    seqs, labels, indices = zip(*items, strict=True)
    length = max(len(s) for s in seqs)
    inputs = torch.full((len(seqs), 2, length), pad_id, dtype=torch.long)
    inputs[:, 1] = 0
    for row, seq in enumerate(seqs):
        span = slice(length - len(seq), length) if pad_side == "left" else slice(0, len(seq))
        inputs[row, 0, span] = seq
        inputs[row, 1, span] = 1
    if isinstance(labels[0], torch.Tensor):  # a label per token (causal LM): pad like the ids
        padded = torch.full((len(seqs), length), label_pad, dtype=torch.long)
        for row, lab in enumerate(labels):
            span = slice(length - len(lab), length) if pad_side == "left" else slice(0, len(lab))
            padded[row, span] = lab
        label_tensor = padded
    else:
        dtype = torch.float32 if isinstance(labels[0], float) else torch.long
        label_tensor = torch.tensor(labels, dtype=dtype)
    return inputs, label_tensor, torch.tensor(indices, dtype=torch.long)


class TextDataModule(L.LightningDataModule):
    """The datamodule protocol of the image benchmarks (``num_classes``, ``task``, ``protocol``,
    ``train_size``, ``describe()``, ``test_set_names``) for tokenised text.

    Subclasses implement :meth:`splits` (role -> split name) and :meth:`tokenised` (a split's
    :class:`TokenDataset`, cached).
    """

    benchmark: ClassVar[str] = ""
    objective: ClassVar[str] = "classification"
    label_pad: ClassVar[int | None] = None

    def __init__(
        self,
        root: str,
        task: str,
        tokenizer: dict,
        protocol: str = "final",
        batch_size: int = 32,
        num_workers: int = 0,
        max_length: int = 128,
        cache_dir: str | None = None,
        drop_last: bool = False,
    ):
        super().__init__()
        for key, value in (("batch_size", batch_size), ("max_length", max_length)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"data.{key} must be a positive integer, got {value!r}")
        self.root = str(root)
        self.task = task
        self.protocol = protocol
        self.tokenizer_source = dict(tokenizer)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.cache_dir = cache_dir
        self.drop_last = drop_last
        self._tokenizer = None
        self._datasets: dict[str, TokenDataset] = {}

    # ------------------------------------------------------------------ subclass interface
    def splits(self) -> dict[str, str]:
        raise NotImplementedError

    def tokenised(self, split: str, role: str) -> TokenDataset:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ common
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from src.backbones.text import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.tokenizer_source.get("name"), self.tokenizer_source.get("path")
            )
        return self._tokenizer

    def dataset(self, role: str) -> TokenDataset:
        split = self.splits()[role]
        key = (split, role if role == "test" else "fit")
        if key not in self._datasets:
            self._datasets[key] = self.tokenised(split, role)
        return self._datasets[key]

    @property
    def test_set_names(self) -> list[str]:
        return ["test"]

    @property
    def class_subsets(self) -> dict:
        return {}

    @property
    def train_size(self) -> int:
        return len(self.dataset("train"))

    def setup(self, stage: str | None = None) -> None:
        roles = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for role in roles.get(stage, ("train", "val", "test")):
            self.dataset(role)

    def _loader(self, dataset: TokenDataset, shuffle: bool, drop_last: bool = False):
        # A partial of a module-level function: picklable for worker processes.
        collate = functools.partial(
            pad_batch,
            pad_id=self.tokenizer.pad_token_id,
            pad_side=dataset.pad_side,
            label_pad=self.label_pad,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        dataset = self.dataset("train")
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.drop_last and -(-len(dataset) // world) < self.batch_size:
            raise UserError(
                f"recipe.drop_last=true drops every training batch: {len(dataset)} training "
                f"examples over {world} process(es) < data.batch_size={self.batch_size}; lower "
                "data.batch_size or set recipe.drop_last=false"
            )
        return self._loader(dataset, shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self):
        return self._loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self):
        return self._loader(self.dataset("test"), shuffle=False)
