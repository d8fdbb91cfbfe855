"""src/run/launch.py without a cluster: the SLURM requeue signal is held until a Trainer stage can
handle it (the cluster itself is exercised in tests/test_slurm.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.data.synthetic import write_vtab_task
from tests import processes

REPO = Path(__file__).resolve().parents[1]

# In a process of its own: the signal mask and handlers are process state.
HELD_UNTIL_TRAINING = """
import os, signal
import src.train  # what the entry imports: `python -m src.train` holds the signal first

# A thread that does not block SIGUSR1 would receive it (torch's import starts one): the entry
# holds it before any thread exists, and every later thread inherits the mask.
assert os.listdir("/proc/self/task") == [str(os.getpid())], "importing src.train starts a thread"
blocked = lambda: signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, [])
assert not blocked(), "an import (a test, a notebook) must not change the process' signals"
from src.run.stopping import stop_cleanly_on_signals
stop_cleanly_on_signals()  # the entry's first line
assert blocked()

from src.run.checkpoints import RequeueSignalInStages  # torch, Lightning: threads that inherit it

os.kill(os.getpid(), signal.SIGUSR1)  # before training: the default action would end us here
assert signal.SIGUSR1 in signal.sigpending()
stages = RequeueSignalInStages()
stages.on_train_start(None, None)  # nobody handles SIGUSR1 yet: it stays held
assert blocked()

received = []
signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))  # Lightning's
stages.on_train_start(None, None)
assert received == [signal.SIGUSR1], received  # delivered as training starts
assert not blocked()

stages.on_train_end(None, None)
os.kill(os.getpid(), signal.SIGUSR1)
assert received == [signal.SIGUSR1] and blocked()  # held again after training
stages.on_test_start(None, None)
assert received == [signal.SIGUSR1] * 2, received
print("ok")
"""


def test_requeue_signal_is_held_from_the_entrys_import_until_a_handler_is_installed():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", HELD_UNTIL_TRAINING], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == "ok\n", done.stdout + done.stderr


def fake_slurm_install(tmp_path: Path) -> str:
    """A PATH on which `srun` exists (Lightning only asks ``shutil.which``), as on any machine
    with SLURM installed, whether or not the tests' local cluster is."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.slow
