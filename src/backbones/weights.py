"""Load backbone weights from a local file into a timm model, or say in one line why not.

Three formats are accepted:

* ``.npz`` in Google's original ViT layout (e.g. the paper's ``ViT-B_16.npz``), read by timm's own
  JAX/Flax loader, which also resamples the position table to the model's grid;
* ``.safetensors`` and ``.pth`` / ``.pt`` / ``.bin`` state dicts, read by timm's
  ``load_state_dict`` (``torch.load`` with ``weights_only=True`` only, so a file cannot execute
  code when it is opened) and converted by the model's own ``checkpoint_filter_fn``.

Reading and converting are timm's; what is here is what timm's
``pretrained_cfg_overlay=dict(file=...)`` path lacks: position tables resampled without
antialiasing (timm's default moves a downsampled pre-trained model's features: max abs 1.28 vs
2e-5 on the DINOv2-S/14 import at 112 px), a strict match of every backbone tensor (timm's path
loads non-strictly whenever the head is dropped, so a file of another model can load partly and
silently), and one-line errors that name the mismatched keys and shapes.

The classification head is never taken from the file: fine-tuning always starts from a fresh head
sized for the target dataset (see :func:`src.backbones.factory.build_backbone`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import pickle
import re
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from src.errors import UserError

log = logging.getLogger(__name__)

NPZ_EXTS = (".npz",)
SAFETENSORS_EXTS = (".safetensors",)
TORCH_EXTS = (".pth", ".pt", ".bin")
SUPPORTED_EXTS = NPZ_EXTS + SAFETENSORS_EXTS + TORCH_EXTS

_MAX_LISTED = 5


def check_weights_path(path: str | Path) -> Path:
    """Return ``path`` as a Path if it names an existing file with a supported extension."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "not found"
        raise UserError(
            f"backbone weights file {what}: {p} (set backbone.weights to an existing "
            f"{'/'.join(SUPPORTED_EXTS)} file, a timm tag as timm:<arch>.<tag>, 'hub' for "
            "timm's default tag, or random)"
        )
    if p.suffix.lower() not in SUPPORTED_EXTS:
        raise UserError(
            f"unsupported backbone weights file extension '{p.suffix}' for {p}; "
            f"supported: {', '.join(SUPPORTED_EXTS)}"
        )
    return p


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load backbone tensors from ``path`` into ``model`` in place (head untouched); return it."""
    p = check_weights_path(path)
    ext = p.suffix.lower()
    if ext in NPZ_EXTS:
        n = _load_npz(model, p)
    else:
        n = _load_state_dict(model, _read_state_dict(p), p)
    log.info("loaded %d backbone tensors into %s from %s", n, model_name(model), p)
    return model


def model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    # timm records the classifier module name(s) in the pretrained cfg ("head" for ViTs,
    # ("head", "head_dist") for distilled DeiT); fall back to the ViT convention.
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or "head"
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


# ----------------------------------------------------------------------------- state dicts


def _read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors in ``p``, read by timm's own reader (safetensors, or torch.load with
    ``weights_only=True``; it unwraps ``state_dict`` / ``model`` / EMA entries and strips DDP and
    torch.compile prefixes), with its failures turned into one-line errors. What timm leaves:
    the ``model.`` prefix of a Lightning module's state dict, and entries that are not tensors."""
    from safetensors import SafetensorError
    from timm.models import load_state_dict

    retry = "check that the file is complete and was written by torch.save or safetensors"
    try:
        sd = load_state_dict(str(p), device="cpu")
    except (AttributeError, TypeError) as e:  # timm calls .items() on whatever the file holds
        raise UserError(
            f"{p} does not hold a state dict; "
            "save the backbone with torch.save(model.state_dict(), path)"
        ) from e
    except (
        pickle.UnpicklingError,
        SafetensorError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
    ) as e:
        # torch words a refused class and plain garbage alike ("Weights only load failed", or
        # timm's rewording); only the former names the unsupported global.
        refused = re.search(r"Unsupported globals?: (?:GLOBAL )?([\w.]*\w)", str(e))
        if refused:
            raise UserError(
                f"{p} contains pickled Python objects ({refused.group(1)}) that "
                "torch.load(weights_only=True) refuses to load; re-save just the tensors "
                "(torch.save(model.state_dict(), path)) or convert the file to .safetensors"
            ) from e
        # torch's first line is generic boilerplate; the unpickler's own complaint follows it.
        detail = str(e).split("WeightsUnpickler error:", 1)[-1]
        raise UserError(f"cannot read {p} ({_first_line(detail)}); {retry}") from e
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not sd or bad:
        raise UserError(
            f"{p} is not a plain state dict"
            + (f": entries {_fmt(bad)} are not tensors" if bad else " (it is empty)")
            + "; save the backbone with torch.save(model.state_dict(), path)"
        )
    if all(k.startswith("model.") for k in sd):
        sd = {k.removeprefix("model."): v for k, v in sd.items()}
    return sd


