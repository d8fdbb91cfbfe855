"""End to end: real Hydra configs, real Lightning Trainer, tiny real ViT, VTAB-format data."""

import csv
import json
import os
import signal

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict
from safetensors.torch import load_file

from src.cli.entry import RunInterrupted
from src.data.synthetic import write_vtab_task
from src.eval import evaluate
from src.run.stopping import RunDiverged
from src.train import train
from tests.conftest import SimulatedCrash, crash_in_epoch


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(root, "toy", num_classes=4, n_train=48, n_val=16, n_test=48, img_size=32)
    return root


def tiny_run(compose_cfg, data_root, *overrides):
    return compose_cfg(
        "debug=tiny",
        f"data.root={data_root}",
        "data.task=toy",
        "data.num_classes=4",
        "optim.lr=1e-2",
        "trainer.max_epochs=4",
        "callbacks.progress_bar=null",
        "trainer.enable_model_summary=false",
        *overrides,
    )


@pytest.mark.parametrize("mode", ["none", "pace", "lazy", "fast"])
def test_training_learns_and_writes_run_folder(compose_cfg, data_root, mode):
    # fast pulls towards last epoch's logits; it needs the smaller λ the paper advises.
    lam = 0.1 if mode == "fast" else 0.5
    cfg = tiny_run(compose_cfg, data_root, f"pace={mode}", "sigma=0.5", f"lam={lam}")
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.6, metrics  # chance is 0.25
    out = cfg.paths.output_dir
    results = json.loads(open(f"{out}/results.json").read())
    assert results["protocol"] == "final" and results["pace"] == mode
    assert results["metrics"]["test/acc"] == pytest.approx(metrics["test/acc"])
    rows = list(csv.DictReader(open(f"{out}/csv/metrics.csv")))
    logged = {k for row in rows for k, v in row.items() if v != ""}
    assert {"train/loss_epoch", "train/ce_epoch", "train/consistency_epoch", "val/acc"} <= logged
    assert {"train/grad_norm", "val/fp_distance"} <= logged
    consistency = [
        float(r["train/consistency_epoch"]) for r in rows if r["train/consistency_epoch"]
    ]
    if mode == "none":
        assert set(consistency) == {0.0}
    else:
        assert max(consistency) > 0
    saved = load_file(f"{out}/adapter.safetensors")
    assert "head.weight" in saved and all("base" not in k for k in saved)


def test_tune_protocol_validates_on_val200(compose_cfg, data_root):
    cfg = tiny_run(
        compose_cfg, data_root, "data.protocol=tune", "trainer.max_epochs=1", "test=false"
    )
    train(cfg)
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    assert results["protocol"] == "tune"
    assert "test/acc" not in results["metrics"]


@pytest.mark.parametrize("workers", [0, 1])
def test_interrupted_run_resumes_from_last_ckpt_to_the_same_end(
    compose_cfg, data_root, tmp_path, workers
):
    overrides = (
        "pace=pace",
        "sigma=1.0",
        "trainer.max_epochs=4",
        "test=false",
        "backbone.kwargs={depth:2}",  # two blocks: what is stopped and resumed is the loop
        f"data.num_workers={workers}",  # persistent workers must not change the data order
    )
    straight = tiny_run(compose_cfg, data_root, *overrides)
    with open_dict(straight):
        straight.paths.output_dir = str(tmp_path / "straight")
    train(straight)

    crashed = tiny_run(compose_cfg, data_root, *overrides)
    with open_dict(crashed):
        crashed.paths.output_dir = str(tmp_path / "resumed")
    crash_in_epoch(crashed, 2)
    with pytest.raises(SimulatedCrash):
        train(crashed)
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1

    resumed = tiny_run(compose_cfg, data_root, *overrides, "ckpt_path=last")
    with open_dict(resumed):
        resumed.paths.output_dir = str(tmp_path / "resumed")
    train(resumed)
    a = load_file(str(tmp_path / "straight" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_eval_reproduces_final_accuracy_from_adapter_weights(compose_cfg, data_root):
    cfg = tiny_run(compose_cfg, data_root, "pace=pace", "trainer.max_epochs=2")
    trained = train(cfg)
    run_dir = cfg.paths.output_dir
    eval_cfg = compose_cfg(f"run_dir={run_dir}", config_name="eval")
    evaluated = evaluate(eval_cfg)
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)


class SendSignal(Callback):
    """Sends ``signum`` to this process after batch 1 of epoch ``epoch`` (as a scheduler would)."""

    def __init__(self, signum: int, epoch: int):
        self.signum, self.epoch = signum, epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_signal_stops_at_a_batch_boundary_with_resume_command(
    compose_cfg, data_root, tmp_path, signum
):
    cfg = tiny_run(compose_cfg, data_root, "trainer.max_epochs=3", "test=false")
    with open_dict(cfg):
        cfg.callbacks.signal = {"_target_": f"{__name__}.SendSignal", "signum": signum, "epoch": 1}
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg)
    name = signal.Signals(signum).name
    assert stopped.value.exit_status == 128 + signum
    message = str(stopped.value)
    assert message.startswith(f"{name} stopped the run in epoch 2; ")
    assert message.endswith(f"hydra.run.dir={cfg.paths.output_dir} ckpt_path=last")
    # the stop itself is saved: last.ckpt points at the batch boundary in the second epoch
    assert "holds the run as it stopped, part-way through epoch 2" in message
    last = f"{cfg.paths.output_dir}/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # handlers are given back


def test_nan_loss_stops_with_step_and_last_good_checkpoint(compose_cfg, data_root):
    cfg = tiny_run(compose_cfg, data_root, "optim.lr=1e4", "trainer.max_epochs=6")
    with pytest.raises(RunDiverged) as diverged:
        train(cfg)
    out = cfg.paths.output_dir
    message = str(diverged.value)
    assert message.startswith("training diverged: the loss became nan at step ")
    assert "results.json says 'diverged'. Lower optim.lr" in message and "\n" not in message
    results = json.loads(open(f"{out}/results.json").read())
    assert results["status"] == "diverged" and results["metrics"] == {}
    assert results["provenance"]["execution"]["precision"] == "32-true"  # what ran, also here
    assert results["diverged"]["step"] == int(message.split("at step ")[1].split()[0])
    good = results["last_good_checkpoint"]
    assert (good is None) == ("no epoch had finished" in message)
    if good:
        state = torch.load(good, weights_only=False)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    assert not os.path.exists(f"{out}/adapter.safetensors")


def test_claim_folder_gives_each_launch_its_own_folder(tmp_path):
    from src.cli import validation as config

    base = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    first = config.claim_folder(base)
    assert first == base and os.path.isdir(base)
    assert config.claim_folder(base) == base  # resolved again in the same launch: same folder
    config._claimed.clear()  # another process, same second
    assert config.claim_folder(base) == base + "_2"
    config._claimed.clear()
    assert config.claim_folder(base) == base + "_3"


def test_last_ckpt_link_is_replaced_in_one_step(tmp_path):
    from src.run.checkpoints import link_atomically

    for name in ("epoch000.ckpt", "epoch001.ckpt"):
        (tmp_path / name).write_text(name)
    link = str(tmp_path / "last.ckpt")
    link_atomically(str(tmp_path / "epoch000.ckpt"), link)
    link_atomically(str(tmp_path / "epoch001.ckpt"), link)
    assert os.readlink(link) == "epoch001.ckpt" and open(link).read() == "epoch001.ckpt"
    assert sorted(os.listdir(tmp_path)) == ["epoch000.ckpt", "epoch001.ckpt", "last.ckpt"]
