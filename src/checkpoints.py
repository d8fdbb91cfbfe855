"""Epoch checkpoints that a kill at any moment leaves resumable (docs/run_folders.md).

Lightning's ModelCheckpoint re-points ``last.ckpt`` by deleting it and then creating the new
link, so a kill between the two leaves no ``last.ckpt`` at all. :class:`RunCheckpoint` makes
the new link beside the old one and renames it over it (one atomic step), and flushes the
loggers first, so the metrics on disk always reach at least as far as the newest checkpoint.
:class:`SignalsStopTraining` lets SIGUSR1 stop training at a batch boundary like SIGTERM, so the
newest epoch checkpoint stays the one ``ckpt_path=last`` resumes from.
"""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from src.launch import hold_requeue_signal


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with an atomic ``last.ckpt`` link and logs flushed before each save."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # The previous epoch's train/*_epoch rows are logged after its checkpoint: flush them
        # now, so a later kill cannot lose the history of an epoch that a checkpoint holds.
        flush_loggers(trainer)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        flush_loggers(trainer)
        super()._save_checkpoint(trainer, filepath)

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link_atomically(filepath, linkpath)
        trainer.strategy.barrier()


def link_atomically(target: str, link: str) -> None:
    """Point ``link`` at ``target``: a relative symlink made aside, then renamed over ``link``."""
    partial = f"{link}.partial"
    if os.path.lexists(partial):
        os.unlink(partial)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), partial)
    os.replace(partial, link)


def flush_loggers(trainer) -> None:
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.save()


class SignalsStopTraining(Callback):
    """SIGUSR1 stops training like SIGTERM; remembers which signal arrived (for the message)."""

    def __init__(self):
        self.received: signal.Signals | None = None
        self._installed = False

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning has registered its handlers by now (after on_fit_start); SIG_DFL means nobody
        # claimed SIGUSR1 (under SLURM auto-requeue, Lightning's requeue handler has it).
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self._as_sigterm)
            self._installed = True

    def _as_sigterm(self, signum, frame) -> None:
        self.received = signal.Signals(signum)
        sigterm = signal.getsignal(signal.SIGTERM)  # Lightning's: stop at the next batch end
        if callable(sigterm):
            sigterm(signal.SIGTERM, frame)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._uninstall()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._uninstall()

    def _uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            self._installed = False


class RequeueSignalInStages(Callback):
    """Let a held SIGUSR1 through while training or testing runs, and hold it again after.

    By ``on_train_start`` / ``on_test_start`` Lightning has installed its handlers (and
    :class:`SignalsStopTraining` its own when nobody claimed SIGUSR1), so a signal that arrived
    earlier is handled at once: the job saves a checkpoint and is requeued at the start of
    training instead of being killed, or timing out, without one. Must come after
    :class:`SignalsStopTraining` in the callback list. Without
    :func:`src.launch.hold_requeue_signal` (not under SLURM) nothing is blocked.
    """

    def on_train_start(self, trainer, pl_module) -> None:
        self._release()

    def on_test_start(self, trainer, pl_module) -> None:
        self._release()

    def on_train_end(self, trainer, pl_module) -> None:
        hold_requeue_signal()

    def on_test_end(self, trainer, pl_module) -> None:
        hold_requeue_signal()

    def on_exception(self, trainer, pl_module, exception) -> None:
        hold_requeue_signal()

    @staticmethod
    def _release() -> None:
        if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})


class SameDataOrderOnResume(Callback):
    """Makes a resumed run draw its shuffles, augmentations and noise from the same random numbers
    as an uninterrupted one. Two ways a resume would otherwise draw out of step:

    - Persistent workers. Creating a DataLoader iterator draws one number from torch's global
      generator (the workers' base seed). An uninterrupted run with persistent workers creates
      its iterator once, in its first epoch; a resumed run creates it in the epoch it resumes,
      one draw more than the uninterrupted run made there. Drawing that number at the start of
      every later epoch makes both runs draw in step.
    - A checkpoint saved at an epoch's end (``ModelCheckpoint`` saves there when validation does
      not run every epoch). Lightning resumes by replaying that epoch: it creates the training
      iterator — drawing the loader's and the sampler's seeds — finds the epoch done and calls
      ``on_train_epoch_end`` again (without an epoch start or a batch before it), so the next
      epoch starts from a generator that has moved on. Restoring the checkpoint's random states
      at the replayed end undoes those draws.
    """

    def __init__(self):
        self._epochs_started = 0
        self._rng_states: dict | None = None  # the checkpoint's, until the first epoch starts

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._rng_states = checkpoint.get("rng_states")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import torch

        self._rng_states = None
        loader = getattr(trainer.fit_loop, "_combined_loader", None)
        loaders = loader.flattened if loader is not None else []
        persistent = any(getattr(dl, "persistent_workers", False) for dl in loaders)
        if persistent and self._epochs_started > 0:
            torch.empty((), dtype=torch.int64).random_()  # as DataLoader's iterator would
        self._epochs_started += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._rng_states = None  # a run resumed mid-epoch trains on: nothing to undo

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # The checkpoint's states still held here: this process has started no epoch and trained
        # no batch, so this end is Lightning's replay of the epoch the checkpoint closed.
        if self._rng_states is not None:
            from src.rng import restore_rng_states

            restore_rng_states(self._rng_states)
            self._rng_states = None
            self._epochs_started += 1  # the replayed epoch counts as one this process started
