"""The run folder never loses a run: the four data-loss cases of issue 9, and what a resume keeps.

Each case starts from a real run folder (tiny ViT, real Trainer, VTAB-format data), copied per
test, and asserts that a refused launch leaves every pre-existing file byte-identical.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import load_file

from src import PROJECT_ROOT
from src.data.synthetic import write_vtab_task
from src.errors import UserError
from src.run.folder import RUN_FILES, RUN_OUTPUTS, RunFolder, checkpoint_problem, config_changes
from src.train import train
from tests.conftest import SimulatedCrash, compose_config, crash_in_epoch

OVERRIDES = (
    "pace=pace",
    "sigma=1.0",
    "trainer.max_epochs=3",
    "callbacks.model_checkpoint.save_top_k=-1",  # keep every epoch: a fallback exists
)


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file's bytes (a symlink: its target), by path relative to ``folder``."""
    files = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            files[key] = "-> " + os.readlink(path)
        elif path.is_file():
            files[key] = path.read_bytes()
    return files


def run_cfg(data_root: Path, folder: Path, *overrides: str, crash_epoch: int | None = None):
    cfg = compose_config(
        [
            "debug=tiny",
            f"data.root={data_root}",
            "data.task=toy",
            "data.num_classes=4",
            "optim.lr=1e-2",
            "callbacks.progress_bar=null",
            "trainer.enable_model_summary=false",
            "extras.print_config=false",
            *OVERRIDES,
            *overrides,
        ],
        folder,
    )
    return cfg if crash_epoch is None else crash_in_epoch(cfg, crash_epoch)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run, a run that crashed in epoch 2 (epochs 0 and 1 checkpointed, keeping every
    checkpoint), and the same run trained straight through, for comparisons."""
    base = tmp_path_factory.mktemp("runs")
    data = base / "data"
    write_vtab_task(data, "toy", num_classes=4, n_train=32, n_val=16, n_test=16, img_size=32)
    train(run_cfg(data, base / "finished", "trainer.max_epochs=2"))
    train(run_cfg(data, base / "straight"))
    with pytest.raises(SimulatedCrash):
        train(run_cfg(data, base / "crashed", crash_epoch=2))
    GlobalHydra.instance().clear()
    return base


@pytest.fixture
def copy_of(runs, tmp_path):
    def _copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(runs / name, target, symlinks=True)
        return target

    return _copy


def assert_refused(cfg, folder: Path, *fragments: str) -> None:
    before = snapshot(folder)
    with pytest.raises(UserError) as refused:
        train(cfg)
    message = str(refused.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert snapshot(folder) == before


def test_resume_of_finished_run_with_truncated_last_ckpt_is_refused_untouched(runs, copy_of):
    folder = copy_of("finished")
    last = folder / "checkpoints" / "last.ckpt"
    target = last.resolve()
    target.write_bytes(target.read_bytes()[:1000])
    assert checkpoint_problem(last) == "is truncated or not a checkpoint"
    cfg = run_cfg(runs / "data", folder, "trainer.max_epochs=2", "ckpt_path=last")
    assert_refused(cfg, folder, "holds a finished run", "overwrite=true", "src.eval")


def test_truncated_last_ckpt_falls_back_to_newest_readable_checkpoint(runs, copy_of, capsys):
    folder = copy_of("crashed")
    last = folder / "checkpoints" / "last.ckpt"
    last.unlink()  # a kill while last.ckpt was being written as a file
    last.write_bytes((folder / "checkpoints" / "epoch001.ckpt").read_bytes()[:5000])
    train(run_cfg(runs / "data", folder, "ckpt_path=last"))
    said = capsys.readouterr().err
    assert "is truncated or not a checkpoint; resuming from" in said and "epoch001.ckpt" in said
    assert_same_end(runs / "straight", folder)


def test_dangling_last_ckpt_resumes_from_newest_readable_not_from_epoch_0(runs, copy_of, capsys):
    folder = copy_of("crashed")
    last = folder / "checkpoints" / "last.ckpt"
    last.unlink()
    os.symlink("epoch007.ckpt", last)  # e.g. killed after the old target was deleted
    train(run_cfg(runs / "data", folder, "ckpt_path=last"))
    assert "is a dangling link (to epoch007.ckpt)" in capsys.readouterr().err
    assert_same_end(runs / "straight", folder)


def assert_same_end(straight: Path, resumed: Path) -> None:
    """Same weights as the uninterrupted run, and a metrics history as complete as its."""
    a, b = load_file(straight / "adapter.safetensors"), load_file(resumed / "adapter.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    rows = {p: list(csv.DictReader(open(p / "csv" / "metrics.csv"))) for p in (straight, resumed)}
    assert [r["epoch"] for r in rows[resumed]] == [r["epoch"] for r in rows[straight]]
    assert [r["step"] for r in rows[resumed]] == [r["step"] for r in rows[straight]]
    results = {p: json.loads((p / "results.json").read_text()) for p in (straight, resumed)}
    assert results[resumed]["metrics"].keys() == results[straight]["metrics"].keys()
    assert results[resumed]["status"] == "finished"


def test_no_readable_checkpoint_is_one_line_and_untouched(runs, copy_of):
    folder = copy_of("crashed")
    for ckpt in (folder / "checkpoints").glob("epoch*.ckpt"):
        ckpt.write_bytes(b"\0" * 100)
    cfg = run_cfg(runs / "data", folder, "ckpt_path=last")
    assert_refused(cfg, folder, "no readable checkpoint", "2 other checkpoint(s) are unreadable")


def test_resume_with_another_model_config_is_refused_with_a_diff(runs, copy_of):
    folder = copy_of("crashed")
    cfg = run_cfg(runs / "data", folder, "adapter.rank=8", "lam=0.5", "ckpt_path=last")
    assert_refused(cfg, folder, "adapter.rank 10 -> 8", "lam 1.0 -> 0.5", "config.yaml")


def test_new_run_into_a_finished_run_folder_is_refused_untouched(runs, copy_of):
    folder = copy_of("finished")
    assert_refused(run_cfg(runs / "data", folder), folder, "holds a finished run")


def test_new_run_into_an_unfinished_run_folder_is_refused_untouched(runs, copy_of):
    folder = copy_of("crashed")
    assert_refused(run_cfg(runs / "data", folder), folder, "unfinished", "ckpt_path=last")


def test_overwrite_replaces_a_finished_run(runs, copy_of):
    folder = copy_of("finished")
    (folder / "notes.txt").write_text("mine")
    # A SLURM requeue checkpoint of the earlier run: left, SLURM's Lightning would resume it.
    (folder / "hpc_ckpt_2.ckpt").write_bytes(b"PK")
    train(run_cfg(runs / "data", folder, "trainer.max_epochs=1", "overwrite=true"))
    results = json.loads((folder / "results.json").read_text())
    assert results["epochs"] == 1 and results["status"] == "finished"
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "epoch000.ckpt",
        "last.ckpt",
    ]
    assert (folder / "notes.txt").read_text() == "mine"  # only the run's own outputs go
    assert not (folder / "hpc_ckpt_2.ckpt").exists()


def test_a_finished_run_folder_holds_what_its_settings_declare_and_nothing_else(runs):
    folder = runs / "finished"
    cfg = run_cfg(runs / "data", folder, "trainer.max_epochs=2")
    assert {p.name for p in folder.iterdir()} == RunFolder.outputs(cfg)
    assert RunFolder.outputs(cfg) <= set(RUN_OUTPUTS)
    assert RunFolder(folder).last_checkpoint.is_symlink()  # Lightning's name is the table's
    provenance = json.loads(RunFolder(folder).results.read_text())["provenance"]
    assert provenance["execution"]["precision"] == "32-true"


def test_other_settings_declare_other_outputs_and_results_say_how_the_run_ran(runs, tmp_path):
    """TensorBoard instead of the CSV logger, no summary.csv, bfloat16 autocast, no test: the
    folder holds what those settings declare, and results.json's provenance says what ran."""
    folder = tmp_path / "other"
    overrides = ("logger=tensorboard", "callbacks.epoch_summary=null", "test=false")
    cfg = run_cfg(runs / "data", folder, *overrides, "trainer.max_epochs=1",
                  "trainer.precision=bf16-mixed")  # fmt: skip
    train(cfg)
    declared = RunFolder.outputs(cfg)
    assert {p.name for p in folder.iterdir()} == declared
    assert {RUN_FILES["tensorboard"].name, RUN_FILES["adapter"].name} <= declared
    assert not {RUN_FILES["csv"].name, RUN_FILES["summary"].name} & declared

    results = json.loads(RunFolder(folder).results.read_text())
    provenance = results["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert provenance["git_commit"] == head and isinstance(provenance["git_dirty"], bool)
    ran = provenance["execution"]
    assert ran["precision"] == "bf16-mixed"
    assert (ran["accelerator"], ran["devices"], ran["device"]) == ("cpu", 1, "cpu")
    assert (ran["strategy"], ran["world_size"]) == ("single_device", 1)
    assert ran["threads"] == torch.get_num_threads()
    assert provenance["packages"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert provenance["hardware"]["gpu_count"] == torch.cuda.device_count()
    assert results["weights"]["source"] == "random"  # where the backbone came from: one place


def test_config_changes_ignore_paths_and_speed_keys():
    saved = {
        "paths": {"root_dir": "/a"},
        "data": {"root": "/a", "num_workers": 2, "task": "x"},
        "adapter": {"rank": 4},
        "old_key": 1,
    }
    new = {
        "paths": {"root_dir": "/b"},
        "data": {"root": "/b", "num_workers": 0, "task": "x"},
        "adapter": {"rank": 4},
        "new_key": 2,
    }
    assert config_changes(saved, new) == []
    new["data"]["task"] = "y"
    assert config_changes(saved, new) == ["data.task 'x' -> 'y'"]


def fake_checkpoint(path: Path, mtime: int) -> None:
    """A zip archive like torch.save's (checkpoint_problem reads only the archive)."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"x" * 100)
    os.utime(path, (mtime, mtime))


def test_newest_readable_checkpoint_includes_slurm_requeue_checkpoints(tmp_path):
    from src.run.folder import choose_good_checkpoint

    fake_checkpoint(tmp_path / "checkpoints" / "epoch000.ckpt", 1000)
    os.symlink("epoch000.ckpt", tmp_path / "checkpoints" / "last.ckpt")
    assert choose_good_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    fake_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 2000)  # saved at the requeue signal, later
    assert choose_good_checkpoint(tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"PK\x03\x04 cut")  # killed while writing it
    assert choose_good_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_a_requeue_checkpoint_is_resumed_as_the_newest_checkpoint(tmp_path, capsys):
    """The usual SLURM requeue, before or after an epoch ended: nothing is broken, and the
    message says what every resume says. A broken last.ckpt is still reported."""
    from src.run.folder import choose_resume_checkpoint

    hpc, last = tmp_path / "hpc_ckpt_1.ckpt", tmp_path / "checkpoints" / "last.ckpt"
    requeued = (
        f"resuming from {hpc}, the newest checkpoint of this run folder (saved when SLURM asked "
        "the job to requeue)\n"
    )
    fake_checkpoint(hpc, 2000)  # the signal came before the first epoch ended
    assert choose_resume_checkpoint(tmp_path, started=True) == str(hpc)
    assert capsys.readouterr().err == requeued
    fake_checkpoint(tmp_path / "checkpoints" / "epoch000.ckpt", 1000)
    os.symlink("epoch000.ckpt", last)
    assert choose_resume_checkpoint(tmp_path, started=True) == str(hpc)
    assert capsys.readouterr().err == requeued
    (tmp_path / "checkpoints" / "epoch000.ckpt").unlink()  # last.ckpt dangles
    assert choose_resume_checkpoint(tmp_path, started=True) == str(hpc)
    assert capsys.readouterr().err == (
        f"{last} is a dangling link (to epoch000.ckpt); resuming from {hpc}, the newest "
        "readable checkpoint\n"
    )


def test_the_docs_list_every_entry_of_a_run_folder():
    text = (PROJECT_ROOT / "docs" / "run_folders.md").read_text()
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    listed = {item.split("/")[0] for row in rows for item in re.findall(r"`([^`]+)`", row)}
    assert {entry.name.replace("*", "<n>") for entry in RUN_FILES.values()} <= listed


def test_a_config_naming_an_unknown_run_folder_entry_is_one_line():
    from src.run.folder import run_file_name

    assert run_file_name("summary") == "summary.csv"
    with pytest.raises(UserError, match=r"no such run-folder entry; one of config, launches"):
        run_file_name("sumary")
