"""Assemble a text run: transformers backbone + adapter + PACE objective + TextFineTuner.

``src.train.build_finetuner`` hands over here when ``backbone.library`` is ``transformers``.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from src.errors import UserError


def build_text_model(cfg: DictConfig, num_classes: int, objective: str):
    from src.adapters import inject
    from src.backbones.text import build_text_backbone

    b = cfg.backbone
    kwargs = b.get("kwargs")
    model = build_text_backbone(
        b.get("name"),
        num_classes,
        objective=objective,
        family=b.family,
        path=b.get("path"),
        weights=b.get("weights") or "pretrained",
        kwargs=OmegaConf.to_container(kwargs, resolve=True) if kwargs else None,
    )
    return inject(model, cfg.adapter)


def build_text_finetuner(cfg: DictConfig, datamodule):
    from src.pace import build_regulariser
    from src.text.finetuner import TextFineTuner
    from src.text.objectives import make_objective

    objective = datamodule.objective
    if objective == "causal_lm" and cfg.pace.mode == "fast":
        raise UserError(
            "pace=fast keeps every training sample's previous outputs, which for a causal LM are "
            "its answer tokens' full-vocabulary logits (GBs); use pace=pace or pace=lazy"
        )
    model = build_text_model(cfg, datamodule.num_classes, objective)
    regulariser = build_regulariser(model, **cfg.pace, objective=make_objective(objective))
    return TextFineTuner(
        model,
        regulariser,
        num_classes=datamodule.num_classes,
        task=datamodule.task,
        objective=objective,
        max_new_tokens=OmegaConf.select(cfg, "data.max_new_tokens", default=256),
        **cfg.optim,
        **cfg.diagnostics,
    )
