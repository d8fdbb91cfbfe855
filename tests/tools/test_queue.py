"""tools/queue.sh: a queue whose runs have all finished launches nothing."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_finished_queue_starts_no_run(tmp_path):
    jobs = tmp_path / "study.jobs"
    jobs.write_text("# name  overrides\nrun_a  pace=none\nrun_b  pace=pace sigma=1.5\n")
    out = tmp_path / "out"
    for name in ("run_a", "run_b"):
        (out / name).mkdir(parents=True)
        (out / name / "results.json").write_text("{}")
    done = subprocess.run(
        ["bash", "tools/queue.sh", "no_such_experiment", str(jobs), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # xargs without -r runs its command once on empty input: a run named "bash" with no overrides
    # (here it would fail at once on the unknown experiment, and say so on stdout).
    assert done.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["run_a", "run_b"]
