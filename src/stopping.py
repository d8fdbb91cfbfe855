"""How a run stops before its last epoch, and what it leaves behind (docs/run_folders.md).

- Signals: Ctrl-C (SIGINT), SIGTERM and SIGUSR1 stop training at the next batch boundary; the
  run folder keeps its newest epoch checkpoint (``last.ckpt``), which ``ckpt_path=last``
  resumes exactly. Lightning handles SIGINT and SIGTERM itself; SIGUSR1 (the "time is nearly
  up" signal of batch schedulers) is made to act as SIGTERM by
  :class:`src.checkpoints.SignalsStopTraining`, unless a cluster plugin claimed it first.
- Divergence: a non-finite loss raises :class:`RunDiverged` at the step it appears, before the
  optimiser applies it, so every saved checkpoint holds finite weights.

No torch here: the entry points import it before anything is built.
"""

from __future__ import annotations

import signal

from src.errors import UserError

# Exit status of a stopped run: 128 + the signal's number, as a shell reports a killed process.
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1"}


class RunDiverged(UserError):
    """The loss (or a weight) became NaN or infinite."""

    def __init__(self, what: str, step: int, epoch: int):
        super().__init__(f"{what} at step {step} (epoch {epoch + 1})")
        self.step = step
        self.epoch = epoch
