"""The command line: bad input ends in one `error:` line and a non-zero exit, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from src.cli.entry import report_user_errors
from src.data.synthetic import write_vtab_task
from src.errors import UserError
from src.report import main as report_main

ROOT = Path(__file__).resolve().parents[1]


def run_train(tmp_path, *overrides):
    cmd = [
        sys.executable,
        "-m",
        "src.train",
        "debug=tiny",
        f"paths.log_dir={tmp_path}/logs",
        "callbacks.progress_bar=null",
        *overrides,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def assert_one_error_line(proc, *fragments):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def error_line(capsys, main, argv: list[str]) -> str:
    """Run a command's ``main`` in-process: it must end with exit status 2 and print exactly one
    line, ``error: ...``, on stderr. Returns that line without the prefix."""
    capsys.readouterr()  # what came before is not the command's
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.removeprefix("error: ").rstrip("\n")


def test_the_frame_ends_a_user_error_in_one_line_and_lets_a_bug_through(capsys):
    @report_user_errors
    def command(argv):
        if argv == ["user"]:
            raise UserError("it failed;\n  pass less")
        if argv == ["wrapped"]:  # as Hydra's instantiate wraps what a target raises
            raise RuntimeError("instantiation failed") from UserError("bad value; fix it")
        if argv == ["bug"]:
            raise KeyError("a programming error")
        return 7

    assert command([]) == 7
    assert error_line(capsys, command, ["user"]) == "it failed; pass less"
    assert error_line(capsys, command, ["wrapped"]) == "bad value; fix it"
    with pytest.raises(KeyError):
        command(["bug"])


def test_missing_data_root_is_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    proc = run_train(tmp_path, f"data.root={missing}", "data.task=cifar")
    assert_one_error_line(proc, str(missing), "vtab-1k")


def test_negative_sigma_is_one_line(tmp_path):
    write_vtab_task(tmp_path, "toy", num_classes=4, n_train=4, n_val=4, n_test=4)
    proc = run_train(
        tmp_path, f"data.root={tmp_path}", "data.task=toy", "data.num_classes=4", "sigma=-0.5"
    )
    assert_one_error_line(proc, "sigma=-0.5 must be a finite number >= 0")


def test_report_summarises_seeds(tmp_path, capsys):
    import json

    for seed, acc in [(1, 0.80), (2, 0.90)]:
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "results.json").write_text(
            json.dumps(
                {
                    "task": "t",
                    "protocol": "final",
                    "pace": "pace",
                    "sigma": 0.5,
                    "lam": 1.0,
                    "adapter": "lora_add",
                    "rank": 4,
                    "lr": 0.01,
                    "seed": seed,
                    "epochs": 2,
                    "fit_seconds": 10.0,
                    "peak_rss_mb": 100.0,
                    "params": {"trainable": 1234},
                    "metrics": {"test/acc": acc},
                }
            )
        )
    report_main([str(tmp_path)])
    out = capsys.readouterr().out
    row = "| PACE σ=0.5 λ=1.0 | t | 85.00 ± 7.07 | 2 | 5 | 100 | 1,234 |"
    assert row in out


def test_report_without_runs_is_an_error(tmp_path, capsys):
    assert error_line(capsys, report_main, [str(tmp_path)]).startswith("no results.json")


@pytest.mark.parametrize("entry", ["src.train", "src.eval"])
def test_help_starts_with_usage_and_survives_a_closed_pipe(entry):
    proc = subprocess.run(
        [sys.executable, "-m", entry, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"python -m {entry} — ")
    assert "== Usage ==" in proc.stdout
    if entry == "src.train":
        assert "\ndata: domain, fewshot, fgvc, glue, gsm8k, vtab\n" in proc.stdout  # from Hydra
        assert "\nsigma: 0.5\n" not in proc.stdout  # the config dump is `--cfg job`'s job
    # `--help | true`: the reader is gone before Python has started writing.
    piped = subprocess.run(
        f"{sys.executable} -m {entry} --help | true; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert piped.stderr == "" and piped.returncode == 141, piped.stderr[-2000:]
