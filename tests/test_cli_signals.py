"""Real processes stopped from outside — kill -9 or SIGTERM in the middle of training — then
resumed with ``ckpt_path=last``: the resumed run ends bit-identical to an uninterrupted one,
with the same metrics history and results keys."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from src.data.synthetic import write_vtab_task
from tests import processes
from tests.processes import WarmProcess

pytestmark = pytest.mark.slow


def base_args(data: Path) -> list[str]:
    return [
        "debug=tiny",
        "backbone.kwargs={depth:2}",  # two blocks: what is stopped and resumed is the loop
        f"data.root={data}",
        "data.task=toy",
        "data.num_classes=4",
        "data.num_workers=1",  # a worker process too: it must not outlive or confuse a kill
        "trainer.max_epochs=4",
        "extras.print_config=false",
        # What bit-identity needs (docs/run_folders.md): one thread count, whatever the load.
        "cpu_threads=1",
        "deterministic=true",
    ]


def launch(args: list[str], env: dict | None = None) -> subprocess.Popen | WarmProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return processes.start("src.train", *args, env=env)


def finish(proc: subprocess.Popen | WarmProcess, timeout: int = 900) -> tuple[str, str]:
    """The process's stdout and stderr once it has exited. Past ``timeout`` it is killed (its
    DataLoader workers follow: they watch their parent) and the test fails with the end of what
    it printed, rather than leaving a hung run behind."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{shlex.join(proc.args[2:])} still ran after {timeout} s:\n{err[-3000:]}")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signals")
    data = tmp / "data"
    write_vtab_task(data, "toy", num_classes=4, n_train=48, n_val=16, n_test=16, img_size=32)
    proc = launch([*base_args(data), f"hydra.run.dir={tmp / 'straight'}"])
    out, err = finish(proc)
    assert proc.returncode == 0, err[-3000:]
    return tmp


def stop_in_epoch_3(proc: subprocess.Popen | WarmProcess, signum: int) -> None:
    for line in proc.stdout:  # one line per epoch when piped (src.run.progress.EpochLines)
        if line.startswith("epoch 2/4"):
            os.kill(proc.pid, signum)
            break


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "TERM"])
def test_stopped_run_resumes_to_the_uninterrupted_end(straight, signum):
    data, folder = straight / "data", straight / f"stopped_{signum}"
    proc = launch([*base_args(data), f"hydra.run.dir={folder}"])
    stop_in_epoch_3(proc, signum)
    out, err = finish(proc)
    assert proc.returncode == (-9 if signum == signal.SIGKILL else 128 + signum), err[-3000:]
    if signum == signal.SIGTERM:
        said = [line for line in err.splitlines() if line.startswith("interrupted: ")]
        assert len(said) == 1 and "SIGTERM stopped the run in epoch" in said[0], err[-3000:]
        resume = shlex.split(said[0].split("Resume with: ", 1)[1])
        assert resume[:3] == ["python", "-m", "src.train"] and resume[-1] == "ckpt_path=last"
        args = resume[3:]
    else:
        args = [*base_args(data), f"hydra.run.dir={folder}", "ckpt_path=last"]
    resumed = launch(args)
    out, err = finish(resumed)
    assert resumed.returncode == 0, err[-3000:]

    a = load_file(straight / "straight" / "adapter.safetensors")
    b = load_file(folder / "adapter.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    rows = {
        name: list(csv.DictReader(open(path / "csv" / "metrics.csv")))
        for name, path in (("straight", straight / "straight"), ("resumed", folder))
    }
    columns = ("epoch", "step", "val/acc", "train/loss_epoch")
    history = {n: [[r.get(c, "") != "" for c in columns] for r in rs] for n, rs in rows.items()}
    assert history["resumed"] == history["straight"]  # the same rows, epoch by epoch
    assert [r["step"] for r in rows["resumed"]] == [r["step"] for r in rows["straight"]]
    results = [
        json.loads((p / "results.json").read_text()) for p in (straight / "straight", folder)
    ]
    assert results[1]["status"] == "finished"
    assert results[1]["metrics"].keys() == results[0]["metrics"].keys()
    assert results[1]["metrics"]["test/acc"] == results[0]["metrics"]["test/acc"]


def test_multiruns_started_together_get_their_own_folders(straight):
    """Two sweeps whose folder names collide (the same second) each claim one of their own."""
    sweep = f"hydra.sweep.dir=${{claim_folder:{straight / 'sweeps' / 'same_second'}}}"
    args = [
        "-m",
        *base_args(straight / "data"),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "test=false",
        "sigma=0.1,0.2",
        sweep,
    ]
    procs = [launch(args) for _ in range(2)]
    for proc in procs:
        out, err = finish(proc)
        assert proc.returncode == 0, err[-3000:]
    folders = sorted(p.name for p in (straight / "sweeps").iterdir())
    assert folders == ["same_second", "same_second_2"]
    for folder in folders:
        results = sorted((straight / "sweeps" / folder).glob("*/results.json"))
        assert len(results) == 2
        assert {json.loads(r.read_text())["sigma"] for r in results} == {0.1, 0.2}


