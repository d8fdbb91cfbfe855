"""Every bad input a user types, as a real command: exit status 2, exactly one ``error:`` line,
no traceback, and every file that existed before (data, finished runs) byte-identical after —
with no new files either (a refused launch leaves no run folder behind).

The table grows whenever a new mistake is found: add a row. Rows that build the model or read
a finished run are marked slow; the in-process tests in tests/test_run_folder.py and
tests/test_cli_validation.py cover the same rules in the fast suite.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from src.data.synthetic import write_vtab_task
from tests import processes
from tests.test_cli import assert_one_error_line
from tests.test_run_folder import snapshot

ROOT = Path(__file__).resolve().parents[1]
slow = pytest.mark.slow

# (entry, arguments, fragments of the error line). {data}, {tmp} and {<run>} are filled in.
TRAIN = "src.train"
EVAL = "src.eval"
CASES = [
    # values out of range or of the wrong type: one validation pass names each
    (TRAIN, "sigma=nan", ["sigma=nan must be a finite number >= 0"]),
    (TRAIN, "sigma=-0.5", ["sigma=-0.5 must be a finite number >= 0"]),
    (TRAIN, "lam=inf", ["lam=inf must be a finite number >= 0"]),
    (TRAIN, "sigma=abc", ["sigma='abc' must be a finite number"]),
    (TRAIN, "seed=abc", ["seed='abc' must be an integer or null"]),
    (TRAIN, "optim.lr=0", ["optim.lr=0 must be a finite number > 0"]),
    (TRAIN, "data.batch_size=0", ["data.batch_size=0 must be an integer >= 1"]),
    (TRAIN, "data.num_workers=-1", ["data.num_workers=-1 must be an integer >= 0"]),
    (TRAIN, "trainer.max_epochs=0", ["trainer.max_epochs=0 must be an integer >= 1"]),
    (TRAIN, "data.protocol=bogus", ["data.protocol='bogus' must be one of tune, final"]),
    (TRAIN, "data.num_classes=0", ["data.num_classes=0 must be an integer >= 2"]),
    (TRAIN, "data.img_size=30", ["data.img_size=30 must be a multiple", "patch size 16"]),
    (TRAIN, "sigma=-1 optim.lr=-1", ["sigma=-1", "optim.lr=-1"]),
    # mistakes Hydra finds while composing
    (TRAIN, "adapter=bogus", ["unknown adapter 'bogus'", "valid adapter options: adapter,"]),
    (TRAIN, "pace=bogus", ["unknown pace 'bogus'", "fast, lazy, none, pace"]),
    (TRAIN, "foo=1", ["unknown key 'foo'", "+foo=..."]),
    (TRAIN, "sigm=0.5", ["unknown key 'sigm'; did you mean sigma?"]),
    (TRAIN, "optim.lrr=1", ["did you mean optim.lr?"]),
    (TRAIN, "adapter.rank=abc", ["adapter.rank=abc", "could not be converted to Integer"]),
    (TRAIN, "sigma=[", ["cannot parse the override"]),
    (TRAIN, "+sigma=1", ["sigma exists already"]),
    # a key added with '+' that nothing reads: it would train with the default
    (TRAIN, "+sigam=0.1", ["+sigam=0.1 adds a key that nothing reads; did you mean sigma?"]),
    (TRAIN, "-m +sigam=0.1 sigma=0.1,0.2", ["+sigam=0.1 adds a key that nothing reads"]),
    pytest.param(TRAIN, "+trainer.max_epochs2=1", ["did you mean trainer.max_epochs?"], marks=slow),
    (TRAIN, "ckpt_path={tmp}/missing.ckpt", ["missing.ckpt does not exist"]),
    # run folders that hold a run: refused, untouched
    pytest.param(TRAIN, "hydra.run.dir={finished}", ["holds a finished run"], marks=slow),
    pytest.param(
        TRAIN, "hydra.run.dir={finished} ckpt_path=last", ["holds a finished run"], marks=slow
    ),
    pytest.param(
        TRAIN,
        "hydra.run.dir={finished} ckpt_path=last overwrite=true",
        ["give only one of them"],
        marks=slow,
    ),
    pytest.param(TRAIN, "hydra.run.dir={unfinished}", ["holds an unfinished run"], marks=slow),
    pytest.param(
        TRAIN,
        "hydra.run.dir={unfinished} ckpt_path=last adapter.rank=8",
        ["adapter.rank 10 -> 8", "config.yaml"],
        marks=slow,
    ),
    pytest.param(
        TRAIN,
        "hydra.run.dir={unreadable} ckpt_path=last trainer.max_epochs=2",
        ["no readable checkpoint", "last.ckpt is truncated or not a checkpoint"],
        marks=slow,
    ),
    # data and model inputs (these get as far as building the model)
    pytest.param(TRAIN, "data.task=not_a_task", ["unknown VTAB task 'not_a_task'"], marks=slow),
    pytest.param(TRAIN, "data.root={tmp}/nowhere", ["nowhere", "vtab-1k"], marks=slow),
    pytest.param(TRAIN, "+data.foo=1", ["+data.foo=1 adds a key that nothing reads"], marks=slow),
    pytest.param(TRAIN, "data.task=latin", ["not UTF-8 text (byte 0xe9)"], marks=slow),
    pytest.param(
        TRAIN, "data.task=corrupt data.num_workers=2", ["cannot decode image"], marks=slow
    ),
    # src.eval
    (EVAL, "", ["run_dir is required"]),
    (EVAL, "run_dir={tmp}/nowhere", ["is not a training run folder"]),
    (EVAL, "run_dir={finished} foo=1", ["unknown key 'foo'"]),
    pytest.param(EVAL, "run_dir={bad_adapter}", ["is not a readable safetensors file"], marks=slow),
    pytest.param(
        EVAL, "run_dir={finished} data.protocol=bogus", ["unknown VTAB protocol"], marks=slow
    ),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Data (a good task, a non-UTF-8 list, a corrupt image) and run folders built lazily."""
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "data"
    for task in ("toy", "latin", "corrupt"):
        write_vtab_task(data, task, num_classes=4, n_train=8, n_val=4, n_test=4, img_size=32)
    latin = data / "vtab-1k" / "latin" / "train800val200.txt"
    latin.write_bytes("caf\xe9.jpg 0\n".encode("latin-1") + latin.read_bytes())
    broken = next((data / "vtab-1k" / "corrupt" / "images" / "train800").glob("*.jpg"))
    broken.write_bytes(b"not a jpeg")
    return {"tmp": tmp, "data": data}


