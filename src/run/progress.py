"""Lightning callbacks for the terminal: a progress display that suits where the output goes."""

from __future__ import annotations

import math
import sys
import time

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

# The metrics an epoch line shows, in this order (whichever the run logs).
EPOCH_LINE_KEYS = (
    "train/loss_epoch",
    "train/acc",
    "train/consistency_epoch",
    "val/acc",
    "val/fp_distance",
    "train/lr",
)


def progress_bar() -> ProgressBar:
    """A live bar at a terminal; one line per epoch when the output is piped or logged to a
    file, where a live bar's redraws break into fragments."""
    if sys.stdout.isatty():
        return RichProgressBar()
    return EpochLines()


class EpochLines(ProgressBar):
    """Prints ``epoch 3/100  train/loss 0.512  val/acc 0.790 …  12.4 s`` after each epoch."""

    def __init__(self):
        super().__init__()
        self._enabled = True
        self._epoch_started = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        seconds = time.perf_counter() - self._epoch_started
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        line = f"epoch {trainer.current_epoch + 1}/{total}"
        print(f"{line}  {format_metrics(trainer.callback_metrics)}  {seconds:.1f} s", flush=True)


def format_metrics(metrics: dict, keys=EPOCH_LINE_KEYS) -> str:
    parts = []
    for key in keys:
        if key in metrics:
            value = float(metrics[key])
            shown = f"{value:.2e}" if 0 < abs(value) < 1e-3 or math.isinf(value) else f"{value:.4f}"
            parts.append(f"{key.removesuffix('_epoch')} {shown}")
    return "  ".join(parts)
