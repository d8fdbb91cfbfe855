"""Build a timm backbone, optionally with pre-trained weights, and a fresh classification head."""

from __future__ import annotations

import difflib
import logging

import timm
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from src.backbones.sources import RANDOM, WeightsSource, resolve_weights
from src.backbones.weights import load_weights
from src.errors import UserError, check_choice

log = logging.getLogger(__name__)

HEAD_INITS = ("trunc_normal", "torch_default")
# Transformer families offered as "did you mean" suggestions for a mistyped backbone.name.
_FAMILIES = ["*vit*", "*deit*", "swin*", "beit*", "eva*"]


def build_backbone(
    name: str,
    num_classes: int,
    img_size: int | None = None,
    drop_path: float = 0.0,
    weights: str | WeightsSource | None = RANDOM,
    head_init: str = "trunc_normal",
    **timm_kwargs,
) -> nn.Module:
    """Create timm model ``name`` with a new ``num_classes`` head initialised by ``head_init``.

    ``weights``: what ``backbone.weights`` says (``random``, ``timm:<arch>.<tag>``, ``hub``, a
    .npz/.safetensors/.pth file; see :mod:`src.backbones.sources`) or its resolved
    :class:`WeightsSource`; None (a config's null) is refused.
    ``head_init``: see :func:`reset_head`.
    Extra ``timm_kwargs`` (e.g. ``depth=2`` for a toy ViT) go straight to ``timm.create_model``.
    """
    _check_name(name)
    check_choice("recipe.head_init", head_init, HEAD_INITS)
    # Resolve (and find the file) before building: building ViT-B takes a while, a typo should not.
    source = weights if isinstance(weights, WeightsSource) else resolve_weights(name, weights)

    # timm needs plain containers: a ListConfig for Swin's `depths` breaks torch.split inside it.
    plain = {
        k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
        for k, v in timm_kwargs.items()
    }
    kwargs = dict(plain, num_classes=num_classes, drop_path_rate=drop_path)
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = _create(name, **kwargs)

    if source.path is not None:
        load_weights(model, source.path)
    reset_head(model, num_classes, head_init)
    log.info(
        "built %s (%.2fM parameters, weights: %s)",
        name,
        sum(p.numel() for p in model.parameters()) / 1e6,
        source.identity,
    )
    return model


def reset_head(model: nn.Module, num_classes: int, init: str = "trunc_normal") -> None:
    """Replace the classifier with a freshly initialised one (docs/recipe.md, ``head_init``).

    ``trunc_normal`` (the project's): weights ~ trunc-normal(std 0.02), zero bias — timm's own ViT
    head init, so a loaded backbone starts from the same head as a randomly initialised one.
    ``torch_default``: the plain ``nn.Linear`` that ``reset_classifier`` creates (PyTorch's
    Kaiming-uniform weights and uniform bias), as the official PACE code leaves it.
    """
    model.reset_classifier(num_classes)
    if init == "torch_default":
        return
    heads = model.get_classifier()  # a tuple for distilled DeiT (head, head_dist)
    heads = heads if isinstance(heads, tuple | list) else (heads,)
    for m in (m for h in heads for m in h.modules()):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = close_model_names(name.split(".", 1)[0])
    hint = f"did you mean: {', '.join(close)}?" if close else "see timm.list_models('*vit*')"
    raise UserError(f"unknown timm model '{name}' for backbone.name; {hint}")


def close_model_names(arch: str, n: int = 5) -> list[str]:
    """timm vision-transformer names closest to ``arch``."""

    # Also score against each name's first len(arch) characters: users often type a prefix
    # ("vit_smal") whose ratio to the long full names falls below difflib's usual cutoff.
    def score(cand: str) -> tuple[float, float]:
        full = difflib.SequenceMatcher(None, arch, cand).ratio()
        head = difflib.SequenceMatcher(None, arch, cand[: len(arch)]).ratio()
        return max(full, head), full

    scored = sorted(((score(c), c) for c in timm.list_models(_FAMILIES)), reverse=True)
    return [c for (best, _), c in scored if best >= 0.6][:n]


def _create(name: str, **kwargs) -> nn.Module:
    # Never timm's own download: weights come from the file resolve_weights found, loaded strictly.
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:
        if "Invalid pretrained tag" in str(e):
            tags = timm.list_pretrained(f"{name.split('.', 1)[0]}.*")[:8]
            raise UserError(
                f"unknown pretrained tag in backbone.name '{name}'; available: "
                f"{', '.join(tags) or 'none (use the bare name)'}"
            ) from e
        raise
    except TypeError as e:
        if "img_size" in str(e):
            raise UserError(
                f"timm model '{name}' does not accept img_size; remove backbone.img_size for it"
            ) from e
        raise


__all__ = ["build_backbone", "reset_head"]