def finished_runs(workspace) -> dict[str, Path]:
    """A finished run and damaged copies of it, trained once per module (in-process: faster)."""
    if "finished" in workspace:
        return workspace
    from hydra.core.global_hydra import GlobalHydra

    from src.train import train
    from tests.conftest import compose_config

    tmp, data = workspace["tmp"], workspace["data"]
    finished = tmp / "finished"
    train(
        compose_config(
            [
                "debug=tiny",
                f"data.root={data}",
                "data.task=toy",
                "data.num_classes=4",
                "trainer.max_epochs=2",
                "callbacks.progress_bar=null",
                "extras.print_config=false",
            ],
            finished,
        )
    )
    GlobalHydra.instance().clear()
    runs = {"finished": finished}
    for name in ("unfinished", "unreadable", "bad_adapter"):
        runs[name] = tmp / name
        shutil.copytree(finished, runs[name], symlinks=True)
    for name in ("unfinished", "unreadable"):
        (runs[name] / "results.json").unlink()  # killed after its last checkpoint
    for ckpt in (runs["unreadable"] / "checkpoints").glob("epoch*.ckpt"):
        ckpt.write_bytes(ckpt.read_bytes()[:2000])
    adapter = runs["bad_adapter"] / "adapter.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:300])
    workspace.update(runs)
    return workspace


def command(entry: str, arguments: str, workspace) -> list[str]:
    """The arguments after ``python -m <entry>``."""
    words = arguments.split()
    if entry == TRAIN:
        words = [
            "debug=tiny",
            f"data.root={workspace['data']}",
            "data.task=toy",
            "data.num_classes=4",
            f"paths.log_dir={workspace['tmp']}/logs",
            "callbacks.progress_bar=null",
            *words,
        ]
        if "data.task=not_a_task" in words:
            words.remove("data.num_classes=4")
    return words


@pytest.mark.parametrize("entry, arguments, fragments", CASES)
def test_bad_input_is_one_line_and_touches_nothing(workspace, entry, arguments, fragments):
    if "{" in arguments.replace("{tmp}", "").replace("{data}", ""):
        finished_runs(workspace)
    arguments = arguments.format(**{k: v for k, v in workspace.items()})
    before = snapshot(workspace["tmp"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = processes.run(entry, *command(entry, arguments, workspace), timeout=600, env=env)
    assert_one_error_line(proc, *fragments)
    assert snapshot(workspace["tmp"]) == before


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` as a user meets it read-only, also when the tests run as root (as CI does),
    where a mode bit stops nothing: a read-only bind mount of it onto itself (a read-only
    filesystem, as on a cluster's shared storage), else the immutable attribute."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    for lock, unlock in (
        (["mount", "--bind", "-o", "ro", folder, folder], ["umount", folder]),
        (["chattr", "+i", folder], ["chattr", "-i", folder]),
    ):
        if shutil.which(lock[0]) and subprocess.run(lock, capture_output=True).returncode == 0:
            try:
                yield
            finally:
                subprocess.run(unlock, check=True)
            return
    pytest.skip("as root, neither a read-only bind mount nor chattr +i is possible here")


# Where a run cannot write, found before anything trains: {tmp} is the test's own folder.
UNWRITABLE = {
    # Hydra opens <run folder>/train.log before src.train runs
    "run folder": ("hydra.run.dir={tmp}/locked", "locked", ["locked/train.log", "writable"]),
    # found by the launch's checks, before the data is read or the model built
    "checkpoints": (
        "hydra.run.dir={tmp}/run",
        "run/checkpoints",
        ["run/checkpoints", "hydra.run.dir="],
    ),
    "checkpoint dirpath": (
        "callbacks.model_checkpoint.dirpath={tmp}/locked/ckpts",
        "locked",
        ["locked/ckpts", "callbacks.model_checkpoint.dirpath="],
    ),
    "path through a file": (
        "hydra.run.dir={tmp}/file/run",
        None,
        ["file is a file, not a folder"],
    ),
    "logger through a file": (
        "logger.csv.save_dir={tmp}/file",
        None,
        ["file/csv", "file is a file, not a folder", "logger.csv.save_dir="],
    ),
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_a_folder_the_run_cannot_write_is_one_line_before_training(workspace, tmp_path, case):
    arguments, locked, fragments = UNWRITABLE[case]
    (tmp_path / "file").write_text("a file where a folder was meant\n")
    if locked is not None:
        (tmp_path / locked).mkdir(parents=True)
    lock = read_only(tmp_path / locked) if locked else contextlib.nullcontext()
    with lock:
        before = snapshot(workspace["tmp"])
        proc = processes.run(
            TRAIN, *command(TRAIN, arguments.format(tmp=tmp_path), workspace), timeout=600
        )
    assert_one_error_line(proc, *fragments)
    assert "decoded" not in proc.stderr  # stopped before the data (and training) started
    assert snapshot(workspace["tmp"]) == before
