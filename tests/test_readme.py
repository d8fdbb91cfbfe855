"""The README's commands, run as a user types them.

Every shell command in the README's fenced ``bash`` blocks, and every make target in its table,
runs here as a real process in a sandbox folder that holds tiny VTAB-1k tasks under the real task
names (`python -m` commands start warm, tests/processes.py; make targets start theirs cold).
Commands keep every override the README gives; the test only appends what makes them small (a
tiny ViT at 32 px, one epoch, two batches). A command that no runner below understands fails the
test: a new README command needs a way to be checked.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.data.synthetic import write_vtab_task
from src.data.tables import VTAB_TASKS
from tests import processes

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Appended to every `src.train` command: the README's own overrides stay, only the size shrinks.
TINY = (
    "debug=tiny",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "extras.print_config=false",
)
# Every VTAB-1k task under its real name and class count (the README sweeps all 19).
FIXTURE_TASKS = VTAB_TASKS
# Make targets with their own tests, or that this very test is part of.
MAKE_COVERED_ELSEWHERE = {
    "test": "it is the command running this test",
    "test-fast": "a subset of `make test`, which is running this test",
    "bench": "tests/test_bench.py runs it on a tiny config",
    "demo-text": "tests/test_text_demo.py runs it on a tiny BERT in the MiniLM's place",
}
# Make targets that need the demo's assets (a Debian package and a PyPI wheel).
DEMO_TARGETS = ("demo-data", "backbone", "demo")
# The text demo's asset targets (PyPI wheels, installed by the targets when missing).
TEXT_TARGETS = ("text-data", "text-backbone")
PLACEHOLDER = re.compile(r"<[a-z_ ]+>")


def readme_commands() -> list[str]:
    """Shell commands of the README's ```bash blocks (continuations joined, comments dropped)."""
    commands, in_block, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = line.strip() in ("```bash", "```sh", "```shell") and not in_block
            continue
        if not in_block:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def readme_make_targets() -> list[str]:
    """Targets listed in the README's make-target table (`| `make X` | … |`)."""
    return re.findall(r"^\| `make ([a-z-]+)`", README.read_text(), flags=re.M)


def makefile_targets() -> list[str]:
    return re.findall(r"^([a-z][a-z-]*):.*##", (ROOT / "Makefile").read_text(), flags=re.M)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A user's project folder: data/vtab-1k/<task>/ for every VTAB-1k task, nothing else."""
    home = tmp_path_factory.mktemp("sandbox")
    for task, classes in FIXTURE_TASKS.items():
        write_vtab_task(
            home / "data", task, num_classes=classes, n_train=24, n_val=8, n_test=8, img_size=32
        )
    return home


