"""Adapter config schemas are torch-free: `--help` and config mistakes never wait for torch."""

import subprocess
import sys
from pathlib import Path

from src.adapters import ADAPTERS, SCHEMAS, make_config
from src.adapters.schemas import LoRAConfig

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "timm")


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "src.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def imported_modules(importtime_stderr: str) -> set[str]:
    """Top-level names of the modules that ``-X importtime`` reports as imported."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_lists_every_adapter_without_importing_torch():
    result = run_train("--help")
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "hydra" in modules  # the importtime report was read
    assert not modules & set(HEAVY)
    adapter_line = next(line for line in result.stdout.splitlines() if line.startswith("adapter:"))
    assert adapter_line.split(":", 1)[1].strip().split(", ") == sorted(SCHEMAS)
    assert "pace: fast, lazy, none, pace" in result.stdout


def test_unknown_adapter_key_is_refused_before_torch():
    result = run_train("adapter=lora", "adapter.nope=1")
    assert result.returncode != 0
    assert "error: unknown key 'adapter.nope'" in result.stderr
    assert not imported_modules(result.stderr) & set(HEAVY)


def test_every_method_is_bound_to_its_stored_schema():
    # A method registered without an entry in src/adapters/schemas.py would not compose
    # before torch is imported.
    assert set(ADAPTERS) == set(SCHEMAS)
    for name, method in ADAPTERS.items():
        assert method.config is SCHEMAS[name], name


def test_schema_validation_runs_without_the_implementation():
    config = LoRAConfig(name="lora", rank=4)
    config.validate()
    assert make_config("lora", rank=4) == config
