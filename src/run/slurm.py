"""A SLURM job that ended without writing its result (killed by the OOM killer or SIGKILL, a node
failure) stops a ``hydra/launcher=slurm`` launch with one line, also where SLURM keeps no
accounting.

hydra-submitit-launcher waits on the login node until every job has written its result, and
learns from ``sacct`` that one never will. Where ``sacct`` does not work (the one-node cluster of
tools/slurm/up.sh, some small clusters) the state stays unknown and the launch would wait for
ever; :class:`NoticeLostJobs` then gives submitit the states from ``squeue``, which knows a job
until ``MinJobAge`` (300 s by default) after it ended. submitit's error for such a job becomes
one line in :func:`describe_lost_job` (src/cli/entry.py calls it).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from hydra.experimental.callback import Callback

# A job squeue no longer knows: it ended more than MinJobAge ago.
GONE = "ENDED"
# squeue's states of a job that will not run again; any other (PENDING, RUNNING, COMPLETING,
# REQUEUED, CONFIGURING...) means it is still going.
ENDED_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "SPECIAL_EXIT", "TIMEOUT", GONE,
}  # fmt: skip


class NoticeLostJobs(Callback):
    """conf/hydra/default.yaml's callback: under the SLURM launcher without accounting, submitit
    reads job states from squeue."""

    def on_multirun_start(self, config, **kwargs) -> None:
        target = str(config.hydra.launcher.get("_target_", ""))
        if target.endswith("submitit_launcher.SlurmLauncher") and not has_accounting():
            from submitit.slurm.slurm import SlurmJob

            SlurmJob.watcher = squeue_watcher()


def has_accounting() -> bool:
    try:
        done = subprocess.run(
            ["sacct", "--noheader", "--jobs=1"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def squeue_watcher():
    """submitit's watcher of job states, asking ``squeue`` instead of ``sacct`` once a minute
    (well within MinJobAge). submitit is imported only here."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        def update(self) -> None:
            waiting = self._registered - self._finished
            if not waiting:
                return
            self._num_calls += 1
            ids = ",".join(sorted({job.split("_")[0] for job in waiting}))
            command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"]
            try:
                done = subprocess.run(
                    [*command, f"--jobs={ids}"], capture_output=True, text=True, timeout=60
                )
            except (OSError, subprocess.TimeoutExpired):
                return
            self._last_status_check = time.time()
            if done.returncode != 0 and "Invalid job id" not in done.stderr:
                return  # slurmctld did not answer: ask again next time
            states = dict(line.split("|", 1) for line in done.stdout.split() if "|" in line)
            for job in waiting:
                state = states.get(job, GONE)
                self._info_dict[job] = {"State": state if state in ENDED_STATES else "RUNNING"}
                if self.is_done(job, mode="cache"):
                    self._finished.add(job)

    return SqueueWatcher(delay_s=60)


def describe_lost_job(submitit_message: str) -> str | None:
    """One line from submitit's 'Job <id> (task: <n>) with path <…>/<id>_<n>_result.pkl / has not
    produced any output (state: <state>)' and the log tail that follows; None for another
    message."""
    job = re.match(r"Job (\S+) \(task: \d+\) with path (\S+)_result\.pkl", submitit_message)
    if job is None:
        return None
    state = re.search(r"\(state: ([A-Z_]+)", submitit_message)
    log = Path(f"{job.group(2)}_log.err")
    how = f"ended ({state.group(1)})" if state else "ended"
    # conf/hydra/launcher/slurm.yaml: submitit_folder is <sweep>/.submitit/<job id>
    sweep = log.parents[2] if log.parents[1].name == ".submitit" else "<the sweep folder>"
    return (
        f"SLURM job {job.group(1)} {how} without writing its result: killed (out of memory, "
        f"SIGKILL) or its node failed; its log: {log}. The sweep's other jobs go on; once they "
        f"ended, run the same command with hydra.sweep.dir={sweep} to skip the finished jobs "
        "and resume the others"
    )
