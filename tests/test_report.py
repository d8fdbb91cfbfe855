"""src.report on hand-made run folders: results.json + resolved config.yaml, as src.train writes."""

from __future__ import annotations

import csv
import json

import pytest
from omegaconf import OmegaConf

from src.data import DATAMODULES
from src.data.tables import VTAB_TASKS
from src.report import BUILDERS, PAPER_VTAB, build_tables, main, render
from src.runs import labels_for, load_runs

TARGETS = {
    "vtab": "src.data.VTABDataModule",
    "fgvc": "src.data.FGVCDataModule",
    "fewshot": "src.data.FewShotDataModule",
    "domain": "src.data.DomainDataModule",
}


def test_every_benchmark_has_its_table():
    assert set(BUILDERS) == {*DATAMODULES, "other"}


def write_run(
    folder,
    task,
    metrics,
    seed=1,
    benchmark="vtab",
    protocol="final",
    epochs=300,
    max_epochs=300,
    mode="pace",
    weights=None,
    **config,
):
    folder.mkdir(parents=True)
    tree = {
        "seed": seed,
        "sigma": 1.2,
        "lam": 1.0,
        "paths": {"output_dir": str(folder)},
        "data": {
            "_target_": TARGETS[benchmark],
            "task": task,
            "protocol": protocol,
            "root": "/somewhere",
            "num_workers": 2,
            "img_size": 224,
        },
        "backbone": {"name": "vit_base_patch16_224"},
        "adapter": {"name": "lora_mul_vpt_add", "rank": 10},
        "pace": {"mode": mode, "sigma": 1.2, "lam": 1.0},
        "optim": {"lr": 1e-3, "weight_decay": 1e-4},
        "trainer": {"max_epochs": max_epochs},
    }
    for key, value in config.items():
        OmegaConf.update(tree_cfg := OmegaConf.create(tree), key.replace("__", "."), value)
        tree = OmegaConf.to_container(tree_cfg)
    OmegaConf.save(OmegaConf.create(tree), folder / "config.yaml")
    results = {
        "task": task,
        "protocol": protocol,
        "seed": seed,
        "epochs": epochs,
        "fit_seconds": 10.0,
        "metrics": metrics,
    }
    if weights is not None:  # what src.train records about the weights the run started from
        results["weights"] = {"source": weights}
    (folder / "results.json").write_text(json.dumps(results))


def recipe(task):
    """The paper recipe's values for a VTAB task, so the runs below match it."""
    cfg = OmegaConf.load(f"conf/task/vtab_{task}.yaml")
    adapter = next(v for d in cfg.defaults for k, v in d.items() if k == "override /adapter")
    return {
        "adapter__name": adapter,
        "adapter__rank": cfg.paper_rank,
        "optim__lr": cfg.optim.lr,
        "optim__weight_decay": cfg.optim.weight_decay,
    }


def vtab_sweep(root, values, skip=()):
    for task, value in zip(VTAB_TASKS, values, strict=True):
        if task in skip:
            continue
        for seed, delta in ((1, -0.2), (2, 0.2)):  # mean = value, std = 0.28
            acc = (value + delta) / 100
            write_run(root / f"{task}_{seed}", task, {"test/acc": acc}, seed=seed, **recipe(task))


def row(markdown: str, label: str) -> list[str]:
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_vtab_group_means_and_both_vtab_means(tmp_path, capsys):
    vtab_sweep(tmp_path, PAPER_VTAB["+PACE"])
    main([str(tmp_path), "--csv", str(tmp_path / "out.csv")])
    out = capsys.readouterr().out
    assert "VTAB-1k — final protocol: test accuracy (%) at the last epoch" in out
    ours = row(out, "PACE σ=1.2 λ=1.0")
    assert ours[0] == "79.00 ± 0.28" and ours[18] == "44.80 ± 0.28"
    # Natural, Specialized, Structured, mean of group means, mean of 19 tasks.
    assert ours[19:] == ["84.33", "87.55", "65.14", "79.01", "76.93"]
    assert row(out, "paper: +PACE")[19:] == ["84.33", "87.55", "65.14", "79.01", "76.93"]
    assert row(out, "paper: baseline")[19:] == ["82.41", "85.00", "61.80", "76.40", "74.28"]
    header = next(x for x in out.splitlines() if x.startswith("| configuration"))
    assert "| mean of group means | mean of 19 tasks |" in header
    records = list(csv.DictReader(open(tmp_path / "out.csv")))
    cifar = next(r for r in records if r["column"] == "cifar" and r["configuration"] != "")
    assert float(cifar["mean"]) == pytest.approx(79.0) and cifar["n"] == "2"


