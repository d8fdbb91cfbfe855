"""Assemble the network a run trains: timm backbone + adapters; save/load its trainable part."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from src.adapters import AdapterConfig, branch_modules, inject, restore_selection
from src.backbones import build_backbone
from src.backbones.fingerprint import frozen_fingerprint
from src.backbones.sources import RANDOM, WeightsSource
from src.errors import UserError
from src.run.folder import RUN_FILES

log = logging.getLogger(__name__)


def build_model(
    num_classes: int,
    backbone_name: str,
    adapter: str | Mapping | AdapterConfig,
    weights: str | WeightsSource | None = RANDOM,
    img_size: int | None = None,
    drop_path: float = 0.0,
    timm_kwargs: Mapping | None = None,
    head_init: str = "trunc_normal",
    **adapter_fields,
) -> nn.Module:
    """The backbone with method ``adapter`` installed.

    ``adapter`` is a method name, its config dataclass or a mapping such as the ``adapter`` config
    group; ``adapter_fields`` override single fields (``build_model(..., "lora", rank=4)``).
    """
    model = build_backbone(
        backbone_name,
        num_classes,
        img_size=img_size,
        drop_path=drop_path,
        weights=weights,
        head_init=head_init,
        **(timm_kwargs or {}),
    )
    return inject(model, adapter, **adapter_fields)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable tensors plus the branch modules' own buffers (e.g. GRFT's selected rows)."""
    state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, module in branch_modules(model):
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name not in module._non_persistent_buffers_set:
                state[f"{name}.{buffer_name}"] = buffer
    return {n: t.detach().cpu().contiguous() for n, t in state.items()}


def save_trainable(model: nn.Module, path: str | Path) -> Path:
    """Write adapter + head weights only; the frozen backbone is rebuilt from its own source."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # The frozen backbone's fingerprint travels with the weights: src.eval checks that it rebuilt
    # the same backbone before reporting a number.
    metadata = {"frozen_fingerprint": frozen_fingerprint(model)}
    save_file(trainable_state_dict(model), str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # readable by the group, like every other file of the run folder
    tmp.replace(path)
    return path


def load_trainable(model: nn.Module, path: str | Path) -> None:
    """Load a run's adapter weights (``RunFolder.write_adapter``, src/run/folder.py) onto a
    model built with the same backbone/adapter config."""
    path = Path(path)
    if not path.is_file():
        written = RUN_FILES["adapter"].name
        raise UserError(f"adapter weights not found: {path} (a training run writes {written})")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise UserError(
            f"{path} is not a readable safetensors file ({err}); re-run the training or "
            "restore the file"
        ) from None
    restore_selection(model, state)  # data-chosen structure (GPS, GRFT) before shapes are checked
    saved_fingerprint = metadata.get("frozen_fingerprint")
    if saved_fingerprint is not None and saved_fingerprint != frozen_fingerprint(model):
        raise UserError(
            f"{path} was trained on a different frozen backbone than this config builds "
            "(backbone name, weights file, img_size or seed differ); evaluate with the run's own "
            "config.yaml settings"
        )
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
            "evaluate with the run's own config (backbone, adapter settings, task)"
        )
    model.load_state_dict(state, strict=False)
    log.info("loaded %d trainable tensors from %s", len(state), path)
