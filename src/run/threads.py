"""How many CPU threads torch gets, chosen deliberately rather than left to chance.

Measured on a 2-core machine (README, "CPU threads"): torch's default of one thread per core
ran 6x slower than one thread when another training job shared the cores, because OpenMP threads
that wait on each other lose their core to the other job at every barrier. So
``cpu_threads: auto`` gives torch the CPUs this process may use (its SLURM allocation or CPU
affinity) minus those other processes keep busy right now, divided among the DDP processes of
this node. Dataloader workers need no share: PyTorch runs each with one thread, and they only
slice the decoded-image cache.

The thread count changes the bits a run computes (torch splits its sums among the threads: two
runs with one seed differed by 7e-8 with 1 and 2 threads), so a run never changes it halfway:
the count goes into every checkpoint (:func:`recorded_threads`) and a resume with
``cpu_threads: auto`` takes it from there instead of measuring again. ``deterministic: true``
makes ``auto`` independent of the load too: all the CPUs this process may use, busy or not.
"""

from __future__ import annotations

import math
import os
import time

# How long to watch /proc/stat to see how busy the machine is before choosing.
SAMPLE_SECONDS = 0.25


def allowed_cpus() -> int:
    """CPUs this process may use: the SLURM allocation, else its CPU affinity."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit():
        return max(1, int(slurm))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cpus(sample_seconds: float = SAMPLE_SECONDS) -> float:
    """CPUs kept busy by other processes, from /proc/stat over a short window (this process is
    idle while it measures); the 1-minute load average where /proc is not available."""
    try:
        first = _cpu_times()
        time.sleep(sample_seconds)
        second = _cpu_times()
    except OSError:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    idle = second[1] - first[1]
    total = second[0] - first[0]
    if total <= 0:
        return 0.0
    return (os.cpu_count() or 1) * (1.0 - idle / total)


def _cpu_times() -> tuple[int, int]:
    """(total, idle incl. iowait) jiffies summed over all CPUs."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


def choose_threads(
    setting: int | str | None, processes: int = 1, deterministic: bool = False
) -> int:
    """The thread count for ``cpu_threads``: a positive integer is taken as it is; ``auto`` is
    the free CPUs shared by ``processes`` (the DDP processes this node runs), or with
    ``deterministic`` all the CPUs this process may use, so that the load cannot change it."""
    if setting not in (None, "auto"):
        threads = int(setting)
        if threads < 1:
            from src.errors import UserError

            raise UserError(f"cpu_threads must be 'auto' or >= 1, got {setting}")
        return threads
    cpus = allowed_cpus()
    if deterministic:
        return max(1, cpus // max(1, processes))
    machine_free = (os.cpu_count() or cpus) - busy_cpus()
    free = min(cpus, math.floor(machine_free + 0.5))
    per_process = free // max(1, processes)
    return max(1, per_process)


def recorded_threads(ckpt_path: str | os.PathLike | None) -> int | None:
    """The thread count the run saved in ``ckpt_path`` trained with (None: no checkpoint, or one
    written before the count was recorded)."""
    if ckpt_path is None:
        return None
    import torch

    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    threads = checkpoint.get(CHECKPOINT_KEY)
    return int(threads) if threads else None


# Where a checkpoint keeps the thread count (src.run.checkpoints.RecordThreads writes it).
CHECKPOINT_KEY = "cpu_threads"


def threads_for_run(
    setting: int | str | None,
    processes: int = 1,
    deterministic: bool = False,
    resume_from: str | os.PathLike | None = None,
) -> tuple[int, str | None]:
    """The thread count a run (or the resume of one) trains with, and a warning or None.

    A resume keeps the count its checkpoint recorded when ``cpu_threads`` is ``auto``; a number
    that differs from it is obeyed, and the warning says the resume is then not bit-identical.
    """
    recorded = recorded_threads(resume_from)
    if recorded is not None and setting in (None, "auto"):
        return recorded, None
    threads = choose_threads(setting, processes, deterministic)
    if recorded is not None and recorded != threads:
        return threads, (
            f"warning: cpu_threads={setting} but the run this resumes trained with {recorded} "
            f"thread(s): the resume will not be bit-identical to an uninterrupted run "
            f"(cpu_threads=auto or cpu_threads={recorded} keeps it)"
        )
    return threads, None


def set_cpu_threads(threads: int) -> int:
    """Apply a count to torch (intra-op) and to OpenMP in any child process; returns it."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return threads
