"""The diagnostics plot reads run folders and averages seeds step by step."""

import json

from src.plots import collect, main, mean_curve


def write_run(folder, mode, grad_norms):
    (folder / "csv").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"pace": mode}))
    lines = ["epoch,step,train/grad_norm,val/fp_distance"]
    lines += [f"0,{step},{g}," for step, g in enumerate(grad_norms)]
    lines += [f"0,{len(grad_norms) - 1},,{sum(grad_norms)}"]
    (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_curves_are_averaged_over_seeds_per_method(tmp_path):
    write_run(tmp_path / "a", "none", [4.0, 2.0])
    write_run(tmp_path / "b", "none", [2.0, 0.0])
    write_run(tmp_path / "c", "pace", [1.0, 1.0])
    by_method = collect([tmp_path])
    assert sorted(by_method) == ["none", "pace"]
    steps, values = mean_curve([run["train/grad_norm"] for run in by_method["none"]])
    assert (steps, values) == ([0, 1], [3.0, 1.0])
    assert mean_curve([run["val/fp_distance"] for run in by_method["none"]]) == ([1], [4.0])


def test_main_writes_a_png(tmp_path):
    write_run(tmp_path / "runs" / "a", "none", [3.0, 2.0, 1.0])
    write_run(tmp_path / "runs" / "b", "pace", [2.0, 1.5, 1.0])
    out = tmp_path / "plot.png"
    main([str(tmp_path / "runs"), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
