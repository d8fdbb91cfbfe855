"""Epoch checkpoints that a kill at any moment leaves resumable (docs/run_folders.md).

Lightning's ModelCheckpoint re-points ``last.ckpt`` by deleting it and then creating the new
link, so a kill between the two leaves no ``last.ckpt`` at all. :class:`RunCheckpoint` makes
the new link beside the old one and renames it over it (one atomic step), and flushes the
loggers first, so the metrics on disk always reach at least as far as the newest checkpoint.
:class:`SignalsStopTraining` lets SIGUSR1 stop training at a batch boundary like SIGTERM, so the
newest epoch checkpoint stays the one ``ckpt_path=last`` resumes from. A run stopped by such a
signal part-way through an epoch saves ``stopped.ckpt`` there and re-points ``last.ckpt`` to it.
:class:`AtomicCheckpointIO` writes every checkpoint beside its target and renames it into place.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src.run.folder import LAST_CHECKPOINT, STOPPED_CHECKPOINT
from src.run.launch import hold_requeue_signal


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with an atomic ``last.ckpt`` link and logs flushed before each save."""

    # The link's name is the run folder's (src/run/folder.py), not a second spelling of it.
    CHECKPOINT_NAME_LAST = Path(LAST_CHECKPOINT).stem

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # The previous epoch's train/*_epoch rows are logged after its checkpoint: flush them
        # now, so a later kill cannot lose the history of an epoch that a checkpoint holds.
        flush_loggers(trainer)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        flush_loggers(trainer)
        super()._save_checkpoint(trainer, filepath)
        stopped = Path(self.dirpath or "", STOPPED_CHECKPOINT)
        if trainer.is_global_zero and stopped.exists():  # an epoch end now holds more than it
            stopped.unlink()

    def on_exception(self, trainer, pl_module, exception) -> None:
        """SIGTERM (or SIGUSR1 as SIGTERM) stopped training after a batch part-way through an
        epoch: save that point, so the resume goes on from there instead of the epoch's start
        (it ends bit-identical to an uninterrupted run: src.data.base.ResumableLoader, and
        :class:`SameDataOrderOnResume` for the random states)."""
        super().on_exception(trainer, pl_module, exception)
        if not isinstance(exception, SIGTERMException) or not self.dirpath:
            return
        if not trainer.training or trainer.sanity_checking:
            return  # stopped while validating: the loop is not at a batch boundary
        done = trainer.fit_loop.epoch_loop.batch_progress.current
        if not 0 < done.completed == done.processed < trainer.num_training_batches:
            return  # nothing trained since the epoch's start, or the epoch has ended
        path = os.path.join(self.dirpath, STOPPED_CHECKPOINT)
        flush_loggers(trainer)
        trainer.save_checkpoint(path)
        if self.save_last:
            self._link_checkpoint(trainer, path, os.path.join(self.dirpath, LAST_CHECKPOINT))

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link_atomically(filepath, linkpath)
        trainer.strategy.barrier()


# How a checkpoint being written is named beside its target: ".<name>.partial-<pid>".
PARTIAL_MARK = ".partial-"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the target's own folder, then renames it.

    Lightning's writer stages the file in $TMPDIR (fsspec's transaction) and moves it over:
    a kill during the write left the partial file there (6 MB each time), and a move across
    file systems is a copy that a kill can leave half done. A kill here leaves at most a
    ``.<name>.partial-<pid>`` beside the checkpoints, which the next launch removes
    (:func:`remove_partial_checkpoints`); the target is always the old file or the new one.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}{PARTIAL_MARK}{os.getpid()}"
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        finally:
            if partial.exists():  # torch.save failed (disk full): leave no partial file
                partial.unlink()


