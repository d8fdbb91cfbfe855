"""SLURM for real: a one-node cluster on this machine (tools/slurm/up.sh), sweeps submitted by
hydra-submitit-launcher exactly as on a cluster's login node, and a job that hits its time limit,
is requeued by Lightning and resumes in its own folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from lightning import Callback

from src.data.synthetic import write_vtab_task
from tests import processes

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(root, "toy", num_classes=4, n_train=32, n_val=16, n_test=32, img_size=32)
    return root


def start_sweep(
    slurm_conf, data_root, sweep_dir: Path, *overrides: str, launcher: str = "slurm"
) -> subprocess.Popen | processes.WarmProcess:
    """`python -m src.train ... hydra/launcher=<launcher> -m` from the repository root (the
    jobs themselves start cold, as sbatch starts them)."""
    args = [
        "debug=tiny", f"data.root={data_root}",
        "data.task=toy", "data.num_classes=4", "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false", f"hydra.sweep.dir={sweep_dir}",
        f"hydra/launcher={launcher}", *overrides, "-m",
    ]  # fmt: skip
    env = {**os.environ, "SLURM_CONF": slurm_conf, "OMP_NUM_THREADS": "1"}
    sweep_dir.mkdir(parents=True)
    log = open(sweep_dir.parent / f"{sweep_dir.name}.log", "w")
    return processes.start("src.train", *args, env=env, stdout=log, stderr=subprocess.STDOUT)


def sweep_log(sweep_dir: Path) -> str:
    return (sweep_dir.parent / f"{sweep_dir.name}.log").read_text()


def job_logs(sweep_dir: Path) -> dict[str, str]:
    """submitit's stderr log of every array task, by SLURM job id (`<array id>_<task>`)."""
    return {p.parent.name: p.read_text() for p in sweep_dir.glob(".submitit/*/*_0_log.err")}


# What slurmstepd writes into the job's log when `scontrol requeue` stops it.
REQUEUED = "DUE TO JOB REQUEUE ***"


