"""The warm process harness (tests/processes.py): a warm process is the process a cold start
would have been — same argv, cwd, environment, sys.path, signal mask, stdio, signals and exit
status, and for `src.train` the same output and the same trained bits."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import threading
import time

import pytest
from safetensors.torch import load_file

from src.data.synthetic import write_vtab_task
from tests import processes

PROBE = textwrap.dedent(
    """
    import json, os, signal, sys, tempfile
    print(json.dumps({
        "name": __name__, "spec": __spec__.name, "argv": sys.argv[1:], "cwd": os.getcwd(),
        "path0": sys.path[0], "on_path": os.environ["PACE_EXTRA"] in sys.path,
        "env": os.environ.get("PACE_PROBE"), "tmp": tempfile.gettempdir(),
        "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "read": sys.stdin.read(), "main_file": os.path.basename(sys.modules["__main__"].__file__),
        "tests_loaded": "tests" in sys.modules,
    }))
    print("to stderr", file=sys.stderr)
    if sys.argv[1:] == ["sleep"]:
        print("sleeping", flush=True)
        signal.pause()
    sys.exit(int(sys.argv[1]) if sys.argv[1:2] != ["sleep"] else 0)
    """
)


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "extra").mkdir()
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "PACE_PROBE": "seen",
        "PACE_EXTRA": str(tmp_path / "extra"),
        "PYTHONPATH": str(tmp_path / "extra"),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    return tmp_path, env


def test_a_warm_process_is_the_process_a_cold_start_makes(probe):
    cwd, env = probe
    seen = {}
    for cold in (True, False):
        proc = processes.start("probe", "3", cwd=cwd, env=env, stdin=subprocess.PIPE, cold=cold)
        assert isinstance(proc, subprocess.Popen) == cold
        out, err = proc.communicate("from stdin", timeout=120)
        assert proc.returncode == 3 and err == "to stderr\n"
        seen[cold] = json.loads(out)
    assert seen[False] == seen[True]
    assert seen[True]["read"] == "from stdin" and seen[True]["tmp"] == str(cwd / "tmp")
    assert seen[True]["name"] == "__main__" and seen[True]["spec"] == "probe"
    assert not seen[True]["tests_loaded"] and seen[True]["on_path"]


@pytest.mark.parametrize("cold", [True, False], ids=["cold", "warm"])
def test_a_warm_process_gets_its_own_signals(probe, cold):
    cwd, env = probe
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})  # inherited, as across exec
    try:
        proc = processes.start("probe", "sleep", cwd=cwd, env=env, cold=cold)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    assert proc.stdout.readline().startswith("{")
    assert proc.stdout.readline() == "sleeping\n"
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)
    polled = []  # a second thread polls while this one waits, as tests/test_slurm.py does
    poller = threading.Thread(target=lambda: polled.append(poll_until_done(proc)))
    poller.start()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    poller.join(timeout=60)
    assert proc.returncode == -signal.SIGTERM and polled == [-signal.SIGTERM]


def poll_until_done(proc) -> int:
    while proc.poll() is None:
        time.sleep(0.001)
    return proc.returncode


def test_an_environment_read_at_import_gets_a_cold_start(probe):
    cwd, env = probe
    assert isinstance(processes.start("probe", "0", cwd=cwd, env=env), processes.WarmProcess)
    for changed in ({"HF_HOME": str(cwd)}, {"PYTHONWARNINGS": "error"}):
        proc = processes.start("probe", "0", cwd=cwd, env={**env, **changed})
        assert isinstance(proc, subprocess.Popen), changed
        proc.communicate(timeout=120)
    proc = processes.start("probe", "0", cwd=cwd, env=env, python_flags=("-X", "importtime"))
    assert isinstance(proc, subprocess.Popen)
    proc.communicate(timeout=120)


def lines_without_timings(text: str) -> list[str]:
    """Output lines with what differs between any two runs (seconds, dates) masked."""
    text = re.sub(r"\d+(\.\d+)?\s?s\b|\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", "<t>", text)
    return [line.rstrip() for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_warm_training_run_prints_and_trains_what_a_cold_one_does(tmp_path):
    write_vtab_task(
        tmp_path / "data", "toy", num_classes=4, n_train=16, n_val=8, n_test=8, img_size=32
    )
    args = [
        "debug=tiny",
        f"data.root={tmp_path / 'data'}",
        "data.task=toy",
        "data.num_classes=4",
        "trainer.max_epochs=1",
        "cpu_threads=1",
        "deterministic=true",
    ]
    seen, folder = {}, tmp_path / "run"
    for cold in (True, False):  # the same folder, so the outputs name the same paths
        done = processes.run("src.train", *args, f"hydra.run.dir={folder}", cold=cold)
        assert done.returncode == 0, done.stderr[-3000:]
        seen[cold] = (
            lines_without_timings(done.stdout),
            lines_without_timings(done.stderr),
            load_file(folder / "adapter.safetensors"),
        )
        folder.rename(tmp_path / ("cold" if cold else "warm"))
    assert seen[False][0] == seen[True][0]  # stdout, config tree and Lightning's lines included
    assert seen[False][1] == seen[True][1]
    for key, tensor in seen[True][2].items():
        assert tensor.equal(seen[False][2][key]), key
