"""src.report's GLUE and GSM-8K tables on hand-made run folders, with the paper's rows beside."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from src.report import main
from src.text.report_tables import GLUE_COLUMNS, PAPER_GLUE

GLUE_RECIPES = {t: OmegaConf.load(f"conf/task/glue_{t}.yaml") for t in GLUE_COLUMNS}


def write_run(folder, target, task, metrics, seed=1, mode="pace", protocol="final", **extra):
    folder.mkdir(parents=True)
    recipe = GLUE_RECIPES.get(task)
    tree = {
        "seed": seed,
        "data": {"_target_": target, "task": task, "protocol": protocol, "root": "/x"},
        "backbone": {"library": "transformers", "name": "roberta-base", "path": None},
        "adapter": {"name": "lora", "rank": 8, "targets": ["attention.self.query"]},
        "pace": {"mode": mode, "sigma": 0.5, "lam": 1.0},
        "optim": {"lr": float(recipe.optim.lr) if recipe else 2e-6, "weight_decay": 0.01},
        "trainer": {"max_epochs": int(recipe.trainer.max_epochs) if recipe else 3},
        **extra,
    }
    if recipe:
        tree["optim"]["warmup_epochs"] = float(recipe.optim.warmup_epochs)
    OmegaConf.save(OmegaConf.create(tree), folder / "config.yaml")
    epochs = tree["trainer"]["max_epochs"]
    results = {"task": task, "protocol": protocol, "seed": seed, "epochs": epochs,
               "fit_seconds": 1.0, "metrics": metrics}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))


def row(markdown: str, label: str) -> list[str]:
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {label}"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_glue_table_reports_each_tasks_metric_and_the_paper_rows(tmp_path, capsys):
    main_metric = {"cola": "mcc", "stsb": "pearson"}
    for task, value in zip(GLUE_COLUMNS, PAPER_GLUE["+PACE"], strict=True):
        for seed, delta in ((1, -0.1), (2, 0.1)):
            metric = f"test/{main_metric.get(task, 'acc')}"
            # A decoy: accuracy on CoLA / Spearman on STS-B must not be what the table shows.
            metrics = {metric: (value + delta) / 100, "test/acc2": 0.0, "test/spearman": 0.0}
            if task == "cola":
                metrics["test/acc"] = 0.5
            write_run(tmp_path / f"{task}_{seed}", "src.data.glue.GLUEDataModule", task, metrics,
                      seed=seed)  # fmt: skip
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "GLUE — final protocol: MCC (cola), Pearson (stsb), accuracy (others)" in out
    ours = row(out, "PACE")
    assert ours[:6] == [f"{v:.2f} ± 0.14" for v in PAPER_GLUE["+PACE"]]
    assert ours[6] == "87.62"  # mean of the six: 525.7 / 6
    assert row(out, "paper: +PACE (RoBERTa-base)") == [*map(str, PAPER_GLUE["+PACE"]), "87.6"]
    assert row(out, "paper: LoRA (RoBERTa-base)")[6] == "86.6"


def test_gsm8k_table_with_the_paper_rows(tmp_path, capsys):
    for seed, value in ((1, 0.70), (2, 0.74)):
        write_run(tmp_path / f"lora_{seed}", "src.data.gsm8k.GSM8KDataModule", "gsm8k",
                  {"test/exact_match": value, "val/acc": 0.1}, seed=seed, mode="none")  # fmt: skip
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "GSM-8K — final protocol: exact match of the final number" in out
    assert row(out, "baseline") == ["72.00 ± 2.83"] or row(out, "adapter") == ["72.00 ± 2.83"]
    assert row(out, "paper: +PACE (Phi-3-mini)") == ["78.77"]
    assert row(out, "paper: pre-trained (Phi-3-mini)") == ["62.01"]