def extend_time_limit_after_first_requeue(slurm_conf, sweep_dir, proc, minutes=5) -> None:
    """Give the requeued attempt a longer limit, so that it finishes instead of being requeued
    again: SLURM's 30 s check period makes each 1-minute attempt train for 10-45 s only."""
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    while proc.poll() is None:
        for job_id, log in job_logs(sweep_dir).items():
            if REQUEUED in log:
                subprocess.run(
                    ["scontrol", "update", f"jobid={job_id}", f"timelimit={minutes}"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                return
        time.sleep(1)


@pytest.fixture(scope="module")
def requeue_sweep(slurm_conf, data_root, tmp_path_factory):
    """A one-point sweep whose job cannot finish within its 1-minute limit.

    SLURM signals SIGUSR1 5 s before the limit (up to 30 s earlier: slurmctld checks limits every
    30 s), i.e. 25-55 s after the start; 50 s of training (Lightning's max_time, which the
    checkpoint carries over) outlast that. It runs alone, not beside the DDP sweep.
    """
    sweep_dir = tmp_path_factory.mktemp("requeue") / "sweep"
    proc = start_sweep(
        slurm_conf, data_root, sweep_dir,
        "+slurm.timeout_min=1", "+slurm.signal_delay_s=5",
        "trainer.max_epochs=10000", "+trainer.max_time=00:00:00:50",
    )  # fmt: skip
    watcher = threading.Thread(
        target=extend_time_limit_after_first_requeue, args=(slurm_conf, sweep_dir, proc)
    )
    watcher.start()
    yield proc, sweep_dir
    if proc.poll() is None:
        proc.kill()
    watcher.join()


def test_two_point_ddp_sweep_runs_one_slurm_job_per_point(slurm_conf, data_root, tmp_path):
    """Each sweep point is one SLURM job of 2 tasks (hydra/launcher=slurm_ddp, 2 CPU ranks)."""
    sweep_dir = tmp_path / "sweep"
    proc = start_sweep(
        slurm_conf, data_root, sweep_dir, "sigma=0.1,0.5", "trainer.max_epochs=2",
        "trainer=ddp_cpu", "+slurm.gpus_per_node=null", launcher="slurm_ddp",
    )  # fmt: skip
    proc.wait(timeout=300)
    assert proc.returncode == 0, sweep_log(sweep_dir)[-3000:]

    # Exactly one folder per job, holding its metrics.
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [r.name.split("_")[0] for r in runs] == ["0", "1"]
    results = [json.loads((r / "results.json").read_text()) for r in runs]
    assert [r["sigma"] for r in results] == [0.1, 0.5]
    assert [r["epochs"] for r in results] == [2, 2]
    for run, result in zip(runs, results, strict=True):
        assert 0.0 <= result["metrics"]["test/acc"] <= 1.0
        assert "val/acc" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]
        # 48 images, batch 16, split over 2 ranks: 2 steps per epoch.
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == 2 * 2

    # Both points went through SLURM as one array job; srun started both ranks of each.
    logs = job_logs(sweep_dir)
    assert len(logs) == 2 and len({name.split("_")[0] for name in logs}) == 1, logs.keys()
    for job_id, log in logs.items():
        assert "Using `DistributedSampler`" in log
        assert (sweep_dir / ".submitit" / job_id / f"{job_id}_1_log.err").is_file()  # rank 1
    script = next(sweep_dir.glob(".submitit/*/*_submission.sh")).read_text()
    for line in ("--signal=USR1@120", "--array=0-1", "--ntasks-per-node=2"):
        assert f"#SBATCH {line}" in script


def test_rerunning_an_interrupted_sweep_skips_finished_jobs_and_resumes_the_rest(
    data_root, tmp_path
):
    """The same sweep command with `hydra.sweep.dir=<its folder>` (basic launcher, no cluster;
    it runs while the requeue job waits for its time limit)."""
    sweep_dir = tmp_path / "sweep"
    args = [
        "debug=tiny", f"data.root={data_root}",
        "data.task=toy", "data.num_classes=4", "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false", "trainer.max_epochs=2",
        "callbacks.model_checkpoint.save_top_k=-1",  # keep epoch000.ckpt to fake the interruption
        f"hydra.sweep.dir={sweep_dir}", "sigma=0.1,0.5", "-m",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = processes.run("src.train", *args, env=env, timeout=300)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    finished, interrupted = sorted(p for p in sweep_dir.iterdir() if p.is_dir())

    # Job 1 as a kill during its second epoch leaves it: the first epoch's checkpoint, no results.
    finished_mtime = (finished / "results.json").stat().st_mtime_ns
    (interrupted / "results.json").unlink()
    (interrupted / "checkpoints" / "epoch001.ckpt").unlink()
    last = interrupted / "checkpoints" / "last.ckpt"
    last.unlink()
    last.symlink_to("epoch000.ckpt")

    again = processes.run("src.train", *args, env=env, timeout=300)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert f"{finished / 'results.json'} exists" in output
    assert (finished / "results.json").stat().st_mtime_ns == finished_mtime  # not run again
    assert f"resuming from {last}, the newest checkpoint" in output
    result = json.loads((interrupted / "results.json").read_text())
    assert result["sigma"] == 0.5 and result["epochs"] == 2 and "test/acc" in result["metrics"]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [
        finished.name,
        interrupted.name,
    ]


def test_a_requeue_signal_before_training_starts_still_requeues_and_resumes(
    slurm_conf, data_root, tmp_path
):
    """SIGUSR1 while the job is still starting up (data, model: no Lightning handler yet) is
    held from the start of src.train's main (which prints the run folder first) until training
    starts; its default action would kill the job unrequeued."""
    sweep_dir = tmp_path / "sweep"
    proc = start_sweep(slurm_conf, data_root, sweep_dir, "trainer.max_epochs=3")
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    deadline = time.monotonic() + 120
    while not any("run folder: " in log for log in job_logs(sweep_dir).values()):
        assert time.monotonic() < deadline and proc.poll() is None, sweep_log(sweep_dir)[-3000:]
        time.sleep(0.1)
    (out,) = sweep_dir.glob(".submitit/*/*_0_log.out")
    job_id = out.parent.name
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)
    proc.wait(timeout=300)
    assert proc.returncode == 0, sweep_log(sweep_dir)[-3000:]

    log = job_logs(sweep_dir)[job_id]
    requeues = re.findall(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ " + re.escape(REQUEUED), log)
    assert len(requeues) == 1, log[-3000:]
    (run,) = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    # Lightning's handler saves hpc_ckpt_1 as training starts and requeues; the SIGTERM that the
    # requeue sends then stops the run at the next batch boundary, which saves that point too
    # (checkpoints/stopped.ckpt, last.ckpt re-pointed): the resume takes the newer of the two.
    newest = [run / "hpc_ckpt_1.ckpt", run / "checkpoints" / "last.ckpt"]
    resumed = [c for c in newest if f"resuming from {c}, the newest checkpoint" in log]
    assert len(resumed) == 1, log[-3000:]
    assert f"Restored all states from the checkpoint at {resumed[0]}" in out.read_text()
    result = json.loads((run / "results.json").read_text())
    assert result["epochs"] == 3 and "test/acc" in result["metrics"]


class RequeueMidStep(Callback):
    """In a SLURM job's first attempt, asks SLURM for the requeue signal inside one batch's step,
    between its forward and its backward, and waits there for it: the moment a time limit's
    signal most often finds a job. Elsewhere (the uninterrupted reference run) it does nothing."""

    def __init__(self, step: int = 3):
        self.step = step

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        first_attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0
        if "SLURM_JOB_ID" in os.environ and first_attempt and trainer.global_step == self.step:
            subprocess.run(["scancel", "--signal=USR1", os.environ["SLURM_JOB_ID"]], check=True)
            time.sleep(3)  # the signal arrives here, mid-step


def trained_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter.safetensors")


def test_a_requeue_signal_mid_step_resumes_bit_identically(slurm_conf, data_root, tmp_path):
    """Lightning's requeue (save hpc_ckpt, scontrol requeue) is served at the end of the batch
    the signal interrupted; the requeued job resumes part-way through the epoch and ends with
    the weights and metrics of a run nobody stopped."""
    setting = (
        "trainer.max_epochs=2", "data.batch_size=4", "cpu_threads=1",
        f"+callbacks.requeue_mid_step._target_={__name__}.RequeueMidStep",
    )  # fmt: skip
    sweep_dir = tmp_path / "sweep"
    proc = start_sweep(slurm_conf, data_root, sweep_dir, *setting)
    assert proc.wait(timeout=300) == 0, sweep_log(sweep_dir)[-3000:]
    ((job_id, log),) = job_logs(sweep_dir).items()
    requeues = re.findall(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ " + re.escape(REQUEUED), log)
    assert len(requeues) == 1, log[-3000:]
    (run,) = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert re.search(r"^resuming from .*\.ckpt, the newest checkpoint", log, re.M), log[-3000:]

    reference_dir = tmp_path / "uninterrupted"
    reference = start_sweep(slurm_conf, data_root, reference_dir, *setting, launcher="basic")
    assert reference.wait(timeout=300) == 0, sweep_log(reference_dir)[-3000:]
    (plain,) = [p for p in reference_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    weights, expected = trained_weights(run), trained_weights(plain)
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected), "the requeue changed bits"
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert metrics == json.loads((plain / "results.json").read_text())["metrics"]


def test_a_job_killed_before_writing_its_result_ends_the_launch_with_one_line(
    slurm_conf, data_root, tmp_path
):
    """SIGKILL during training (as the OOM killer sends) leaves no result. This cluster keeps no
    accounting, so sacct cannot tell submitit that the job ended: squeue does."""
    sweep_dir = tmp_path / "sweep"
    proc = start_sweep(slurm_conf, data_root, sweep_dir, "trainer.max_epochs=10000")
    deadline = time.monotonic() + 120
    while not any("SLURM auto-requeueing enabled" in p.read_text() for p in job_outs(sweep_dir)):
        assert time.monotonic() < deadline and proc.poll() is None, sweep_log(sweep_dir)[-3000:]
        time.sleep(0.2)
    (out,) = job_outs(sweep_dir)
    job_id = out.parent.name
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    listed = subprocess.run(
        ["scontrol", "listpids", job_id], env=env, check=True, capture_output=True, text=True
    ).stdout.splitlines()[1:]  # PID JOBID STEPID LOCALID GLOBALID
    pids = [int(line.split()[0]) for line in listed]
    python = sys.executable.encode()  # the job's task; srun and the batch shell are the others
    (task,) = [p for p in pids if Path(f"/proc/{p}/cmdline").read_bytes().startswith(python)]
    os.kill(task, signal.SIGKILL)  # as the OOM killer does
    proc.wait(timeout=240)
    output = sweep_log(sweep_dir)
    assert proc.returncode == 2, output[-3000:]
    (error,) = [line for line in output.splitlines() if line.startswith("error: ")]
    assert error.startswith(
        f"error: SLURM job {job_id} ended (FAILED) without writing its result: killed (out of "
        f"memory, SIGKILL) or its node failed; its log: {out.with_name(f'{job_id}_0_log.err')}."
    ), error
    assert error.endswith(f"run the same command with hydra.sweep.dir={sweep_dir} to skip the "
                          "finished jobs and resume the others"), error  # fmt: skip
    assert "Traceback" not in output


def job_outs(sweep_dir: Path) -> list[Path]:
    return list(sweep_dir.glob(".submitit/*/*_0_log.out"))


def test_time_limit_requeues_and_resumes_in_the_same_folder(slurm_conf, requeue_sweep):
    proc, sweep_dir = requeue_sweep
    proc.wait(timeout=420)
    assert proc.returncode == 0, sweep_log(sweep_dir)[-3000:]

    ((job_id, log),) = job_logs(sweep_dir).items()
    requeues = re.findall(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ " + re.escape(REQUEUED), log)
    restores = re.findall(
        r"^resuming from (.*\.ckpt), the newest checkpoint of this run folder", log, re.M
    )
    assert len(requeues) >= 1, log[-3000:]
    assert len(restores) == len(requeues), log[-3000:]  # every requeued attempt resumed
    # ...and Lightning restored exactly that file (its messages go to the job's stdout log).
    out = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    assert re.findall(r"Restored all states from the checkpoint at (.*\.ckpt)", out) == restores

    # ...from the newest checkpoint of its own folder: the one saved at the signal, or the
    # epoch-end last.ckpt when an epoch ended before SLURM stopped the requeued job.
    (run,) = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for restored in map(Path, restores):
        assert restored in (run / "checkpoints" / "last.ckpt", run / restored.name), restored
        assert restored.name == "last.ckpt" or re.fullmatch(r"hpc_ckpt_\d+\.ckpt", restored.name)
    assert not list(run.glob("hpc_ckpt_*.ckpt"))  # consumed once fit finished
    result = json.loads((run / "results.json").read_text())
    assert result["epochs"] > 0 and "test/acc" in result["metrics"]

    scontrol = subprocess.run(
        ["scontrol", "show", "job", job_id],
        env={**os.environ, "SLURM_CONF": slurm_conf},
        capture_output=True,
        text=True,
    )
    restarts = re.search(r"Restarts=(\d+)", scontrol.stdout)
    assert restarts and int(restarts.group(1)) == len(requeues), scontrol.stdout