def _filter_fn(model: nn.Module):
    # Each timm model module defines its own checkpoint_filter_fn (for ViTs: pos_embed and
    # patch_embed resampling, DINOv2 / CLIP / OpenCLIP key conversion); use the model's own.
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is not None and "antialias" in inspect.signature(fn).parameters:
        # Resample position tables with plain bicubic, as DINOv2 and the original ViT code do;
        # timm's default antialias=True shifts a downsampled pre-trained model's features
        # (measured on the DINOv2-S/14 import at 112 px: max abs 1.28 vs 2e-5 without it).
        return functools.partial(fn, antialias=False)
    return fn


def _load_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], p: Path) -> int:
    raw_shapes = {k: tuple(v.shape) for k, v in sd.items()}
    filter_fn = _filter_fn(model)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            raise UserError(
                f"{p} does not fit backbone {model_name(model)}: timm could not convert it "
                f"({_first_line(e)}); choose the matching backbone.name"
            ) from e
    heads = _head_prefixes(model)
    sd = {k: v for k, v in sd.items() if not k.startswith(heads)}

    target = {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    # Report the shape as stored in the file: timm's filter may already have resampled it.
    shapes = [
        f"{k}: file {raw_shapes.get(k, tuple(sd[k].shape))} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(keys)}): {_fmt(keys)}"
            for label, keys in (
                ("shape mismatches", shapes),
                ("missing keys", missing),
                ("unexpected keys", unexpected),
            )
            if keys
        ]
        raise UserError(
            f"{p} does not match backbone {model_name(model)}: "
            + "; ".join(parts)
            + " - pick the backbone.name the file was trained with, or another file"
        )
    model.load_state_dict(sd, strict=False)  # strict=False only because head.* was dropped
    return len(sd)


# ----------------------------------------------------------------------------- Google .npz


def _load_npz(model: nn.Module, p: Path) -> int:
    import numpy as np

    if not hasattr(model, "load_pretrained"):
        raise UserError(
            f".npz weights need a timm model with an npz loader (e.g. a ViT); "
            f"{model_name(model)} has none - convert {p} to .safetensors or .pth"
        )
    if not zipfile.is_zipfile(p):  # np.load would otherwise blame pickles for any garbage
        raise UserError(
            f"cannot read {p} as a NumPy .npz archive (not a zip file); "
            "check that the file is complete"
        )
    try:
        npz = np.load(p, allow_pickle=False)
        files = set(npz.files)
        npz.close()
    except (OSError, ValueError, EOFError) as e:
        raise UserError(
            f"cannot read {p} as a NumPy .npz archive ({_first_line(e)}); "
            "check that the file is complete"
        ) from e
    prefix = _npz_prefix(files)
    if prefix is None:
        raise UserError(
            f"{p} is not in Google's ViT .npz layout (no 'embedding/kernel' array); "
            "convert it to a timm state dict (.safetensors/.pth) instead"
        )
    _check_npz_depth(model, files, prefix, p)

    heads = _head_prefixes(model)
    head_state = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(heads)}
    try:
        model.load_pretrained(str(p))  # timm detects the prefix itself
    except KeyError as e:
        missing = [k for k in _npz_expected_keys(model, prefix) if k not in files]
        missing = missing or [str(e.args[0]).replace(" is not a file in the archive", "")]
        raise UserError(
            f"{p} lacks arrays that backbone {model_name(model)} needs - missing keys "
            f"({len(missing)}): {_fmt(missing)}; pick the matching backbone.name"
        ) from e
    except (RuntimeError, ValueError) as e:
        raise UserError(
            f"{p} does not match backbone {model_name(model)}: {_first_line(e)} "
            f"(file: {_npz_summary(p, prefix)}; model: width "
            f"{getattr(model, 'embed_dim', '?')}, {_depth(model)} blocks); "
            "pick the matching backbone.name"
        ) from e
    # timm copies the head too when its size happens to match; the head is never pre-trained here.
    model.load_state_dict(head_state, strict=False)
    return sum(1 for k in files if not k.startswith((f"{prefix}head/", f"{prefix}pre_logits/")))


