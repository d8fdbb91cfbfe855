"""Epoch checkpoints that a kill at any moment leaves resumable (docs/run_folders.md).

Lightning's ModelCheckpoint re-points ``last.ckpt`` by deleting it and then creating the new
link, so a kill between the two leaves no ``last.ckpt`` at all. :class:`RunCheckpoint` makes
the new link beside the old one and renames it over it (one atomic step), and flushes the
loggers first, so the metrics on disk always reach at least as far as the newest checkpoint.
"""

from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint


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
