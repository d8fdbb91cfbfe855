"""End to end: real Hydra configs, real Lightning Trainer, tiny real ViT, VTAB-format data."""

import csv
import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict
from safetensors.torch import load_file

from src.data.synthetic import write_vtab_task
from src.eval import evaluate
from src.train import train


class SimulatedCrash(RuntimeError):
    pass


class CrashMidEpoch(Callback):
    """Dies in the middle of epoch ``epoch``, after the previous epoch's last.ckpt was written."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise SimulatedCrash(f"simulated crash in epoch {self.epoch}")


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


def test_interrupted_run_resumes_from_last_ckpt_to_the_same_end(compose_cfg, data_root, tmp_path):
    overrides = ("pace=pace", "sigma=1.0", "trainer.max_epochs=4", "test=false")
    straight = tiny_run(compose_cfg, data_root, *overrides)
    with open_dict(straight):
        straight.paths.output_dir = str(tmp_path / "straight")
    train(straight)

    crashed = tiny_run(compose_cfg, data_root, *overrides)
    with open_dict(crashed):
        crashed.paths.output_dir = str(tmp_path / "resumed")
        crashed.callbacks.crash = {"_target_": f"{__name__}.CrashMidEpoch", "epoch": 2}
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
