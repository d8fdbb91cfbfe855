"""Plots group runs like the report: a σ sweep is three lines, seeds are averaged."""

import json

import pytest
from PIL import Image

from src.plots import collect, main, mean_curve, shot_curves, sweep_grids

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder, mode, grad_norms, sigma=0.5, lam=1.0, seed=1, protocol="final", acc=0.5, summary=True
):
    folder.mkdir(parents=True)
    results = {
        "pace": mode,
        "sigma": sigma,
        "lam": lam,
        "seed": seed,
        "protocol": protocol,
        "epochs": len(grad_norms),
        "metrics": {"val/acc": acc, "test/acc": acc},
    }
    (folder / "results.json").write_text(json.dumps(results))
    if summary:  # one row per epoch, as the EpochSummary callback writes
        lines = ["epoch,step,lr,seconds,train/grad_norm,val/fp_distance"]
        lines += [f"{e},{e * 10},0.1,1.0,{g},{g * 10}" for e, g in enumerate(grad_norms)]
        (folder / "summary.csv").write_text("\n".join(lines) + "\n")
    else:  # Lightning's CSV logger only
        (folder / "csv").mkdir()
        lines = ["epoch,step,train/grad_norm,val/fp_distance"]
        lines += [f"0,{step},{g}," for step, g in enumerate(grad_norms)]
        (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_a_sigma_sweep_is_one_line_per_sigma_and_seeds_are_averaged(tmp_path):
    write_run(tmp_path / "a", "none", [4.0, 2.0], seed=1)
    write_run(tmp_path / "b", "none", [2.0, 0.0], seed=2)
    for sigma in (0.1, 0.5, 1.0):
        write_run(tmp_path / f"p{sigma}", "pace", [sigma, sigma], sigma=sigma)
    by_label, xlabel = collect([tmp_path])
    assert xlabel == "epoch"
    assert sorted(by_label) == [
        "PACE σ=0.1 λ=1.0",
        "PACE σ=0.5 λ=1.0",
        "PACE σ=1.0 λ=1.0",
        "baseline",
    ]
    assert mean_curve([r["train/grad_norm"] for r in by_label["baseline"]]) == ([0, 1], [3.0, 1.0])
    assert mean_curve([r["val/fp_distance"] for r in by_label["PACE σ=1.0 λ=1.0"]]) == (
        [0, 1],
        [10.0, 10.0],
    )


def test_metrics_csv_when_there_is_no_summary(tmp_path):
    write_run(tmp_path / "a", "none", [3.0, 2.0, 1.0], summary=False)
    by_label, xlabel = collect([tmp_path])
    assert xlabel == "training step"
    assert mean_curve([r["train/grad_norm"] for r in by_label["baseline"]]) == (
        [0, 1, 2],
        [3.0, 2.0, 1.0],
    )


def test_main_writes_diagnostics_png(tmp_path):
    write_run(tmp_path / "runs" / "a", "none", [3.0, 2.0, 1.0])
    write_run(tmp_path / "runs" / "b", "pace", [2.0, 1.5, 1.0])
    out = tmp_path / "plot.png"
    main([str(tmp_path / "runs"), "--out", str(out)])
    assert out.read_bytes()[:8] == PNG


def test_heatmap_of_a_tune_sweep(tmp_path):
    for sigma in (0.5, 1.0):
        for lam in (0.1, 1.0):
            for seed in (1, 2):
                acc = (sigma + lam + seed / 10) / 10
                write_run(
                    tmp_path / f"{sigma}_{lam}_{seed}",
                    "pace",
                    [1.0],
                    sigma=sigma,
                    lam=lam,
                    seed=seed,
                    protocol="tune",
                    acc=acc,
                )
    write_run(tmp_path / "base", "none", [1.0], protocol="tune")  # not on the grid
    (grid,) = sweep_grids([tmp_path]).values()
    assert sorted(grid) == [(0.5, 0.1), (0.5, 1.0), (1.0, 0.1), (1.0, 1.0)]
    assert grid[1.0, 0.1] == pytest.approx([12.0, 13.0])  # (σ + λ + seed / 10) / 10, in %
    out = tmp_path / "heat.png"
    main([str(tmp_path), "--heatmap", str(out)])
    assert out.read_bytes()[:8] == PNG and Image.open(out).size[0] > 100


def test_heatmap_refuses_final_runs(tmp_path, capsys):
    write_run(tmp_path / "a", "pace", [1.0], protocol="final")
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--heatmap", str(tmp_path / "h.png")])
    assert stop.value.code == 2
    assert "build it from data.protocol=tune runs only" in capsys.readouterr().err


def write_fewshot_run(folder, mode, shots, split_seed, acc):
    folder.mkdir(parents=True)
    config = {"data": {"task": "fashion_mnist", "shots": shots, "split_seed": split_seed,
                       "protocol": "final"},
              "pace": {"mode": mode, "sigma": 0.5, "lam": 1.0}, "seed": 42}  # fmt: skip
    (folder / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    results = {"epochs": 1, "metrics": {"test/acc": acc}}
    (folder / "results.json").write_text(json.dumps(results))


def test_accuracy_against_shots_averages_split_seeds(tmp_path):
    for mode, gain in (("none", 0.0), ("pace", 0.05)):
        for shots in (1, 4):
            for split_seed in (0, 1, 2):
                acc = shots / 10 + gain + split_seed / 100
                write_fewshot_run(
                    tmp_path / f"{mode}_{shots}_{split_seed}", mode, shots, split_seed, acc
                )
    curves = shot_curves([tmp_path])
    assert sorted(curves) == ["PACE σ=0.5 λ=1.0", "baseline"]
    assert sorted(curves["baseline"]) == [1, 4]
    assert curves["PACE σ=0.5 λ=1.0"][4] == pytest.approx([45.0, 46.0, 47.0])
    out = tmp_path / "shots.png"
    main([str(tmp_path), "--shots", str(out)])
    assert out.read_bytes()[:8] == PNG
    assert not (tmp_path / "diagnostics.png").exists()  # --shots alone draws only that
