"""Shared fixtures and helpers: Hydra composition of the real configs, a quiet CPU Lightning
trainer, and a callback that crashes a run mid-epoch (for resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

import src.cli.validation  # noqa: F401  (the resolvers the configs use)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as ``python -m src.train`` would, with output_dir set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


class SimulatedCrash(RuntimeError):
    pass


class CrashMidEpoch(Callback):
    """Dies in the middle of epoch ``epoch``, after the previous epoch's last.ckpt was written."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise SimulatedCrash(f"simulated crash in epoch {self.epoch}")


def crash_in_epoch(cfg: DictConfig, epoch: int) -> DictConfig:
    """``cfg`` with a CrashMidEpoch callback added, as a config a run instantiates."""
    with open_dict(cfg):
        cfg.callbacks.crash = {"_target_": f"{__name__}.CrashMidEpoch", "epoch": epoch}
    return cfg


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU Lightning trainer that writes and prints nothing unless told to."""
    settings = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**settings, **kwargs})


@pytest.fixture(autouse=True)
def fresh_signal_mask():
    """A run trained in this process holds SIGUSR1 afterwards (src.run.launch.hold_requeue_signal);
    every process a later test starts would inherit that mask. Each test starts unblocked, as a
    process a shell starts does."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    yield
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})


@pytest.fixture(autouse=True)
def fresh_environment():
    """Each test starts with the session's environment. Runs trained in this process set
    variables (Lightning's PL_GLOBAL_SEED, OMP_NUM_THREADS, HF_HUB_OFFLINE when
    src.backbones.text is imported) that would otherwise reach every process later tests start,
    and decide whether those can start warm (tests/processes.py)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(list(overrides), tmp_path / "run", config_name)

    yield _compose
    GlobalHydra.instance().clear()


REPO = Path(__file__).resolve().parents[1]


def _cluster_running(state: str) -> bool:
    pidfile = Path(state, "run", "slurmctld.pid")
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def slurm_conf():
    """Bring the local cluster up for the session (installing SLURM when root) and down after."""
    state = os.environ.get("PACE_SLURM_DIR", "/tmp/pace-slurm")
    # Six CPUs on two cores: the DDP sweep's two 2-task jobs and the requeue job run side by side.
    env = {**os.environ, "PACE_SLURM_DIR": state, "PACE_SLURM_CPUS": "6"}
    was_running = _cluster_running(state)
    up = subprocess.run(
        [str(REPO / "tools/slurm/up.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    if up.returncode == 3:  # not installed, and not root: nothing here can install it
        pytest.skip(up.stderr.strip())
    assert up.returncode == 0, up.stdout + up.stderr
    yield f"{state}/slurm.conf"
    if not was_running:
        subprocess.run([str(REPO / "tools/slurm/down.sh")], env=env, timeout=120, check=True)


def pytest_terminal_summary(terminalreporter):
    """How the tests' `python -m` processes started (tests/processes.py): warm, or cold and why."""
    from tests import processes

    if processes.STARTS:
        terminalreporter.write_line(processes.summary())
