"""Where adapters go: the blocks of each architecture family and the named sites inside them.

Families (timm): ``vit`` keeps its transformer blocks in ``model.blocks``; ``swin`` keeps them in
``model.layers[i].blocks``, stage after stage. Families (Hugging Face transformers, wrapped by
``src.backbones.text.TextModel``): ``encoder`` (BERT/RoBERTa) keeps them in
``base_model.encoder.layer``, ``decoder`` (Phi-3/Llama) in ``base_model.layers``. ``iter_blocks``
lists them in depth order for both ``inject`` and ``src.pace.noise.attach_noise`` (which gives
block k its σ_k).

Target names: the ViT names of ``BLOCK_LINEARS`` (``attn.qkv``, ``attn.proj``, ``mlp.fc1``,
``mlp.fc2``) mean the roles "query/key/value, attention output, MLP in, MLP out" and are translated
to a text family's own linears (one log line says which); a family's own names (``query``,
``attention.self.value``, ``qkv_proj``, ``o_proj`` …) are used as they are.

Sites a method can ask for:

- ``block_linears`` — the linear layers of the blocks named by ``config.targets``;
- ``block_mlps`` — each block's MLP path *including* its pre-norm, so a branch sees the block's
  un-normalised residual stream (AdaptFormer) as well as the MLP output (sequential adapter);
- ``block_norms`` — the LayerNorms inside the blocks;
- ``embed`` / ``final_norm`` — the patch embedding (output channel-last) and the last norm;
- ``iter_blocks`` itself — whole blocks (VPT prompt tokens are inserted before block k);
- ``backbone_leaves`` — every Linear/LayerNorm outside the head (full fine-tuning, BitFit).
"""

from __future__ import annotations

import logging

from torch import nn

from src.adapters.schemas import BLOCK_LINEARS, AdapterConfig, LinearSitesConfig
from src.errors import UserError

log = logging.getLogger(__name__)

# The architectures whose blocks and sites this module knows: timm's ViT and Swin, and the two
# transformers layouts (``backbone.family`` of a text backbone, src/backbones/text.py).
TEXT_ARCHITECTURES = ("encoder", "decoder")
ARCHITECTURES = ("vit", "swin", *TEXT_ARCHITECTURES)

# What the ViT role names (BLOCK_LINEARS) are in each text block layout; a layout is recognised by
# the first name of its "attn.qkv" entry being a module of the block.
TEXT_ROLES = {
    "bert": {  # BERT, RoBERTa (the paper's GLUE backbone), MiniLM
        "attn.qkv": ["attention.self.query", "attention.self.key", "attention.self.value"],
        "attn.proj": ["attention.output.dense"],
        "mlp.fc1": ["intermediate.dense"],
        "mlp.fc2": ["output.dense"],
    },
    "phi3": {  # Phi-3: fused qkv and gate/up projections
        "attn.qkv": ["self_attn.qkv_proj"],
        "attn.proj": ["self_attn.o_proj"],
        "mlp.fc1": ["mlp.gate_up_proj"],
        "mlp.fc2": ["mlp.down_proj"],
    },
    "llama": {  # Llama, Mistral, SmolLM2: separate projections
        "attn.qkv": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        "attn.proj": ["self_attn.o_proj"],
        "mlp.fc1": ["mlp.gate_proj", "mlp.up_proj"],
        "mlp.fc2": ["mlp.down_proj"],
    },
}

# Methods whose sites exist only in timm vision blocks: refused on a text family in one line.
VISION_ONLY = {
    "vpt_deep": "it inserts prompt tokens between timm ViT blocks",
    "vpt_shallow": "it inserts prompt tokens between timm ViT blocks",
    "adapter": "it wraps a timm block's norm2 + mlp path",
    "adaptformer": "it wraps a timm block's norm2 + mlp path",
    "gps": "its scoring pass is written for image classification",
    "grft": "its scoring pass is written for image classification",
}


def check_method_fits(model: nn.Module, name: str) -> None:
    """Refuse, in one line, a method whose sites a text backbone does not have."""
    family = getattr(model, "text_family", None)
    if family in TEXT_ARCHITECTURES and name in VISION_ONLY:
        raise UserError(
            f"adapter '{name}' does not apply to a transformers {family} backbone: "
            f"{VISION_ONLY[name]}; use a method on linear layers (lora, lora_add, "
            "lora_mul_vpt_add, vpt_add, glora, vera, repadapter, ssf, bitfit, full, linear)"
        )


def text_blocks(model: nn.Module) -> list[nn.Module]:
    """The layers of a wrapped transformers model (``TextModel``): encoder or decoder stack."""
    base = model.hf.base_model
    if model.text_family == "encoder":
        return list(base.encoder.layer)
    return list(base.layers)


def backbone_architecture(model: nn.Module) -> str:
    """Which of ``ARCHITECTURES`` ``model`` is, from the modules it holds."""
    text_family = getattr(model, "text_family", None)
    if text_family in TEXT_ARCHITECTURES:
        return text_family
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) > 0:
        return "vit"
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Sequential | nn.ModuleList) and all(
        hasattr(layer, "blocks") for layer in layers
    ):
        return "swin"
    raise UserError(
        f"{type(model).__name__} has neither 'blocks' (a timm ViT) nor 'layers[i].blocks' "
        "(a timm Swin); choose a ViT or Swin backbone"
    )


