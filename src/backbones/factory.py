"""Build a timm backbone, optionally with pre-trained weights, and a fresh classification head."""

from __future__ import annotations

import difflib
import logging

import timm
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from src.backbones.weights import SUPPORTED_EXTS, check_weights_path, load_weights
from src.errors import UserError, check_choice

log = logging.getLogger(__name__)

HUB = "hub"
HEAD_INITS = ("trunc_normal", "torch_default")
# Transformer families offered as "did you mean" suggestions for a mistyped backbone.name.
_FAMILIES = ["*vit*", "*deit*", "swin*", "beit*", "eva*"]


def build_backbone(
    name: str,
    num_classes: int,
    img_size: int | None = None,
    drop_path: float = 0.0,
    weights: str | None = None,
    head_init: str = "trunc_normal",
    **timm_kwargs,
) -> nn.Module:
    """Create timm model ``name`` with a new ``num_classes`` head initialised by ``head_init``.

    ``weights``: None -> random init; ``"hub"`` -> timm's pretrained weights (needs the network or
    a filled Hugging Face cache); anything else -> a local .npz/.safetensors/.pth file.
    ``head_init``: see :func:`reset_head`.
    Extra ``timm_kwargs`` (e.g. ``depth=2`` for a toy ViT) go straight to ``timm.create_model``.
    """
    _check_name(name)
    check_choice("recipe.head_init", head_init, HEAD_INITS)
    # Validate a local file before building: building ViT-B takes a while, a typo should not.
    path = check_weights_path(weights) if weights is not None and weights != HUB else None

    # timm needs plain containers: a ListConfig for Swin's `depths` breaks torch.split inside it.
    plain = {
        k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
        for k, v in timm_kwargs.items()
    }
    kwargs = dict(plain, num_classes=num_classes, drop_path_rate=drop_path)
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = _create(name, pretrained=weights == HUB, **kwargs)

    if path is not None:
        load_weights(model, path)
    reset_head(model, num_classes, head_init)
    log.info(
        "built %s (%.2fM parameters, weights: %s)",
        name,
        sum(p.numel() for p in model.parameters()) / 1e6,
        weights or "random init",
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


def _create(name: str, pretrained: bool, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except OSError as e:
        # huggingface_hub (LocalEntryNotFoundError, OfflineModeIsEnabled, HTTP errors) and
        # urllib (URLError) both raise OSError subclasses when a download is impossible.
        raise UserError(
            f"cannot load pretrained weights for '{name}': the hub is unreachable and the file is "
            f"not cached ({type(e).__name__}); pass a local file via "
            f"backbone.weights=/path/to/file.{{{','.join(x.lstrip('.') for x in SUPPORTED_EXTS)}}}"
        ) from e
    except RuntimeError as e:
        msg = str(e)
        if "Invalid pretrained tag" in msg:
            arch = name.split(".", 1)[0]
            tags = timm.list_pretrained(f"{arch}.*")[:8]
            raise UserError(
                f"unknown pretrained tag in backbone.name '{name}'; available: "
                f"{', '.join(tags) or 'none (use the bare name)'}"
            ) from e
        if "No pretrained weights exist" in msg:
            raise UserError(
                f"timm has no pretrained weights for '{name}'; pass a local file via "
                "backbone.weights=/path/to/file or use backbone.weights=null"
            ) from e
        raise
    except TypeError as e:
        if "img_size" in str(e):
            raise UserError(
                f"timm model '{name}' does not accept img_size; remove backbone.img_size for it"
            ) from e
        raise


__all__ = ["build_backbone", "reset_head", "HUB"]
