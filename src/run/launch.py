"""How a run spreads over processes, clusters and launches: DDP ranks under Hydra, SLURM
requeue, and re-running an interrupted sweep.

One rule covers every way a job can come back to its folder: a run resumes from the newest
checkpoint its folder holds, and a job of a multirun whose folder holds ``results.json`` is not
run again. Under SLURM (hydra/launcher=slurm), SLURM sends SIGUSR1 shortly before the time limit;
Lightning saves ``<run folder>/hpc_ckpt_<n>.ckpt`` and requeues the job, which reruns the same
sweep point in the same folder and resumes from that checkpoint. Re-running a sweep command with
``hydra.sweep.dir=<its folder>`` skips the finished jobs and resumes the others from
``checkpoints/last.ckpt``. src/run/folder.py decides both (docs/run_folders.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

from src.run.folder import RunFolder

# What Lightning's process launcher leaves in the environment of rank 0 for its children.
_LIGHTNING_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def prepare_ddp_for_this_job(output_dir: str | Path) -> None:
    """Let each job of a multirun start its own DDP ranks, which run that job, in its folder.

    Without a cluster launcher, Lightning starts every other rank by re-running ``sys.argv`` with
    ``hydra.run.dir=<hydra.run.dir>``. In a multirun that command is the whole sweep (``-m``,
    every value of every swept key) and ``hydra.run.dir`` an unused, time-stamped folder: each
    rank would run all sweep points and write folders of its own. Here the command becomes this
    job's own overrides as a single run in this job's folder.

    The previous job's ranks are gone, but its process group and the variables Lightning set for
    them (``LOCAL_RANK`` makes Lightning believe someone else starts the ranks) are still in this
    process: both are cleared. Single runs, and each rank under srun, have nothing to fix.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        for name in _LIGHTNING_DDP_ENV:
            os.environ.pop(name, None)
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = str(output_dir)


def drop_requeue_checkpoints(trainer, run_dir: str | Path) -> None:
    """Delete the run folder's ``hpc_ckpt_*.ckpt`` once ``fit`` has finished.

    Under SLURM Lightning restores the newest hpc checkpoint whenever fit or test is called with
    ``ckpt_path=None``: left in place, ``trainer.test`` would evaluate the weights saved at the
    requeue signal instead of the final ones.
    """
    if trainer.is_global_zero:
        for path in RunFolder(run_dir).requeue_checkpoints():
            path.unlink()
    trainer.strategy.barrier()  # no rank may look for the files while rank 0 deletes them


def hold_requeue_signal() -> None:
    """Keep SIGUSR1 pending (blocked) until a Trainer stage can act on it.

    SLURM sends the requeue signal once, ``signal_delay_s`` before the time limit. Lightning's
    handler (save ``hpc_ckpt_<n>.ckpt``, ``scontrol requeue``) is installed only while a Trainer
    stage runs, and so is :class:`src.run.checkpoints.SignalsStopTraining`'s (stop at a batch
    boundary) without SLURM; before that (imports, data decoding, adapter calibration, restoring
    a checkpoint) and after it (saving the weights, results.json) the signal's default action
    would end the process: no checkpoint, no requeue, and no result for the launcher waiting on
    the login node. Held, the signal waits for :class:`src.run.checkpoints.RequeueSignalInStages` to
    let it through; one that comes after training is never let through (the run is finishing).

    Called on the entry's first line (:func:`src.run.stopping.stop_cleanly_on_signals`), before any
    thread starts: a thread that does not block SIGUSR1 would receive it. Threads and processes
    started later (DataLoader workers, ``scontrol``) inherit the mask.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


def explain_srun_once() -> None:
    """Lightning's "The `srun` command is available on your system but is not used" (printed on
    every machine with SLURM installed, several times per run) becomes one line of this project's
    own advice, and only inside a SLURM job that was not started by srun; elsewhere (a login node,
    a laptop with SLURM installed) nothing: the run is simply a local one."""
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system")
    if shutil.which("srun") is None or "SLURM_JOB_ID" not in os.environ:
        return
    # Lightning's own test for "started by srun"; SLURM_JOB_NAME=bash|interactive is its way
    # to say "an allocation I start processes in by hand".
    interactive = os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive")
    if "SLURM_NTASKS" in os.environ or interactive:
        return
    from src.cli.entry import say

    say(
        f"note: this runs inside SLURM job {os.environ['SLURM_JOB_ID']} without srun, as a "
        "plain local process (no requeue near the time limit); to run on SLURM, add "
        "hydra/launcher=slurm -m (one job per sweep point, requeued and resumed)"
    )