def remove_partial_checkpoints(*folders: str | os.PathLike) -> list[Path]:
    """Delete the partial checkpoint files a killed run left in ``folders``; returns them."""
    removed = []
    for folder in folders:
        for path in Path(folder).glob(f".*.ckpt{PARTIAL_MARK}*"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
    """SIGUSR1 acts at a batch boundary, like SIGTERM: a stop or a requeue saves a point that a
    resume continues from bit-identically.

    Without a cluster plugin nobody claims SIGUSR1: it stops training as SIGTERM does (and the
    signal is remembered for the message). Under SLURM auto-requeue Lightning's handler has it
    by ``on_train_start``; that handler saves ``hpc_ckpt_<n>.ckpt`` and requeues at once, from
    inside whatever the process was doing: mid-forward, after the step's noise was drawn, its
    loop counters between two batches. Its call is deferred to the end of the batch running when
    the signal came, where the weights, the loop position, the sampler and the random states
    all describe the same point. A signal during validation is served at the next training
    batch's end.
    """

    def __init__(self):
        self.received: signal.Signals | None = None
        self._installed = False
        self._requeue = None  # the cluster plugin's SIGUSR1 handler, deferred to a batch end
        self._requeue_requested = False

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning has registered its handlers by now (after on_fit_start).
        claimed = signal.getsignal(signal.SIGUSR1)
        if claimed in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self._as_sigterm)
        elif callable(claimed):
            self._requeue = claimed
            signal.signal(signal.SIGUSR1, self._request_requeue)
        else:
            return
        self._installed = True

    def _as_sigterm(self, signum, frame) -> None:
        self.received = signal.Signals(signum)
        sigterm = signal.getsignal(signal.SIGTERM)  # Lightning's: stop at the next batch end
        if callable(sigterm):
            sigterm(signal.SIGTERM, frame)

    def _request_requeue(self, signum, frame) -> None:
        self.received = signal.Signals(signum)
        self._requeue_requested = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._requeue_requested:
            self._requeue_requested = False
            self._requeue(signal.SIGUSR1, None)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._uninstall()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._uninstall()

    def _uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGUSR1, self._requeue or signal.SIG_DFL)
            self._installed, self._requeue = False, None


class RequeueSignalInStages(Callback):
    """Let a held SIGUSR1 through while training or testing runs, and hold it again after.

    By ``on_train_start`` / ``on_test_start`` Lightning has installed its handlers (and
    :class:`SignalsStopTraining` its own when nobody claimed SIGUSR1), so a signal that arrived
    earlier is handled at once: the job saves a checkpoint and is requeued at the start of
    training instead of being killed, or timing out, without one. Must come after
    :class:`SignalsStopTraining` in the callback list. Without
    :func:`src.run.launch.hold_requeue_signal` (not under SLURM) nothing is blocked.
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
    - A checkpoint saved part-way through an epoch (a signal's stop, a SLURM requeue). The
      resumed run builds its iterator after restoring the states (the uninterrupted run built
      it at the epoch's start): the states are restored again at the first batch. It also skips
      the sanity check, where the uninterrupted run built its persistent validation workers:
      the draw of building them at the first validation is undone.
    """

    def __init__(self):
        self._epochs_started = 0
        self._rng_states: dict | None = None  # the checkpoint's, until the first epoch starts
        # Resumed mid-epoch: the random states after each batch, until the first validation.
        self._before_first_validation: dict | None = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._rng_states = checkpoint.get("rng_states")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import torch

        self._rng_states = None
        loader = getattr(trainer.fit_loop, "_combined_loader", None)
        if _persistent(loader.flattened if loader is not None else []) and self._epochs_started:
            torch.empty((), dtype=torch.int64).random_()  # as DataLoader's iterator would
        self._epochs_started += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The checkpoint's states still held here: this is the first batch of a run resumed
        # part-way through an epoch. Building the data iterator drew seeds since they were
        # restored (the uninterrupted run drew them at the epoch's start, before the
        # checkpoint): restore them again, so this batch draws what it drew there.
        if self._rng_states is not None:
            from src.run.rng import restore_rng_states

            restore_rng_states(self._rng_states)
            self._rng_states = None
            self._epochs_started += 1  # the resumed epoch counts as one this process started
            self._before_first_validation = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before_first_validation is not None:
            from src.run.rng import capture_rng_states

            self._before_first_validation = capture_rng_states()

    def on_validation_end(self, trainer, pl_module) -> None:
        # Resumed mid-epoch, Lightning skips the sanity check, where an uninterrupted run built
        # the persistent validation workers (its draws undone by Lightning): this process builds
        # them at its first validation, one draw the uninterrupted run did not make. Undo it.
        states, self._before_first_validation = self._before_first_validation, None
        if states and not trainer.sanity_checking and _persistent(trainer.val_dataloaders):
            from src.run.rng import restore_rng_states

            restore_rng_states(states)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # The checkpoint's states still held here: this process has started no epoch and trained
        # no batch, so this end is Lightning's replay of the epoch the checkpoint closed.
        if self._rng_states is not None:
            from src.run.rng import restore_rng_states

            restore_rng_states(self._rng_states)
            self._rng_states = None
            self._epochs_started += 1  # the replayed epoch counts as one this process started


def _persistent(loaders) -> bool:
    """Does any of these DataLoaders (one, a list, or None) keep its workers between epochs?"""
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    return any(getattr(dl, "persistent_workers", False) for dl in loaders)


class RecordThreads(Callback):
    """Every checkpoint says how many CPU threads torch trained with: the count changes the bits,
    so a resume takes it from there (src.run.threads.threads_for_run)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        from src.run.threads import CHECKPOINT_KEY

        checkpoint[CHECKPOINT_KEY] = torch.get_num_threads()
