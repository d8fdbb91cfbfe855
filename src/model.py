"""Assemble the network a run trains: timm backbone + adapters; save/load its trainable part."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from src.adapters import inject
from src.backbones import build_backbone
from src.errors import UserError

log = logging.getLogger(__name__)


def build_model(
    num_classes: int,
    backbone_name: str,
    adapter_name: str,
    rank: int = 10,
    weights: str | None = None,
    img_size: int | None = None,
    drop_path: float = 0.0,
    targets: tuple[str, ...] | None = None,
    timm_kwargs: dict | None = None,
    head_init: str = "trunc_normal",
) -> nn.Module:
    model = build_backbone(
        backbone_name,
        num_classes,
        img_size=img_size,
        drop_path=drop_path,
        weights=weights,
        head_init=head_init,
        **(timm_kwargs or {}),
    )
    extra = {"targets": tuple(targets)} if targets else {}
    return inject(model, adapter_name, rank=rank, **extra)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def save_trainable(model: nn.Module, path: str | Path) -> Path:
    """Write adapter + head weights only; the frozen backbone is rebuilt from its own source."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(trainable_state_dict(model), str(tmp))
    tmp.replace(path)
    return path


def load_trainable(model: nn.Module, path: str | Path) -> None:
    """Load ``adapter.safetensors`` onto a model built with the same backbone/adapter config."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"adapter weights not found: {path} (a training run writes adapter.safetensors)"
        )
    state = load_file(str(path))
    expected = trainable_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise UserError(
            f"{path} does not match the model built from this config ({detail}); "
            "evaluate with the run's own config (backbone, adapter, rank, task)"
        )
    model.load_state_dict(state, strict=False)
    log.info("loaded %d trainable tensors from %s", len(state), path)
