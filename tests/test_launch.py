"""src/launch.py without a cluster: the SLURM requeue signal is held until a Trainer stage can
handle it (the cluster itself is exercised in tests/test_slurm.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
