"""summary.csv rows per epoch from a real fit; provenance names the code's checkout and the
machine (what a real run records: tests/test_run_folder.py)."""

from __future__ import annotations

import csv
import os
import platform
import subprocess
from pathlib import Path

import lightning as L
import omegaconf
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from src import PROJECT_ROOT
from src.data import VTABDataModule
from src.data.synthetic import write_vtab_task
from src.finetuner import FineTuner
from src.network import build_model
from src.pace import build_regulariser
from src.run.record import EpochSummary, code_state, provenance
from tests.conftest import quiet_trainer


def tiny_fit(data_root, mode, **pace):
    """The datamodule and a 2-block tiny ViT with LoRA for the toy task under ``data_root``."""
    dm = VTABDataModule(str(data_root), "toy", protocol="tune", batch_size=8, num_workers=0,
                        img_size=32, num_classes=4)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(4, "vit_tiny_patch16_224", "lora_add", rank=2, img_size=32,
                        timm_kwargs={"depth": 2})  # fmt: skip
    module = FineTuner(model, build_regulariser(model, mode, **pace), num_classes=4, lr=1e-2,
                       warmup_epochs=0, grad_norm_every=0)  # fmt: skip
    return dm, module


def test_summary_has_one_row_per_epoch_with_lr_seconds_and_metrics(tmp_path):
    write_vtab_task(tmp_path, "toy", num_classes=4, n_train=16, n_val=8, n_test=8)
    dm, module = tiny_fit(tmp_path, "pace", sigma=0.5, lam=1.0)
    path = tmp_path / "run" / "summary.csv"
    trainer = quiet_trainer(max_epochs=3, check_val_every_n_epoch=2, callbacks=[EpochSummary(path)])
    trainer.fit(module, datamodule=dm)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # 16 images / batch 8
    assert {
        "lr",
        "seconds",
        "train/loss",
        "train/ce",
        "train/consistency",
        "train/acc",
        "val/acc",
        "val/fp_distance",
    } <= set(rows[0])
    assert all(float(r["seconds"]) > 0 for r in rows)
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] > lrs[1] > lrs[2]  # cosine decay, stepped per optimiser step
    # Validation ran after epoch 1 only (every 2nd epoch): the other rows leave it empty.
    assert rows[0]["val/acc"] == "" and rows[2]["val/acc"] == "" and rows[1]["val/acc"] != ""
    assert float(rows[2]["train/loss"]) == float(trainer.callback_metrics["train/loss_epoch"])


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=folder, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_code_state_names_the_commit_of_the_checkout_and_whether_it_was_changed(tmp_path):
    repo = tmp_path / "checkout"
    repo.mkdir()
    assert code_state(repo) == {"git_commit": None, "git_dirty": None}  # not a checkout
    git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    git(repo, "add", "code.py")
    git(repo, "commit", "-qm", "first")
    head = git(repo, "rev-parse", "HEAD")
    assert code_state(repo) == {"git_commit": head, "git_dirty": False}
    (repo / "notes.txt").write_text("untracked files are not the code\n")
    assert code_state(repo)["git_dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    assert code_state(repo) == {"git_commit": head, "git_dirty": True}
    # Code installed inside another project's checkout is not that project's code.
    (repo / "site-packages").mkdir()
    assert code_state(repo / "site-packages") == {"git_commit": None, "git_dirty": None}


def test_provenance_names_commit_packages_and_hardware():
    record = provenance()
    assert record["git_commit"] == git(PROJECT_ROOT, "rev-parse", "HEAD")
    assert isinstance(record["git_dirty"], bool)
    assert record["packages"]["torch"] == torch.__version__.split("+")[0] or (
        record["packages"]["torch"] == torch.__version__
    )
    assert record["packages"]["lightning"] == L.__version__
    assert record["packages"]["omegaconf"] == omegaconf.__version__
    assert record["python"] == platform.python_version()
    assert record["hardware"]["cpu_count"] == os.cpu_count()
    assert record["hardware"]["gpu_count"] == torch.cuda.device_count()
    assert record["hardware"]["cpu"]
    assert record["execution"] is None  # no Trainer: nothing ran


def test_a_resumed_run_keeps_every_epoch_row_once(tmp_path):
    """Resume from the last.ckpt a finished fit saved at its last epoch's end: Lightning restores
    the epoch after on_fit_start and replays that epoch's end, which must neither drop the rows
    written before nor add an empty one."""
    write_vtab_task(tmp_path, "toy", num_classes=4, n_train=16, n_val=8, n_test=8)
    path = tmp_path / "run" / "summary.csv"

    def fit(max_epochs, ckpt_path=None):
        dm, module = tiny_fit(tmp_path, "none")
        checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
        trainer = quiet_trainer(
            max_epochs=max_epochs,
            enable_checkpointing=True,
            limit_val_batches=0,
            callbacks=[EpochSummary(path), checkpoints],
        )
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)

    fit(2)
    before = list(csv.DictReader(path.open()))
    fit(4, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert rows[:2] == before  # the epochs trained before the stop, as they were written
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert all(r["train/ce"] != "" and 0 < float(r["seconds"]) < 600 for r in rows)
