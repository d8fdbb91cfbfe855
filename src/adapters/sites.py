"""Where adapters go: the blocks of each architecture family and the named sites inside them.

Families (timm): ``vit`` keeps its transformer blocks in ``model.blocks``; ``swin`` keeps them in
``model.layers[i].blocks``, stage after stage. ``iter_blocks`` lists them in depth order for both
``inject`` and ``src.pace.noise.attach_noise`` (which gives block k its σ_k).

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

from torch import nn

from src.adapters.configs import AdapterConfig, LinearSitesConfig
from src.errors import UserError

FAMILIES = ("vit", "swin")


def backbone_family(model: nn.Module) -> str:
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
    if backbone_family(model) == "vit":
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


def block_linears(model: nn.Module, config: LinearSitesConfig) -> list[tuple[str, nn.Module]]:
    targets = list(config.targets)

    def keep(rel: str, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) and any(
            rel == t or rel.endswith("." + t) for t in targets
        )

    found = _inside_blocks(model, config, keep)
    if not found:
        raise UserError(
            f"adapter '{config.name}' found none of the target layers {targets} in the blocks "
            f"of {type(model).__name__}; set adapter.targets to names such as {BLOCK_EXAMPLE}"
        )
    return found


BLOCK_EXAMPLE = "[attn.qkv, attn.proj, mlp.fc1, mlp.fc2]"


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
