"""src/launch.py without a cluster: the SLURM requeue signal is held until a Trainer stage can
handle it (the cluster itself is exercised in tests/test_slurm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.data.synthetic import write_vtab_task

REPO = Path(__file__).resolve().parents[1]

# In a process of its own: the signal mask and handlers are process state.
HELD_UNTIL_TRAINING = """
import os, signal
import src.train  # what a job imports before src.train.main holds the signal
from src.launch import hold_requeue_signal

# A thread that does not block SIGUSR1 would receive it (torch's import starts one): main()
# holds it before any thread exists, and every later thread inherits the mask.
assert os.listdir("/proc/self/task") == [str(os.getpid())], "importing src.train starts a thread"
blocked = lambda: signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, [])
hold_requeue_signal()
assert not blocked(), "held outside SLURM"

os.environ["SLURM_JOB_ID"] = "1"
hold_requeue_signal()
from src.checkpoints import RequeueSignalInStages  # torch, Lightning: threads that inherit it

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


def test_requeue_signal_is_held_under_slurm_until_a_handler_is_installed():
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
        sys.executable, "-m", "src.train", "debug=tiny", f"data.root={tmp_path}",
        "data.task=toy", "data.num_classes=4", "trainer.max_epochs=1", "extras.print_config=false",
        "callbacks.progress_bar=null",
    ]  # fmt: skip
    outside = subprocess.run(
        [*args, f"hydra.run.dir={tmp_path / 'outside'}"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert outside.returncode == 0, outside.stderr[-3000:]
    # Lightning's warning (Trainer and its SLURM checks were built for fit and test) is gone
    assert "`srun`" not in outside.stdout + outside.stderr

    job = {**env, "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train"}  # sbatch, python w/o srun
    inside = subprocess.run(
        [*args, f"hydra.run.dir={tmp_path / 'inside'}"], cwd=REPO, env=job,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert inside.returncode == 0, inside.stderr[-3000:]
    output = inside.stdout + inside.stderr
    said = [line for line in output.splitlines() if "without srun" in line]
    assert len(said) == 1 and "SLURM job 4242" in said[0] and "`srun`" not in output, said
    assert "hydra/launcher=slurm" in said[0]