def run(
    words: list[str], cwd: Path, timeout: int = 900, **extra_env: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **extra_env}
    env.pop("PROJECT_ROOT", None)
    if words[:2] == [sys.executable, "-m"]:  # warm: the libraries imported already
        proc = processes.run(words[2], *words[3:], cwd=cwd, env=env, timeout=timeout)
    else:
        proc = subprocess.run(
            words, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    assert proc.returncode == 0, (
        f"`{shlex.join(words)}` exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def newest(folder: Path) -> Path:
    folders = sorted(p for p in folder.iterdir() if p.is_dir())
    assert folders, f"nothing in {folder}"
    return folders[-1]


def fill_placeholders(words: list[str], sandbox: Path) -> list[str]:
    """`logs/train/runs/<time>` → the newest such folder the earlier commands made."""
    filled = []
    for word in words:
        if PLACEHOLDER.search(word):
            prefix = PLACEHOLDER.split(word)[0].split("=")[-1]
            found = newest(sandbox / prefix)
            word = word.replace(prefix + PLACEHOLDER.search(word).group(0), str(found))
        filled.append(word)
    return filled


def job_folders(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/results.json"))


def sweep_size(override: str) -> int:
    """Jobs a sweep override expands to: `a,b,c` → 3; `task=glob(vtab_*)` → matching options."""
    key, value = override.split("=", 1)
    glob = re.fullmatch(r"glob\((.*)\)", value)
    if glob:
        return len(list((ROOT / "conf" / key).glob(f"{glob.group(1)}.yaml")))
    return len(value.split(","))


def resume_placeholder(word: str, words: list[str], sandbox: Path, tiny) -> str:
    """`hydra.run.dir=logs/train/runs/<time>` → the folder of a run of the same command that a
    SIGTERM stopped in its second epoch, after its first epoch's checkpoint."""
    if not (word.startswith("hydra.run.dir=") and PLACEHOLDER.search(word)):
        return word
    folder = sandbox / "logs" / "train" / "runs" / "stopped-by-test"
    same = [w for w in words[3:] if w.split("=", 1)[0] not in ("hydra.run.dir", "ckpt_path")]
    args = [*same, *tiny, f"hydra.run.dir={folder}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with processes.start(
        "src.train", *args, cwd=sandbox, env=env, stderr=subprocess.STDOUT
    ) as proc:
        for line in proc.stdout:
            if line.startswith("epoch 1/2"):
                proc.send_signal(signal.SIGTERM)
                break
        output = proc.stdout.read()
    assert proc.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "ckpt_path=last" in output and not (folder / "results.json").exists()
    return f"hydra.run.dir={folder}"


def check_python_command(command: str, sandbox: Path, **env: str) -> None:
    words = shlex.split(command)
    assert Path(words[0]).name in ("python", "python3"), command
    module = words[2]
    tiny = TINY
    if "ckpt_path=last" in words:  # the README resumes a stopped run: stop one first
        # Two epochs of 32 one-image batches: long enough to stop in the second one.
        tiny = (*TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=null")
        tiny = (*tiny, "data.batch_size=1")
        words = [*words[:1], *(resume_placeholder(w, words, sandbox, tiny) for w in words[1:])]
    words = [sys.executable, *fill_placeholders(words[1:], sandbox)]
    logs = sandbox / "logs"
    if module == "src.train":
        started = time.time()
        # Hydra's parser takes overrides before its flags: append TINY before `-m`.
        flags = [w for w in words[3:] if w.startswith("-")]
        overrides = [w for w in words[3:] if not w.startswith("-")]
        proc = run([*words[:3], *overrides, *tiny, *flags], sandbox, **env)
        made = [p for p in logs.rglob("results.json") if p.stat().st_mtime >= started]
        if {"-m", "--multirun"} & set(words[3:]):
            sweep = newest(logs / "train" / "multiruns")
            expected = math.prod(sweep_size(w) for w in words[3:] if "=" in w)
            assert len(job_folders(sweep)) == expected, proc.stderr[-2000:]
        else:
            assert len(made) == 1, proc.stderr[-2000:]
        if "SLURM_CONF" not in env:  # under SLURM each job prints into its own log file
            assert "run folder:" in proc.stderr
    elif module == "src.eval":
        proc = run(words, sandbox)
        assert "test/acc" in proc.stdout + proc.stderr
    elif module == "src.data.check":
        proc = run(words, sandbox)
        assert "cifar" in proc.stdout
    elif module == "src.report":
        proc = run(words, sandbox)
        # every run below the folder is in a table: its test accuracy, as the report prints it
        for accuracy in run_accuracies(Path(words[3])):
            assert f"{accuracy:.2f}" in proc.stdout, (accuracy, proc.stdout[-3000:])
    elif module == "src.plots":
        started = time.time()
        run(words, sandbox)
        given = words[words.index("--out") + 1] if "--out" in words else None
        out = sandbox / given if given else Path(words[3]) / "diagnostics.png"
        assert out.is_file() and out.stat().st_mtime >= started, out
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        pytest.fail(f"README command `{command}`: tests/test_readme.py has no runner for {module}")


def run_accuracies(folder: Path) -> list[float]:
    """Test accuracy in % of every finished run below ``folder`` (single test set)."""
    found = []
    for path in folder.rglob("results.json"):
        metrics = json.loads(path.read_text()).get("metrics", {})
        if "test/acc" in metrics:
            found.append(100 * metrics["test/acc"])
    assert found, f"no finished run below {folder}"
    return found


def make(target: str, sandbox: Path, *variables: str) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    return run(["make", "-f", str(ROOT / "Makefile"), f"VENV={venv}", target, *variables], sandbox)


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands())
def test_readme_command(command, sandbox, request):
    words = shlex.split(command)
    if words[0] == "make":
        assert words[1] in readme_make_targets(), f"`{command}` is missing from the make table"
        pytest.skip(f"runs as test_make_target[{words[1]}]")
    elif any(w.startswith("hydra/launcher=slurm") for w in words):
        # Submitted to the one-node SLURM cluster this machine runs (tools/slurm/up.sh).
        check_python_command(command, sandbox, SLURM_CONF=request.getfixturevalue("slurm_conf"))
    else:
        check_python_command(command, sandbox)


def test_readme_lists_every_make_target():
    assert sorted(readme_make_targets()) == sorted(makefile_targets())


def test_readme_has_commands_to_check():
    commands = readme_commands()
    assert any(c.endswith(" -m") and "src.train" in c for c in commands), commands
    assert any("src.eval" in c for c in commands) and any("src.report" in c for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize(
    "target", [t for t in readme_make_targets() if t not in MAKE_COVERED_ELSEWHERE]
)
def test_make_target(target, sandbox):
    if target == "help":
        shown = make("help", sandbox).stdout
        assert all(f"make {t}" in shown for t in makefile_targets())
    elif target == "install":
        make("install", sandbox)
    elif target == "lint":
        make("lint", sandbox)
    elif target == "train":
        make("train", sandbox, "RUN_ARGS=" + " ".join(TINY[1:]))
        assert list((sandbox / "logs" / "train" / "runs").glob("*/results.json"))
    elif target == "check-data":
        assert "cifar" in make("check-data", sandbox).stdout
    elif target == "clean":
        (sandbox / "logs" / "stale").mkdir(parents=True, exist_ok=True)
        make("clean", sandbox)
        assert not (sandbox / "logs").exists() and (sandbox / "data").is_dir()
    elif target in DEMO_TARGETS:
        demo_target(target, sandbox)
    elif target in TEXT_TARGETS:
        text_target(target, sandbox)
    else:
        pytest.fail(f"make {target}: tests/test_readme.py has no check for it")


def text_target(target: str, sandbox: Path) -> None:
    """The text demo's asset targets, whole: real corpora, real models, their checks."""
    make(target, sandbox)
    if target == "text-data":
        assert (sandbox / "data" / "glue_data" / "TWEETS-k16-s0" / "train.tsv").is_file()
        assert (sandbox / "data" / "gsm8k" / "test.jsonl").is_file()
    else:
        for folder in ("minilm_l6", "smollm2_135m"):
            assert (sandbox / "checkpoints" / folder / "model.safetensors").is_file()


def demo_target(target: str, sandbox: Path) -> None:
    """The demo's targets, at the size of a test: real assets, two batches of real training."""
    if not Path("/usr/share/datasets/fashion-mnist").is_dir() and os.geteuid() != 0:
        pytest.skip("make demo-data installs Debian's dataset-fashion-mnist, which needs root")
    if target == "demo-data":
        make("demo-data", sandbox)
        assert (sandbox / "data" / "vtab-1k" / "fashion_mnist" / "train800val200.txt").is_file()
        fewshot = sandbox / "data" / "few-shot" / "fashion_mnist" / "annotations"
        assert (fewshot / "train_meta.list.num_shot_4.seed_0").is_file()  # what make demo trains on
    elif target == "backbone":
        make("backbone", sandbox)
        assert list((sandbox / "checkpoints").glob("*.safetensors"))
    else:
        demo_dir = sandbox / "logs" / "demo" / "readme"
        proc = make("demo", sandbox, f"DEMO_DIR={demo_dir}", "RUN_ARGS=" + " ".join(TINY[1:]))
        assert len(job_folders(demo_dir)) + len(job_folders(demo_dir / "fast")) == 3
        assert "PACE" in proc.stdout or "pace" in proc.stdout
