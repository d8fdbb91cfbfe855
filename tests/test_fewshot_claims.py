"""experiments/fewshot_demo/claims.py: each method paired with the baseline run on the same
training images, the three claims as means over those pairs."""

import importlib.util
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

SCRIPT = Path(__file__).resolve().parents[1] / "experiments/fewshot_demo/claims.py"
spec = importlib.util.spec_from_file_location("claims", SCRIPT)
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)


def write_run(folder, mode, shots, split_seed, acc, train_acc, grad_norm, fp_distance, seconds):
    folder.mkdir(parents=True)
    config = {"data": {"task": "fashion_mnist", "shots": shots, "split_seed": split_seed,
                       "protocol": "final"},
              "pace": {"mode": mode, "sigma": 1.0, "lam": 0.5}, "seed": 42,
              "trainer": {"max_epochs": len(train_acc)}}  # fmt: skip
    (folder / "config.yaml").write_text(json.dumps(config))
    results = {"epochs": len(train_acc), "fit_seconds": seconds, "peak_rss_mb": seconds * 10,
               "metrics": {"test/acc": acc}}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    rows = ["epoch,train/acc,train/grad_norm,val/fp_distance"]
    rows += [f"{e},{a},{g},{f}" for e, (a, g, f) in
             enumerate(zip(train_acc, grad_norm, fp_distance, strict=True))]  # fmt: skip
    (folder / "summary.csv").write_text("\n".join(rows) + "\n")


def test_claims_pair_runs_on_the_same_draw(tmp_path):
    for split_seed, gain in ((0, 0.02), (1, 0.04)):
        # The baseline fits its training set at epoch 2: the fitting phase is epochs 0 and 1.
        write_run(
            tmp_path / f"none{split_seed}",
            "none",
            4,
            split_seed,
            0.70,
            [0.5, 0.9, 1.0, 1.0],
            [4.0, 2.0, 0.1, 0.01],
            [1, 2, 3, 8.0],
            10,
        )
        write_run(
            tmp_path / f"pace{split_seed}",
            "pace",
            4,
            split_seed,
            0.70 + gain,
            [0.4, 0.8, 0.9, 1.0],
            [2.0, 1.0, 0.5, 0.5],
            [1, 1, 1, 2.0],
            25,
        )
    (((shots, label), measures),) = claims.claims([tmp_path]).items()
    assert (shots, label) == (4, "pace σ=1.0 λ=0.5")
    mean, se, n = measures["accuracy gain (points)"]
    assert (mean, n) == (pytest.approx(3.0), 2) and se == pytest.approx(1.0)
    assert measures["grad-norm ratio, fitting phase"][0] == pytest.approx(0.5)  # 1.5 / 3
    assert measures["FP-distance ratio, last epoch"][0] == pytest.approx(0.25)
    assert measures["peak memory ratio"][0] == pytest.approx(2.5)
    assert "time / epoch ratio" not in measures  # the runs' seconds compare nothing here
    assert measures["baseline fitting epochs"][0] == 2
    table = claims.markdown(claims.claims([tmp_path]))
    assert "| 4 | pace σ=1.0 λ=0.5 | +3.00 ± 1.00 (n=2)" in table


def launched_with(folder, recipe, **switches):
    """Give the run the recipe switches src.train records in config.yaml: the preset's, and any
    set apart on the command line."""
    config = json.loads((folder / "config.yaml").read_text())
    preset = OmegaConf.to_container(OmegaConf.load(f"conf/recipe/{recipe}.yaml"))
    config["recipe"] = preset | switches
    (folder / "config.yaml").write_text(json.dumps(config))


def test_recipe_paper_runs_pair_with_their_own_baseline_and_with_the_project_recipe(tmp_path):
    curves = ([0.5, 1.0], [2.0, 1.0], [1.0, 2.0])
    for draw in (0, 1):
        for recipe, none_acc, pace_acc in (
            ("project", 0.60, 0.65),
            ("paper", 0.50, 0.58 + draw / 100),
        ):
            for mode, acc in (("none", none_acc), ("pace", pace_acc)):
                folder = tmp_path / recipe / f"{mode}{draw}"
                write_run(folder, mode, 4, draw, acc, *curves, 10)
                launched_with(folder, recipe)
    # One switch set back to the project's, on draw 0 only (the study's ablation).
    write_run(tmp_path / "paper" / "pace0_step", "pace", 4, 0, 0.66, *curves, 10)
    launched_with(tmp_path / "paper" / "pace0_step", "paper", lr_schedule="step")
    folders = [tmp_path / "project", tmp_path / "paper"]
    table = claims.claims(folders)
    # The ablation run has no baseline of its own recipe: it is not in the claims.
    assert set(table) == {(4, "pace σ=1.0 λ=0.5"), (4, "pace σ=1.0 λ=0.5 · recipe=paper")}
    # Each recipe's PACE against the baseline of its own recipe, never the other's.
    assert table[4, "pace σ=1.0 λ=0.5"]["accuracy gain (points)"][0] == pytest.approx(5.0)
    assert table[4, "pace σ=1.0 λ=0.5 · recipe=paper"]["accuracy gain (points)"][
        0
    ] == pytest.approx(8.5)
    effect = claims.recipe_effect(folders)
    name = "accuracy gain over recipe=project (points)"
    assert effect[4, "baseline · recipe=paper"][name][:1] == (pytest.approx(-10.0),)
    mean, se, n = effect[4, "pace σ=1.0 λ=0.5 · recipe=paper"][name]
    assert (mean, se, n) == (pytest.approx(-6.5), pytest.approx(0.5), 2)
    # The ablation pairs with the project's PACE on its draw, and is never averaged with
    # recipe=paper's own runs.
    ablation = effect[4, "pace σ=1.0 λ=0.5 · recipe=paper recipe.lr_schedule=step"][name]
    assert ablation[0] == pytest.approx(1.0) and ablation[2] == 1
    assert claims.recipe_effect([tmp_path / "project"]) == {}  # nothing to pair