def iter_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model`` in depth order."""
    architecture = backbone_architecture(model)
    if architecture in TEXT_ARCHITECTURES:
        return text_blocks(model)
    if architecture == "vit":
        return list(model.blocks)
    return [block for layer in model.layers for block in layer.blocks]


def selected_blocks(model: nn.Module, config: AdapterConfig) -> list[tuple[int, nn.Module]]:
    blocks = iter_blocks(model)
    if config.blocks is None:
        return list(enumerate(blocks))
    bad = [k for k in config.blocks if not 0 <= k < len(blocks)]
    if bad:
        raise UserError(
            f"adapter.blocks {bad} out of range: {type(model).__name__} has blocks "
            f"0..{len(blocks) - 1}"
        )
    return [(k, blocks[k]) for k in sorted(set(config.blocks))]


def qualified_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _inside_blocks(model, config, keep) -> list[tuple[str, nn.Module]]:
    names = qualified_names(model)
    found = []
    for _, block in selected_blocks(model, config):
        for rel, module in block.named_modules():
            if rel and keep(rel, module):
                found.append((names[id(module)], module))
    return found


def text_layout(block: nn.Module) -> str | None:
    """Which entry of TEXT_ROLES a transformers block follows (None: not a known layout)."""
    names = {rel for rel, _ in block.named_modules()}
    for layout, roles in TEXT_ROLES.items():
        if all(name in names for role in roles.values() for name in role):
            return layout
    return None


def translate_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """ViT role names -> the text block's own linears; other names unchanged."""
    is_text = backbone_architecture(model) in TEXT_ARCHITECTURES
    if not is_text or not set(targets) & set(BLOCK_LINEARS):
        return targets
    layout = text_layout(iter_blocks(model)[0])
    if layout is None:
        return targets
    roles = TEXT_ROLES[layout]
    translated = [name for t in targets for name in roles.get(t, [t])]
    log.info("adapter.targets %s are the %s block's %s", targets, layout, translated)
    return translated


def block_linears(model: nn.Module, config: LinearSitesConfig) -> list[tuple[str, nn.Module]]:
    """The Linears of the selected blocks whose block-relative name is a target.

    A target matches a module named exactly so; a target that names no module of a block exactly
    matches by suffix (``qkv`` for ``attn.qkv``). Exact names come first because in BERT
    ``output.dense`` (MLP out) is also a suffix of ``attention.output.dense``.
    """
    targets = translate_targets(model, list(config.targets))
    blocks = selected_blocks(model, config)
    exact = {t for t in targets for _, b in blocks for rel, _ in b.named_modules() if rel == t}

    def keep(rel: str, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) and any(
            rel == t or (t not in exact and rel.endswith("." + t)) for t in targets
        )

    found = _inside_blocks(model, config, keep)
    if not found:
        raise UserError(
            f"adapter '{config.name}' found none of the target layers {targets} in the blocks "
            f"of {type(model).__name__}; set adapter.targets to names such as "
            f"{block_example(model)}"
        )
    return found


BLOCK_EXAMPLE = "[attn.qkv, attn.proj, mlp.fc1, mlp.fc2]"


def block_example(model: nn.Module) -> str:
    """Target names to suggest for this model's blocks."""
    if backbone_architecture(model) in TEXT_ARCHITECTURES:
        layout = text_layout(iter_blocks(model)[0])
        if layout is not None:
            names = [n for role in TEXT_ROLES[layout].values() for n in role]
            return f"[{', '.join(names)}]"
    return BLOCK_EXAMPLE


def block_norms(model: nn.Module, config: AdapterConfig) -> list[tuple[str, nn.Module]]:
    return _inside_blocks(model, config, lambda rel, m: isinstance(m, nn.LayerNorm))


def block_mlps(model: nn.Module, config: AdapterConfig) -> list[tuple[str, nn.Module]]:
    """Each block's ``mlp`` fused with its ``norm2``: ``Sequential(norm2, mlp)`` replaces ``mlp``.

    timm's ViT and Swin blocks compute ``x + drop_path(mlp(norm2(x)))``; with ``norm2`` made an
    identity the wrapped ``mlp`` receives the un-normalised stream ``x``. Returns the ``mlp`` sites
    after fusing (the caller wraps them).
    """
    names = qualified_names(model)
    found = []
    for _, block in selected_blocks(model, config):
        if not (isinstance(getattr(block, "mlp", None), nn.Module) and hasattr(block, "norm2")):
            raise UserError(
                f"adapter '{config.name}' needs blocks with 'norm2' and 'mlp' (timm ViT/Swin); "
                f"{type(block).__name__} has none"
            )
        fused = nn.Sequential(block.norm2, block.mlp)
        block.norm2 = nn.Identity()
        block.mlp = fused
        found.append((names[id(block)] + ".mlp", fused))
    return found


def embed(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [("patch_embed", model.patch_embed)] if hasattr(model, "patch_embed") else []


def final_norm(model: nn.Module) -> list[tuple[str, nn.Module]]:
    norm = getattr(model, "norm", None)
    return [("norm", norm)] if isinstance(norm, nn.LayerNorm) else []


def head_module_ids(model: nn.Module) -> set[int]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return {id(m) for m in head.modules()} if isinstance(head, nn.Module) else set()


def backbone_leaves(model: nn.Module, config: AdapterConfig, types: tuple[type, ...]):
    """Every module of ``types`` outside the head; in-block ones only in the selected blocks."""
    head = head_module_ids(model)
    all_blocks = iter_blocks(model)
    chosen = {id(b) for _, b in selected_blocks(model, config)}
    in_unchosen = {id(m) for b in all_blocks if id(b) not in chosen for m in b.modules()}
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, types) and id(m) not in head and id(m) not in in_unchosen
    ]
