"""What a run folder records about itself beyond the metrics logs.

- :class:`EpochSummary`, a Lightning callback, writes ``summary.csv``: one row per epoch (epoch,
  step, lr, seconds, and every epoch-level train/val metric), so a single run is readable without
  the per-step ``csv/metrics.csv`` and without any logger enabled.
- :func:`provenance` returns what produced a result — git commit and dirty flag, package
  versions, hardware, and how the Trainer ran it (accelerator, devices, strategy, precision,
  threads) — for ``results.json`` (written by :class:`src.run.folder.RunFolder`), so a table
  row can be traced to its code and machine.
"""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from src import PROJECT_ROOT

# Versions results.json records (None: not installed).
PACKAGES = (
    "torch",
    "torchvision",
    "lightning",
    "timm",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "numpy",
    "safetensors",
    "transformers",
    "wandb",
)


class EpochSummary(Callback):
    """Writes ``path`` (a CSV) at the end of every training epoch; rank zero only.

    The file is rewritten whole each epoch, so columns that appear late (validation every n
    epochs) get a header, and a resumed run keeps the rows of the epochs it already finished.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self._started: float | None = None  # when this epoch's training started
        self._written_before: dict[str, str] | None = None  # resumed epoch's row from the file
        self._val: dict[str, float] = {}  # this epoch's validation (callback_metrics keep stale)

    def on_train_start(self, trainer, pl_module) -> None:
        # Not on_fit_start: Lightning restores the loop's epoch from a checkpoint after that hook.
        # Resumed mid-epoch, Lightning skips on_train_epoch_start: time the epoch from here.
        self._started = time.perf_counter()
        if not self.path.is_file() or trainer.global_step == 0:
            return
        with self.path.open() as f:
            written = list(csv.DictReader(f))
        self.rows = [row for row in written if int(row["epoch"]) < trainer.current_epoch]
        self._written_before = next(
            (row for row in written if int(row["epoch"]) == trainer.current_epoch), None
        )

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val = _epoch_metrics(trainer, "val/")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self._written_before is not None:
            # Resumed from a checkpoint saved at this epoch's end, Lightning replays the end
            # without training the epoch: its row is the one written before the stop.
            self.rows.append(self._written_before)
            self._written_before = self._started = None
            self._write()
            return
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else "",
            "seconds": round(time.perf_counter() - self._started, 3),
        }
        row |= _epoch_metrics(trainer, "train/") | self._val
        self._val, self._started = {}, None
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        with partial.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        partial.replace(self.path)


def _epoch_metrics(trainer, prefix: str) -> dict[str, float]:
    return {
        name.removesuffix("_epoch"): float(value)
        for name, value in sorted(trainer.callback_metrics.items())
        if name.startswith(prefix) and not name.endswith("_step")
    }


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_state(root: Path = PROJECT_ROOT) -> dict:
    """``git_commit`` and ``git_dirty`` (tracked files changed) of the checkout ``root``, the
    one the code runs from; both None when ``root`` is not the top of a git checkout (an
    installed copy inside some other repository is not that repository's code)."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != Path(root).resolve():
        return {"git_commit": None, "git_dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git(root, "rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def execution(trainer) -> dict:
    """How ``trainer`` ran: accelerator, devices, strategy, precision, torch's CPU threads."""
    import torch

    return {
        "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
        "devices": trainer.num_devices,
        "device_ids": list(trainer.device_ids),
        "device": str(trainer.strategy.root_device),
        "nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "strategy": getattr(trainer.strategy, "strategy_name", type(trainer.strategy).__name__),
        "precision": str(trainer.precision),
        "threads": torch.get_num_threads(),
    }


def provenance(trainer=None, code: dict | None = None) -> dict:
    """What produced a result, as plain JSON-able values: the code (``code``, else
    :func:`code_state` now), packages, hardware, and how ``trainer`` ran it (``execution``;
    None without a trainer). The backbone's weights are results.json's ``weights``."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        **(code if code is not None else code_state()),
        "python": sys.version.split()[0],
        "packages": versions,
        "hardware": {
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "gpus": gpus,
            "gpu_count": len(gpus),
            "platform": platform.platform(),
        },
        "hostname": platform.node(),
        "execution": None if trainer is None else execution(trainer),
    }
