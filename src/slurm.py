"""SLURM requeue: what a run must do so that Lightning's auto-requeue resumes it correctly.

Under SLURM (hydra/launcher=slurm), SLURM sends SIGUSR1 shortly before the time limit; Lightning
saves ``<run folder>/hpc_ckpt_<n>.ckpt`` and requeues the job, which reruns the same sweep point
in the same folder, where ``Trainer.fit`` resumes from the newest such checkpoint by itself.
"""

from __future__ import annotations

from pathlib import Path


def drop_requeue_checkpoints(trainer, run_dir: str | Path) -> None:
    """Delete the run folder's ``hpc_ckpt_*.ckpt`` once ``fit`` has finished.

    Under SLURM Lightning restores the newest hpc checkpoint whenever fit or test is called with
    ``ckpt_path=None``: left in place, ``trainer.test`` would evaluate the weights saved at the
    requeue signal instead of the final ones.
    """
    if trainer.is_global_zero:
        for path in Path(run_dir).glob("hpc_ckpt_*.ckpt"):
            path.unlink()
    trainer.strategy.barrier()  # no rank may look for the files while rank 0 deletes them
