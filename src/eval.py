"""Re-test a finished training run from its ``adapter.safetensors`` on top of the same backbone.

python -m src.eval run_dir=logs/train/runs/2026-01-01_12-00-00
python -m src.eval run_dir=... data.protocol=tune          # accuracy on val200 instead of test
"""

from __future__ import annotations

# ruff: noqa: E402  (the signal handlers come before every other import)
from src.run.stopping import stop_cleanly_on_signals

if __name__ == "__main__":  # the entry itself (and each DDP rank); an import changes nothing
    stop_cleanly_on_signals()  # first: a signal while the rest imports is one line, no trace

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

import src.cli.validation  # noqa: F401  (registers the ${cwd:} resolver before Hydra composes)
from src.cli.entry import report_user_errors, run_entry, to_float_dict, write_json
from src.data.workers import check_worker_temp_dir
from src.errors import UserError
from src.run.folder import EVAL_RESULTS, RunFolder, forget_unused_folder

log = logging.getLogger(__name__)


def load_run_config(run_dir: Path) -> DictConfig:
    """The run's resolved config.yaml (written by src.train), else Hydra's record of its first
    launch."""
    run = RunFolder(run_dir)
    for path in (run.config, run.first_launch_config):
        if path.is_file():
            return OmegaConf.load(path)
    raise UserError(f"{run_dir} is not a training run folder: it has no {run.config.name}")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    import lightning as L

    from src.network import load_trainable
    from src.train import build_finetuner

    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run_dir {run_dir} is not a folder; give a training run's folder")
    run_cfg = load_run_config(run_dir)
    with open_dict(run_cfg):
        run_cfg.paths = cfg.paths
        given = {k: v for k, v in OmegaConf.to_container(cfg.data).items() if v is not None}
        run_cfg.data = OmegaConf.merge(run_cfg.data, given)
        run_cfg.pace.mode = "none"  # evaluation never perturbs; the merged weights are tested
        if run_cfg.backbone.get("weights", None) is None:
            # Written before the weights had to be named, when null meant random init (the
            # frozen backbone's fingerprint still checks that the rebuilt one is the same).
            run_cfg.backbone.weights = "random"
    check_worker_temp_dir(run_cfg.data.get("num_workers"))
    if run_cfg.get("seed") is not None:
        L.seed_everything(run_cfg.seed)
    datamodule = hydra.utils.instantiate(run_cfg.data)
    finetuner = build_finetuner(run_cfg, datamodule.num_classes, datamodule)
    load_trainable(finetuner.model, cfg.weights)
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        default_root_dir=cfg.paths.output_dir,
        **cfg.trainer,
    )
    trainer.test(finetuner, datamodule=datamodule)
    metrics = to_float_dict(trainer.callback_metrics)
    write_json(
        Path(cfg.paths.output_dir) / EVAL_RESULTS,
        {"run_dir": str(run_dir), "protocol": datamodule.protocol, "metrics": metrics},
    )
    log.info(
        "test/acc = %.4f (%s protocol)", metrics.get("test/acc", float("nan")), datamodule.protocol
    )
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    # A refused evaluation leaves no empty eval/<time>/ folder behind.
    with forget_unused_folder(Path(cfg.paths.output_dir), up_to=Path(cfg.run_dir)):
        return evaluate(cfg).get("test/acc")


if __name__ == "__main__":
    run_entry(main, "eval")