def test_the_stop_message_names_the_newest_checkpoint(tmp_path):
    from src.train import what_was_saved

    assert what_was_saved(tmp_path, 0) == "no epoch had finished, nothing was saved"
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    os.utime(last, (1000, 1000))
    assert what_was_saved(tmp_path, 3) == f"{last} holds the end of epoch 3"
    # SLURM's requeue signal made Lightning save hpc_ckpt_1 after the epoch's last.ckpt.
    requeue = tmp_path / "hpc_ckpt_1.ckpt"
    requeue.write_bytes(b"x")
    os.utime(requeue, (2000, 2000))
    assert what_was_saved(tmp_path, 3).startswith(f"{requeue} was saved for SLURM's requeue")
    os.utime(last, (3000, 3000))  # an epoch ended after it: last.ckpt is the newer again
    assert what_was_saved(tmp_path, 4) == f"{last} holds the end of epoch 4"
    # SIGTERM part-way through epoch 5 (0-based 4) saved stopped.ckpt; last.ckpt links to it.
    (tmp_path / "checkpoints" / "stopped.ckpt").write_bytes(b"x")
    last.unlink()
    last.symlink_to("stopped.ckpt")
    said = f"{last} holds the run as it stopped, part-way through epoch 5"
    assert what_was_saved(tmp_path, 4) == said


def test_a_resume_from_an_epoch_end_checkpoint_is_bit_identical(tmp_path):
    """Validating every 2nd epoch makes ModelCheckpoint save at the training epoch's end, and
    Lightning then resumes by replaying that epoch's end after building its data iterator (which
    draws random seeds): the resumed run must still end where the uninterrupted one does."""
    data = tmp_path / "data"
    write_vtab_task(data, "toy", num_classes=4, n_train=48, n_val=16, n_test=16, img_size=32)
    args = [*base_args(data), "trainer.check_val_every_n_epoch=2"]
    straight = launch([*args, f"hydra.run.dir={tmp_path / 'straight'}"])
    out, err = finish(straight)
    assert straight.returncode == 0, err[-3000:]
    proc = launch([*args, f"hydra.run.dir={tmp_path / 'stopped'}"])
    for line in proc.stdout:
        if line.startswith("epoch 3/4"):  # epoch001.ckpt (a validating epoch's end) is saved
            os.kill(proc.pid, signal.SIGKILL)
            break
    finish(proc)
    resumed = launch([*args, f"hydra.run.dir={tmp_path / 'stopped'}", "ckpt_path=last"])
    out, err = finish(resumed)
    assert resumed.returncode == 0, err[-3000:]
    a = load_file(tmp_path / "straight" / "adapter.safetensors")
    b = load_file(tmp_path / "stopped" / "adapter.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


class SignalAtBatch(Callback):
    """Sends this process ``signum`` after batch ``batch`` of epoch ``epoch`` (0-based): a real
    signal, at a moment that does not depend on how fast the machine runs."""

    def __init__(self, epoch: int, batch: int, signum: int = signal.SIGTERM):
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signum)


def adapter_and_metrics(folder: Path) -> tuple[dict, dict]:
    return load_file(folder / "adapter.safetensors"), json.loads(
        (folder / "results.json").read_text()
    )["metrics"]


@pytest.mark.parametrize(
    ("signum", "workers"),
    [(signal.SIGTERM, 0), (signal.SIGUSR1, 2)],
    ids=["TERM-0-workers", "USR1-2-workers"],
)
def test_a_run_stopped_mid_epoch_resumes_bit_identically(tmp_path, signum, workers):
    """Stopped after batch 2 of epoch 2's 5, the run saves that point; resumed (with cpu_threads
    back at auto: the checkpoint's count is reused), it trains the rest of that epoch's order
    with the same random numbers and ends where an uninterrupted run does, to the bit. The
    resume also removes the partial checkpoint file a kill left, and writes none to $TMPDIR."""
    data = tmp_path / "data"
    write_vtab_task(data, "toy", num_classes=4, n_train=64, n_val=16, n_test=16, img_size=32)
    args = [*base_args(data), f"data.num_workers={workers}", "trainer.max_epochs=3"]
    straight = launch([*args, f"hydra.run.dir={tmp_path / 'straight'}"])
    out, err = finish(straight)
    assert straight.returncode == 0, err[-3000:]

    folder = tmp_path / "stopped"
    target = "tests.test_cli_signals.SignalAtBatch"
    stop = f"+callbacks.stop={{_target_:{target},epoch:1,batch:1,signum:{int(signum)}}}"
    proc = launch([*args, f"hydra.run.dir={folder}", stop])
    out, err = finish(proc)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "holds the run as it stopped, part-way through epoch 2" in err, err[-3000:]
    assert (folder / "checkpoints" / "last.ckpt").resolve().name == "stopped.ckpt"

    resume = [a for a in args if a != "cpu_threads=1"]  # auto: must reuse the checkpoint's 1
    stale = folder / "checkpoints" / ".epoch001.ckpt.partial-99999"  # a kill while saving
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    resumed = launch(
        [*resume, f"hydra.run.dir={folder}", "ckpt_path=last"], env={"TMPDIR": str(tmpdir)}
    )
    out, err = finish(resumed)
    assert resumed.returncode == 0, err[-3000:]
    assert "not resumable" not in err  # Lightning's warning for a loader without a state
    assert not stale.exists()
    assert not [p for p in tmpdir.rglob("*") if p.is_file()]  # checkpoints were saved meanwhile

    (a, metrics_a), (b, metrics_b) = map(adapter_and_metrics, (tmp_path / "straight", folder))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert metrics_b == metrics_a
    assert not (folder / "checkpoints" / "stopped.ckpt").exists()  # the next epoch end replaced it
    steps = [
        [r["step"] for r in csv.DictReader(open(f / "csv" / "metrics.csv"))]
        for f in (tmp_path / "straight", folder)
    ]
    assert steps[1] == steps[0]  # the stopped epoch's first rows are kept, none twice
