"""`make bench` / `python -m src.bench` on a tiny config: the files it writes and what they hold
(timings themselves are never asserted)."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src import bench
from src.pace import MODES
from tests.test_adapter_configs import HEAVY, imported_modules
from tests.test_cli import error_line

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--backbone", "vit_tiny_patch16_224", "--img-size", "32", "--batch", "4",
    "--adapters", "lora_mul_vpt_add,lora_add", "--modes", "none,pace,lazy,fast",
    "--steps", "2", "--warmup", "1", "--threads", "1", "--loader-images", "8", "--workers", "0",
]  # fmt: skip


def check_outputs(out: Path, adapters: list[str], modes: list[str], memory: bool) -> dict:
    result = json.loads((out / "bench.json").read_text())
    assert result["machine"]["torch"] == torch.__version__
    assert result["machine"]["threads"] == 1 and result["machine"]["cpu"]
    main_rows = [r for r in result["rows"] if not r["plain"] and not r["grad_norm"]]
    assert [(r["adapter"], r["mode"]) for r in main_rows] == [
        (a, m) for a in adapters for m in modes
    ]
    baseline = {r["adapter"]: r for r in main_rows if r["mode"] == "none"}
    for row in result["rows"]:
        assert len(row["steps_s"]) == result["settings"]["steps"]
        assert row["step_s"] == pytest.approx(statistics.median(row["steps_s"]))
        assert row["images_per_s"] == pytest.approx(4 / row["step_s"])
        # every ratio is against the same adapter's `none` row, measured in this run
        base = baseline[row["adapter"]]
        assert row["time_ratio"] == pytest.approx(row["step_s"] / base["step_s"])
        if not row["grad_norm"]:
            assert (row["memory_added_mb"] is not None) == memory
        if memory and not row["grad_norm"] and base["memory_added_mb"]:
            mem_ratio = row["memory_added_mb"] / base["memory_added_mb"]
            assert row["memory_ratio"] == pytest.approx(mem_ratio)
    table = (out / "bench.md").read_text()
    for row in main_rows:  # the paper's figure is printed beside the measured one
        cells = [c.strip() for c in _table_row(table, row["adapter"], row["label"]).split("|")]
        assert f"{row['time_ratio']:.2f}" in cells and f"{row['paper_time_ratio']:.2f}" in cells
    assert set(result["eval_images_per_s"]) == set(adapters)
    # Where the bench's own time went: its parts add up to its wall time.
    phases = result["phases_s"]
    assert list(phases)[:3] == ["build", "timed rounds", "eval"]
    assert ("memory" in phases) == memory
    assert sum(phases.values()) == pytest.approx(result["wall_s"], rel=0.05, abs=1.0)
    assert table.count("\n| `") == len(result["rows"])
    assert "timed rounds" in table
    assert "| adapter | mode | step (s) |" in table
    return result


def _table_row(table: str, adapter: str, label: str) -> str:
    rows = [r for r in table.splitlines() if r.startswith(f"| `{adapter}` | {label} |")]
    assert len(rows) == 1, (adapter, label, table)
    return rows[0]


def test_bench_writes_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    assert bench.main([*TINY, "--no-memory", "--plain", "--out", str(out)]) == 0
    result = check_outputs(out, ["lora_mul_vpt_add", "lora_add"], list(MODES), memory=False)
    labels = [(r["adapter"], r["label"]) for r in result["rows"]]
    assert ("lora_add", "fast (plain)") in labels
    assert ("lora_mul_vpt_add", "none + grad_norm") in labels
    assert result["loader"]["images"] == 8
    assert "train/grad_norm on a `none` step" in (out / "bench.md").read_text()


def test_bench_runs_every_mode_under_bf16_autocast(tmp_path):
    # The same table under Lightning's bf16-mixed: every step (and the eval pass) in autocast.
    out = tmp_path / "bench"
    args = [*TINY, "--precision", "bf16-mixed", "--no-memory", "--no-grad-norm", "--out", str(out)]
    assert bench.main(args) == 0
    result = check_outputs(out, ["lora_mul_vpt_add", "lora_add"], list(MODES), memory=False)
    assert result["settings"]["precision"] == "bf16-mixed"
    assert "precision bf16-mixed (bfloat16 autocast" in (out / "bench.md").read_text()
    training = bench.TrainingCase(
        bench.parse_args(args), bench.Case("lora_mul_vpt_add", "pace"), torch.device("cpu")
    )
    logits = []
    training.model.get_classifier().register_forward_hook(lambda m, a, out: logits.append(out))
    training.steps(1)
    assert logits[0].dtype == torch.bfloat16


def test_help_names_the_modes_without_importing_torch():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "src.bench", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "src" in modules and not modules & set(HEAVY)
    assert "subset of " + ", ".join(MODES) in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp8"], "unknown --precision 'fp8'"),
        (["--precision", "16-mixed", "--device", "cpu"], "needs a GPU"),
        (["--modes", "pace"], "--modes must include none"),
        (["--adapters", "lora_nope"], "unknown adapter 'lora_nope'"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--settle", "-1"], "--settle must be >= 0"),
        (["--memory-jobs", "-1"], "--memory-jobs must be >= 0"),
    ],
)
def test_bad_options_are_one_line_errors(args, message, tmp_path, capsys):
    assert message in error_line(capsys, bench.main, [*TINY, *args, "--out", str(tmp_path)])


@pytest.mark.slow
def test_make_bench_measures_memory_in_fresh_processes(tmp_path):
    out = tmp_path / "bench"
    args = [*TINY[:6], "--adapters", "lora_add", "--modes", "none,fast", *TINY[10:]]
    subprocess.run(
        ["make", "-f", str(ROOT / "Makefile"), f"VENV={sys.prefix}", "bench",
         "BENCH_ARGS=" + " ".join([*args, "--no-grad-norm", "--out", str(out)])],
        cwd=tmp_path, check=True, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's src, whatever venv
    )  # fmt: skip
    result = check_outputs(out, ["lora_add"], ["none", "fast"], memory=True)
    assert all(r["memory_added_mb"] > 0 for r in result["rows"])


def test_every_mode_is_measured_over_the_same_steps(monkeypatch):
    # Lazy's cycle (a PACE step, then a single pass) and one step that creates the optimiser
    # state: every mode runs them, so no mode's peak covers more steps than another's.
    args = bench.parse_args([*TINY, "--interval", "2"])
    counts = {}
    steps = bench.TrainingCase.steps

    def counted(training, count):
        counts[training.case.mode] = count
        steps(training, count)

    monkeypatch.setattr(bench.TrainingCase, "steps", counted)
    for mode in MODES:
        assert isinstance(bench.measure_memory(args, bench.Case("lora_add", mode)), int)
    assert counts == {mode: 3 for mode in MODES}


@pytest.mark.parametrize("pinned", [True, False])
def test_memory_subprocess_pins_the_mmap_threshold(monkeypatch, pinned):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    seen = {}

    def fake_run(command, **kwargs):
        seen.update(kwargs["env"])
        return subprocess.CompletedProcess(command, 0, stdout="123\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    args = bench.parse_args([*TINY, *([] if pinned else ["--no-pinned-malloc"])])
    assert bench.memory_in_subprocess(args, bench.Case("lora_add", "none")) == 123
    assert seen.get("MALLOC_MMAP_THRESHOLD_") == ("131072" if pinned else None)
    assert seen["PATH"] == os.environ["PATH"]  # the rest of the environment is passed on


@pytest.mark.parametrize(("cpus", "jobs", "threads"), [(2, 0, 1), (2, 1, 2), (4, 2, 2), (1, 2, 1)])
def test_memory_subprocesses_side_by_side_split_the_cores(monkeypatch, cpus, jobs, threads):
    # Two processes with all the cores each would make every OpenMP barrier wait on the other.
    seen = []

    def fake_run(command, **kwargs):
        payload = json.loads(command[-1])
        seen.append(payload["args"]["threads"])
        mode = payload["case"]["mode"]
        return subprocess.CompletedProcess(command, 0, stdout=f"{len(mode)}\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr("src.run.threads.allowed_cpus", lambda: cpus)
    args = bench.parse_args([*TINY, "--threads", "0", "--memory-jobs", str(jobs)])
    cases = [bench.Case("lora_add", m) for m in MODES]
    measured = bench.measure_memory_of(args, cases, torch.device("cpu"))
    assert measured == {c: len(c.mode) for c in cases}  # each result with its own case
    assert seen == [threads] * len(cases)