def test_srun_advice_is_one_line_inside_a_slurm_job_and_nothing_outside(tmp_path):
    write_vtab_task(tmp_path, "toy", num_classes=4, n_train=16, n_val=4, n_test=4, img_size=32)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
        "PATH": fake_slurm_install(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    args = [
        "debug=tiny", "backbone.kwargs={depth:2}", f"data.root={tmp_path}", "data.task=toy",
        "data.num_classes=4", "trainer.max_epochs=1", "extras.print_config=false",
        "callbacks.progress_bar=null",
    ]  # fmt: skip
    outside = processes.run(
        "src.train", *args, f"hydra.run.dir={tmp_path / 'outside'}", env=env, timeout=900
    )
    assert outside.returncode == 0, outside.stderr[-3000:]
    # Lightning's warning (Trainer and its SLURM checks were built for fit and test) is gone
    assert "`srun`" not in outside.stdout + outside.stderr

    job = {**env, "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train"}  # sbatch, python w/o srun
    inside = processes.run(
        "src.train", *args, f"hydra.run.dir={tmp_path / 'inside'}", env=job, timeout=900
    )
    assert inside.returncode == 0, inside.stderr[-3000:]
    output = inside.stdout + inside.stderr
    said = [line for line in output.splitlines() if "without srun" in line]
    assert len(said) == 1 and "SLURM job 4242" in said[0] and "`srun`" not in output, said
    assert "hydra/launcher=slurm" in said[0]


# ------------------------------------------------------------ a signal at any moment of a job
def handles(pid: int, signum: int) -> bool:
    """The process has a handler for ``signum`` (its status' SigCgt mask): the entry's first
    line has run. Before that Python itself is starting, and the signal's default action ends
    it (no line, nothing written)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def has_loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def start_run(tmp_path: Path, *extra: str, cold: bool = True, **popen):
    """``python -m src.train`` on a tiny task; cold by default: a job's first seconds are what
    most tests here are about."""
    if not (tmp_path / "data").is_dir():
        write_vtab_task(tmp_path / "data", "toy", 4, n_train=48, n_val=16, n_test=16, img_size=32)
    args = [
        "debug=tiny", "backbone.kwargs={depth:2}",
        f"data.root={tmp_path / 'data'}", "data.task=toy", "data.num_classes=4",
        "extras.print_config=false",
        f"paths.log_dir={tmp_path / 'logs'}", *extra,  # the progress bar: one line per epoch
    ]  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return processes.start("src.train", *args, env=env, cold=cold, **popen)


def wait_for(proc: subprocess.Popen, moment: str) -> str:
    """Block until the run reaches ``moment``; returns the stderr read so far."""
    seen = ""
    if moment == "entry":  # the entry's first line ran: Hydra, OmegaConf still importing
        while not handles(proc.pid, signal.SIGTERM):
            assert proc.poll() is None
            time.sleep(0.002)
    elif moment == "torch":  # main() runs and imports torch
        while not has_loaded(proc.pid, "libtorch"):
            assert proc.poll() is None
            time.sleep(0.01)
    elif moment == "data":  # the datamodule has read its lists; setup decodes the images next
        for line in proc.stderr:
            seen += line
            if "protocol=" in line:
                break
    return seen


# (moment, signal, exit status, what the one line says)
EARLY = [
    ("entry", signal.SIGTERM, 143, "SIGTERM stopped the run while it started; nothing was"),
    ("entry", signal.SIGINT, 130, "Ctrl-C stopped the run while it started"),
    ("torch", signal.SIGTERM, 143, "SIGTERM stopped the run before training started"),
    ("data", signal.SIGTERM, 143, "SIGTERM stopped the run before training started"),
    # held until training starts, which then stops at its first batch boundary and saves that
    # point (checkpoints/stopped.ckpt, re-pointed by last.ckpt) for the resume
    ("entry", signal.SIGUSR1, 138, "SIGUSR1 stopped the run in epoch 1; /"),
    ("data", signal.SIGUSR1, 138, "SIGUSR1 stopped the run in epoch 1; /"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment, signum, status, said", EARLY, ids=[f"{m}-{s.name}" for m, s, *_ in EARLY]
)
def test_a_signal_in_a_jobs_first_seconds_is_one_line(tmp_path, moment, signum, status, said):
    proc = start_run(tmp_path, "trainer.max_epochs=2")
    seen = wait_for(proc, moment)
    os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=900)
    err = seen + err
    assert proc.returncode == status, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(("interrupted:", "error:"))]
    assert len(lines) == 1 and said in lines[0], err[-3000:]
    assert "Traceback" not in out + err
    if signum != signal.SIGUSR1:  # stopped before it wrote anything: no folder left behind
        assert not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    else:  # stopped at the first batch boundary: that point is saved for the resume
        assert "part-way through epoch 1" in lines[0] and "ckpt_path=last" in lines[0]
        assert list((tmp_path / "logs").rglob("checkpoints/last.ckpt"))


LOADER_LEFT_RUNNING = """
import sys
from src.run.stopping import stop_cleanly_on_signals
stop_cleanly_on_signals()
import torch
from torch.utils.data import DataLoader
batches = iter(DataLoader(torch.arange(64), batch_size=2, num_workers=1))
next(batches)
print("worker started", flush=True)
sys.exit(3)  # `batches` still refers to its worker: nothing shut it down
"""


def test_a_worker_left_running_at_exit_does_not_hold_the_process():
    """Workers block SIGTERM (above), which multiprocessing's exit handler ends them with: the
    run must not then wait for them forever (a hung job instead of an exit status)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER_LEFT_RUNNING],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "worker started" in proc.stdout, proc.stderr[-2000:]
    assert proc.returncode == 3, proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_dataloader_workers_neither_swallow_nor_die_from_a_group_signal(tmp_path, signum):
    """SLURM signals every process of a job step, a terminal its whole process group: the
    DataLoader worker gets the signal too. The main process stops at a batch boundary, the
    worker exits quietly with it, and nobody reports a dead worker."""
    proc = start_run(
        tmp_path, "trainer.max_epochs=50", "data.num_workers=1", "hydra.run.dir="
        f"{tmp_path / 'run'}", start_new_session=True, cold=False,
    )  # fmt: skip
    for line in proc.stdout:  # one line per epoch when piped: training has begun
        if line.startswith("epoch 1/50"):
            break
    workers: list[int] = []
    while not workers:  # an epoch's loader starts its worker: signal while it serves batches
        assert proc.poll() is None
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [int(pid) for pid in children]
        time.sleep(0.01)
    os.killpg(proc.pid, signum)
    try:
        out, err = proc.communicate(timeout=900)
    finally:  # a run that hangs must not outlive the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(("interrupted:", "error:"))]
    assert len(lines) == 1, err[-3000:]
    assert f"{signal.Signals(signum).name} stopped the run in epoch" in lines[0], lines
    assert "Traceback" not in out + err and "exited unexpectedly" not in out + err
    for worker in workers:  # gone with the main process, not left behind
        assert (
            not Path(f"/proc/{worker}").exists()
            or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]
        )


class _Regression(__import__("lightning").LightningModule):
    """Four batches of a linear fit: enough steps to tell one batch's middle from its end."""

    def __init__(self):
        super().__init__()
        import torch

        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        import torch

        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        import torch

        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), 2)


class _SignalMidStep(__import__("lightning").Callback):
    """Sends SIGUSR1 inside batch 1's step, between its forward and its backward."""

    def on_before_backward(self, trainer, pl_module, loss):
        if trainer.fit_loop.epoch_loop.batch_progress.current.processed == 1:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_a_cluster_requeue_signal_mid_step_is_served_at_that_batchs_end():
    """Lightning's SLURM handler saves and requeues from wherever the signal finds the process;
    SignalsStopTraining defers it to the end of the batch running then, a point a resume
    continues from bit-identically (the cluster run: tests/test_slurm.py)."""
    from src.run.checkpoints import SignalsStopTraining
    from tests.conftest import quiet_trainer

    trainer = quiet_trainer(max_epochs=1)
    served = []  # (optimiser steps, batches processed) when the "cluster plugin" handler ran

    def cluster_handler(signum, frame):
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        served.append((trainer.global_step, progress.processed))

    previous = signal.signal(signal.SIGUSR1, cluster_handler)  # claimed, as Lightning's would be
    try:
        trainer.callbacks[:0] = [SignalsStopTraining(), _SignalMidStep()]
        trainer.fit(_Regression())
        # The signal came in batch 1 before its backward: served once that batch had stepped.
        assert served == [(2, 2)], served
        assert signal.getsignal(signal.SIGUSR1) is cluster_handler  # given back after fit
    finally:
        signal.signal(signal.SIGUSR1, previous)
