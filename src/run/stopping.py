"""How a run stops before its last epoch, and what it leaves behind (docs/run_folders.md).

- Signals: Ctrl-C (SIGINT), SIGTERM and SIGUSR1 stop training at the next batch boundary; the
  run folder keeps its newest epoch checkpoint (``last.ckpt``), which ``ckpt_path=last``
  resumes exactly. Lightning handles SIGINT and SIGTERM itself; SIGUSR1 (the "time is nearly
  up" signal of batch schedulers) is made to act as SIGTERM by
  :class:`src.run.checkpoints.SignalsStopTraining`, unless a cluster plugin claimed it first.
- Divergence: a non-finite loss raises :class:`RunDiverged` at the step it appears, before the
  optimiser applies it, so every saved checkpoint holds finite weights.

No torch here: the entry points import it before anything is built.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys

from src.errors import UserError

# Exit status of a stopped run: 128 + the signal's number, as a shell reports a killed process.
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1"}

# The signals that stop a run (SIGUSR1: held until a Trainer stage can act on it).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopRequested(BaseException):
    """SIGTERM (or, while the entry still imports, Ctrl-C) outside a Trainer stage. A
    BaseException like KeyboardInterrupt, so that no ``except Exception`` swallows it: it unwinds
    the launch (a refused launch's folder is forgotten on the way) up to the entry point, which
    says what was saved and exits with 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_entry_started = False  # set by src.cli.entry.run_entry: from then on a signal unwinds the launch
_installed = False


def stop_cleanly_on_signals() -> None:
    """A signal at any moment of a job's life ends it with one line and 128 + its number.

    Called on the entry module's first lines, before Hydra, torch or Lightning are imported:

    - SIGUSR1 (the "time is nearly up" signal of SLURM and other schedulers) is held from here
      until a Trainer stage acts on it: Lightning's SLURM requeue (checkpoint + requeue) or
      :class:`src.run.checkpoints.SignalsStopTraining` (stop at a batch boundary, exit 138). A job
      that gets it before training has nothing to save: it is requeued, or stopped, as training
      starts.
    - SIGTERM stops the launch at once: while the entry imports (nothing written yet) with one
      line; later by raising :class:`StopRequested`. Lightning composes this handler into its
      own during a Trainer stage, where it defers (Lightning stops at the next batch boundary).
    - Ctrl-C while the entry imports: one line. Later Python's KeyboardInterrupt is restored and
      the entry points turn it into one line.
    - DataLoader worker processes (and any other forked child) block all three: the main
      process decides, and ends its workers itself (see :func:`quiet_forked_children`).
    """
    from src.run.launch import hold_requeue_signal

    global _installed
    hold_requeue_signal()
    signal.signal(signal.SIGTERM, _on_stop_signal)
    if not _entry_started:
        signal.signal(signal.SIGINT, _on_stop_signal)
    if not _installed:
        os.register_at_fork(after_in_child=quiet_forked_children)
        # multiprocessing's own exit handler, registered on this import, runs after ours (atexit
        # is last in, first out): ours has already ended the workers it would wait for.
        import multiprocessing.util  # noqa: F401

        atexit.register(end_forked_workers)
        _installed = True


def quiet_forked_children() -> None:
    """In a child forked from the run (a DataLoader worker), block the stop signals.

    SLURM signals every process of a job step, and a terminal's Ctrl-C its whole process group:
    a worker would run the parent's handlers (Lightning's SLURM handler would save a checkpoint
    and requeue the job a second time from the worker), and torch's own SIGTERM handler in a
    worker dies from a SIGTERM not sent by its parent, which the parent then reports as
    "DataLoader worker exited unexpectedly". Blocked, the signals stay pending in the worker
    while the parent stops at a batch boundary and shuts its workers down; a worker whose parent
    is gone notices and exits by itself, and one its parent left running at exit is killed
    (:func:`end_forked_workers`).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))


def end_forked_workers() -> None:
    """At exit, kill the daemonic children still alive (DataLoader workers whose loader was not
    shut down, e.g. one a traceback still refers to). multiprocessing's exit handler would end
    them with SIGTERM, which :func:`quiet_forked_children` blocks, and then wait for them
    forever; SIGKILL cannot be blocked, and a worker holds nothing to save."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


def entry_started() -> None:
    """From here on, signals unwind the launch instead of ending the process at once."""
    global _entry_started
    _entry_started = True
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _on_stop_signal(signum: int, frame) -> None:
    if signal.getsignal(signum) is not _on_stop_signal:
        return  # called by Lightning's handler during a Trainer stage: it stops at a batch end
    if not _entry_started:  # still importing: nothing to clean up, nothing written
        print(
            f"interrupted: {SIGNAL_NAMES[signum]} stopped the run while it started; nothing was "
            "written. Run the same command to start it.",
            file=sys.stderr,
            flush=True,
        )
        os._exit(128 + signum)
    raise StopRequested(signum)


def describe_early_stop(signum: int, newest_checkpoint: str | None, resume: str | None) -> str:
    """The line for a run stopped outside a Trainer stage (before training, or after it while
    the weights, the test or results.json were still to come)."""
    name = SIGNAL_NAMES.get(signum, f"signal {signum}")
    if newest_checkpoint is not None:
        return (
            f"{name} stopped the run outside training; its newest checkpoint is "
            f"{newest_checkpoint}. Resume with: {resume}"
        )
    if resume is not None:
        return (
            f"{name} stopped the run before training started; nothing was trained. "
            f"Start it again with: {resume}"
        )
    return (
        f"{name} stopped the run before training started; nothing was written. Run the same "
        "command to start it."
    )


class RunDiverged(UserError):
    """The loss (or a weight) became NaN or infinite."""

    def __init__(self, what: str, step: int, epoch: int):
        super().__init__(f"{what} at step {step} (epoch {epoch + 1})")
        self.step = step
        self.epoch = epoch