def test_missing_task_is_reported_not_averaged(tmp_path, capsys):
    vtab_sweep(tmp_path, PAPER_VTAB["+PACE"], skip=("svhn",))
    main([str(tmp_path)])
    ours = row(capsys.readouterr().out, "PACE σ=1.2 λ=1.0")
    assert ours[list(VTAB_TASKS).index("svhn")] == "missing"
    assert ours[19:] == ["—", "87.55", "65.14", "—", "—"]


def test_runs_differing_in_anything_but_seed_are_not_averaged(tmp_path):
    write_run(tmp_path / "a1", "toy", {"test/acc": 0.5}, seed=1)
    write_run(tmp_path / "a2", "toy", {"test/acc": 0.7}, seed=2, paths__output_dir="/else")
    write_run(tmp_path / "b", "toy", {"test/acc": 0.9}, seed=1, backbone__name="vit_small")
    write_run(tmp_path / "c", "toy", {"test/acc": 0.1}, seed=1, data__img_size=112)
    (table,), _ = build_tables(load_runs([tmp_path]))
    cells = {label: cells[1] for label, cells in table.rows}
    assert sorted(cells.values()) == ["10.00", "60.00 ± 14.14", "90.00"]
    assert any("backbone.name=vit_small" in label for label in cells)


def test_a_deviation_from_the_recipe_is_its_own_row(tmp_path, capsys):
    write_run(tmp_path / "r", "cifar", {"test/acc": 0.8}, **recipe("cifar"))
    write_run(tmp_path / "d", "dtd", {"test/acc": 0.7}, **recipe("dtd"))
    write_run(tmp_path / "x", "cifar", {"test/acc": 0.6}, **{**recipe("cifar"), "optim__lr": 0.5})
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert row(out, "PACE σ=1.2 λ=1.0 optim.lr=recipe")[:3] == ["80.00", "missing", "70.00"]
    assert row(out, "PACE σ=1.2 λ=1.0 optim.lr=0.5")[:3] == ["60.00", "missing", "missing"]


def test_protocol_guard(tmp_path, capsys):
    write_run(
        tmp_path / "tune",
        "cifar",
        {"val/acc": 0.9, "test/acc": 0.1},
        protocol="tune",
        **recipe("cifar"),
    )
    write_run(tmp_path / "early", "cifar", {"test/acc": 0.99}, epochs=120, **recipe("cifar"))
    write_run(tmp_path / "done", "cifar", {"test/acc": 0.8}, **recipe("cifar"))
    main([str(tmp_path)])
    out = capsys.readouterr().out
    tables = out.split("### ")[1:]
    assert tables[0].startswith("VTAB-1k — final protocol")
    assert row(tables[0], "PACE σ=1.2 λ=1.0")[0] == "80.00"  # not 99: that run stopped early
    assert tables[1].startswith("VTAB-1k — TUNE protocol")
    assert "not a reportable result" in tables[1]
    assert row(tables[1], "PACE σ=1.2 λ=1.0")[0] == "90.00"  # val/acc, never test/acc
    assert "Skipped 1 run(s) that stopped before trainer.max_epochs" in out
    assert str(tmp_path / "early") in out


def test_fewshot_averages_split_seeds_per_shots(tmp_path, capsys):
    for shots, base in ((1, 40.0), (16, 80.0)):
        for split_seed, delta in ((0, -1.0), (1, 1.0)):
            write_run(
                tmp_path / f"{shots}_{split_seed}",
                "fashion_mnist",
                {"test/acc": (base + delta) / 100},
                benchmark="fewshot",
                max_epochs=100,
                epochs=100,
                data__shots=shots,
                data__split_seed=split_seed,
            )
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "Few-shot — final protocol" in out
    assert row(out, "PACE σ=1.2 λ=1.0 · fashion_mnist") == [
        "40.00 ± 1.41",
        "missing",
        "missing",
        "missing",
        "80.00 ± 1.41",
    ]
    assert "mean of 5" not in out and "paper:" not in out  # a custom task alone
    write_run(
        tmp_path / "pets",
        "oxford-pets",
        {"test/acc": 0.5},
        benchmark="fewshot",
        max_epochs=100,
        epochs=100,
        data__shots=1,
        data__split_seed=0,
    )
    main([str(tmp_path)])
    out = capsys.readouterr().out
    means = [line for line in out.splitlines() if line.startswith("| PACE") and "mean of 5" in line]
    assert means and all(line.count("| — ") == 5 for line in means)  # four of the five missing
    assert row(out, "paper: +PACE · mean of 5") == ["46.2", "55.3", "63.9", "73.9", "81.9"]


def test_domain_table_has_each_test_set_and_the_mean(tmp_path, capsys):
    metrics = {
        "test/acc/imagenet": 0.79,
        "test/acc/v2": 0.694,
        "test/acc/sketch": 0.318,
        "test/acc/a": 0.163,
        "test/acc/r": 0.352,
    }
    write_run(tmp_path / "d", "imagenet", metrics, benchmark="domain", max_epochs=100, epochs=100)
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "logits restricted to their 200 classes" in out
    assert row(out, "PACE σ=1.2 λ=1.0") == ["79.00", "69.40", "31.80", "16.30", "35.20", "46.34"]
    assert row(out, "paper: +PACE")[-1] == "46.30" and row(out, "paper: baseline")[-1] == "44.80"