def _npz_prefix(files: set[str]) -> str | None:
    # Same top-level prefixes timm's loader recognises (plain, Flax optimizer, big_vision).
    for prefix in ("", "opt/target/", "params/", "params/img/"):
        if f"{prefix}embedding/kernel" in files:
            return prefix
    return None


def _depth(model: nn.Module) -> int | str:
    blocks = getattr(model, "blocks", None)
    return len(blocks) if blocks is not None else "?"


def _check_npz_depth(model: nn.Module, files: set[str], prefix: str, p: Path) -> None:
    # timm iterates over the model's blocks, so a deeper file would silently load only its first
    # blocks; reject it like an unexpected key in a state dict.
    depth = _depth(model)
    if not isinstance(depth, int):
        return
    pat = re.compile(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/")
    extra = sorted({k for k in files if (m := pat.match(k)) and int(m.group(1)) >= depth})
    if extra:
        n_file = 1 + max(int(pat.match(k).group(1)) for k in extra)
        raise UserError(
            f"{p} has {n_file} encoder blocks but backbone {model_name(model)} has "
            f"{depth} - unexpected keys ({len(extra)}): {_fmt(extra)}; "
            "pick the matching backbone.name"
        )


def _npz_expected_keys(model: nn.Module, prefix: str) -> list[str]:
    """Arrays the paper's ViT .npz layout holds for ``model``; used to list what is missing."""
    keys = [
        f"{prefix}{k}"
        for k in (
            "embedding/kernel",
            "embedding/bias",
            "Transformer/posembed_input/pos_embedding",
            "Transformer/encoder_norm/scale",
            "Transformer/encoder_norm/bias",
        )
    ]
    if getattr(model, "cls_token", None) is not None:
        keys.append(f"{prefix}cls")
    depth = _depth(model)
    for i in range(depth if isinstance(depth, int) else 0):
        b = f"{prefix}Transformer/encoderblock_{i}/"
        keys += [f"{b}LayerNorm_{j}/{s}" for j in (0, 2) for s in ("scale", "bias")]
        keys += [
            f"{b}MultiHeadDotProductAttention_1/{n}/{s}"
            for n in ("query", "key", "value", "out")
            for s in ("kernel", "bias")
        ]
        keys += [f"{b}MlpBlock_3/Dense_{j}/{s}" for j in (0, 1) for s in ("kernel", "bias")]
    return keys


def _npz_summary(p: Path, prefix: str) -> str:
    import numpy as np

    with np.load(p, allow_pickle=False) as npz:
        width = npz[f"{prefix}embedding/kernel"].shape[-1]
        pat = re.compile(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/")
        blocks = {m.group(1) for k in npz.files if (m := pat.match(k))}
    return f"width {width}, {len(blocks)} blocks"


# ----------------------------------------------------------------------------- messages


def _fmt(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
