"""Fine-tune a timm ViT with PEFT adapters and (optionally) PACE.

    python -m src.train experiment=vtab_pace data.task=cifar sigma=0.5
    python -m src.train experiment=vtab_pace sigma=0.1,0.5,1 lam=0.1,1 -m

Every run folder holds the resolved config.yaml (Hydra keeps the composed one in .hydra/),
checkpoints/last.ckpt (resume with ``ckpt_path=last``), adapter.safetensors (adapter + head, for
``src.eval``) and results.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

import src.config  # noqa: F401  (registers the ${cwd:} resolver before Hydra composes)

# Importing src.adapters also registers the conf/adapter schemas with Hydra.
from src.adapters import calibrate_adapters, count_parameters
from src.cli import (
    finish_wandb,
    instantiate_group,
    prepare_wandb,
    report_user_errors,
    to_float_dict,
    write_json,
    write_resolved_config,
)
from src.errors import UserError
from src.model import build_model, save_trainable
from src.module import FineTuner
from src.pace import build_regulariser

log = logging.getLogger(__name__)


def build_finetuner(cfg: DictConfig, num_classes: int) -> FineTuner:
    model = build_model(
        num_classes,
        backbone_name=cfg.backbone.name,
        adapter=cfg.adapter,
        weights=cfg.backbone.weights,
        img_size=cfg.backbone.img_size,
        drop_path=cfg.backbone.drop_path,
        timm_kwargs=cfg.backbone.get("kwargs"),
    )
    # The pace/optim/diagnostics groups hold exactly the keyword arguments of these factories.
    regulariser = build_regulariser(model, **cfg.pace)
    return FineTuner(model, regulariser, num_classes=num_classes, **cfg.optim, **cfg.diagnostics)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means this run folder's last.ckpt; a fresh run starts when there is none."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            rank_zero_info(f"resuming from {last}")
            return str(last)
        rank_zero_info(f"ckpt_path=last: no {last} yet, starting a fresh run")
        return None
    if not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path {ckpt_path} does not exist; give a .ckpt file or 'last'")
    return ckpt_path


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test one configuration; returns the final metrics (also in results.json)."""
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    write_resolved_config(cfg, output_dir / "config.yaml")
    datamodule = hydra.utils.instantiate(cfg.data)
    finetuner = build_finetuner(cfg, datamodule.num_classes)
    rank_zero_info(
        f"task={datamodule.task} protocol={datamodule.protocol} "
        f"({'train800 -> val200' if datamodule.protocol == 'tune' else 'train800val200 -> test'}) "
        f"pace={cfg.pace.mode} sigma={cfg.pace.sigma} lam={cfg.pace.lam} adapter={cfg.adapter.name}"
    )
    prepare_wandb(cfg)
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=instantiate_group(cfg.get("logger")) or False,
        callbacks=instantiate_group(cfg.get("callbacks")),
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(
            {"protocol": datamodule.protocol, "task": datamodule.task, "seed": cfg.seed}
        )

    metrics: dict[str, float] = {}
    started = time.perf_counter()
    if cfg.train:
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
        calibrate_adapters(finetuner.model, datamodule, ckpt_path)  # GPS/GRFT: one data pass
        trainer.fit(finetuner, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics.update(to_float_dict(trainer.callback_metrics))
        if trainer.is_global_zero:
            save_trainable(finetuner.model, output_dir / "adapter.safetensors")
    fit_seconds = time.perf_counter() - started
    if cfg.test:
        trainer.test(finetuner, datamodule=datamodule)
        metrics.update(to_float_dict(trainer.callback_metrics))

    summary = {
        "task": datamodule.task,
        "protocol": datamodule.protocol,
        "pace": cfg.pace.mode,
        "sigma": cfg.pace.sigma,
        "lam": cfg.pace.lam,
        "adapter": cfg.adapter.name,
        "adapter_config": OmegaConf.to_container(cfg.adapter, resolve=True),
        "lr": cfg.optim.lr,
        "backbone": cfg.backbone.name,
        "seed": cfg.seed,
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "peak_rss_mb": _peak_rss_mb(),
        "params": count_parameters(finetuner.model),
        "metrics": metrics,
    }
    if torch.cuda.is_available():
        summary["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    write_json(output_dir / "results.json", summary)
    return metrics


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    finally:
        finish_wandb()
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