def test_no_runs_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: no results.json")
    assert render([], []) == ""


def test_pace_only_keys_do_not_label_the_baseline():
    pace_keys = (("pace.noise_shape", "channel"), ("pace.schedule", "vit"), ("sigma", 1.5))
    baseline = (("optim.lr", 0.005), ("pace.mode", "none"))
    pace = (("optim.lr", 0.005), ("pace.lam", 1.0), ("pace.mode", "pace"), ("pace.sigma", 1.5),
            *pace_keys)  # fmt: skip
    token = tuple((k, "token" if k == "pace.noise_shape" else v) for k, v in pace)
    labels = labels_for([baseline, pace, token])
    assert labels[baseline] == "baseline"
    assert labels[pace] == "PACE σ=1.5 λ=1.0 pace.noise_shape=channel"  # differs among PACE rows
    assert labels[token] == "PACE σ=1.5 λ=1.0 pace.noise_shape=token"


def test_rows_name_their_recipe_and_any_switch_set_apart_from_it(tmp_path, capsys):
    def run(name, recipe, acc, mirrors=None, **switches):
        preset = OmegaConf.to_container(OmegaConf.load(f"conf/recipe/{recipe}.yaml"))
        switches = preset | switches
        # What src.train records: the switches, and the keys that copy them (resolved).
        copies = {"data__drop_last": switches["drop_last"],
                  "optim__decay_1d": switches["decay_1d"],
                  "pace__drop_path_scale": switches["drop_path_scale"]}  # fmt: skip
        copies |= mirrors or {}
        write_run(tmp_path / name, "toy", {"test/acc": acc}, recipe=switches, **copies)

    run("project", "project", 0.60)
    run("paper", "paper", 0.50)
    run("paper_full_batches", "paper", 0.55, drop_last=False)
    run("paper_drop_last_by_hand", "paper", 0.45, mirrors={"data__drop_last": False})
    main([str(tmp_path)])
    out = capsys.readouterr().out
    labels = [line.split(" | ")[0].lstrip("| ") for line in out.splitlines()
              if line.startswith("| PACE")]  # fmt: skip
    cells = {label: row(out, label)[1] for label in labels}
    # A copy set apart from its switch is a deviation of its own, said on every row as for a
    # task recipe's value ("recipe": as the recipe sets it).
    assert set(cells) == {
        "PACE σ=1.2 λ=1.0 data.drop_last=recipe recipe=project",
        "PACE σ=1.2 λ=1.0 data.drop_last=recipe recipe=paper",
        "PACE σ=1.2 λ=1.0 data.drop_last=recipe recipe=paper recipe.drop_last=False",
        "PACE σ=1.2 λ=1.0 data.drop_last=False recipe=paper",
    }
    label = "PACE σ=1.2 λ=1.0 data.drop_last=recipe recipe=paper recipe.drop_last=False"
    assert cells[label] == "55.00"


def test_the_weights_a_run_started_from_are_part_of_its_row(tmp_path):
    paper_file = "file:ViT-B_16.npz@sha256:0123456789abcdef"
    # One file under two paths is one source; a run from before weights were recorded, whose
    # config said null, started from random init like the one that says so.
    write_run(
        tmp_path / "f1",
        "toy",
        {"test/acc": 0.8},
        seed=1,
        weights=paper_file,
        backbone__weights="/a/ViT-B_16.npz",
    )
    write_run(
        tmp_path / "f2",
        "toy",
        {"test/acc": 0.6},
        seed=2,
        weights=paper_file,
        backbone__weights="/b/ViT-B_16.npz",
    )
    write_run(
        tmp_path / "h",
        "toy",
        {"test/acc": 0.5},
        seed=1,
        backbone__weights="hub",
        weights="timm:vit_base_patch16_224.augreg2_in21k_ft_in1k",
    )
    write_run(tmp_path / "r1", "toy", {"test/acc": 0.2}, seed=1, backbone__weights=None)
    write_run(tmp_path / "r2", "toy", {"test/acc": 0.4}, seed=2, backbone__weights="random",
              weights="random")  # fmt: skip
    (table,), _ = build_tables(load_runs([tmp_path]))
    cells = {label: cells[1] for label, cells in table.rows}
    assert len(cells) == 3, cells
    by_weights = {label.split("backbone.weights=")[1].split()[0]: v for label, v in cells.items()}
    assert by_weights == {paper_file: "70.00 ± 14.14", "random": "30.00 ± 14.14",
                          "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k": "50.00"}  # fmt: skip
