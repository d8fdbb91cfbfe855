"""The adapter contract, checked for every registered method (one row each, plus variants).

A newly registered method gets every check here by being registered; only its ViT-B/16 parameter
count has to be written into ``VIT_B_ADAPTER_PARAMS`` (the test names the missing entry).
"""

import copy
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from src.adapters import (
    ADAPTERS,
    base,
    branch_modules,
    calibrate,
    count_parameters,
    declared_trainable,
    inject,
    iter_blocks,
    make_config,
    set_branches_enabled,
)
from src.adapters.base import METHOD_MODULES, set_trainable
from src.adapters.sites import backbone_architecture
from src.errors import UserError
from src.network import load_trainable, save_trainable
from src.pace import build_regulariser

# Small settings so that a 2-block ViT at 32 px runs every check in well under a second.
SMALL = {
    "lora_mul_vpt_add": {"rank": 2},
    "lora_add": {"rank": 2},
    "vpt_add": {"rank": 2},
    "glora": {"rank": 2},
    "vera": {"rank": 16},
    "vpt_deep": {"num_tokens": 3},
    "vpt_shallow": {"num_tokens": 3},
}
# Variants that exercise other code paths of a method.
EXTRA_ROWS = [
    ("glora", {"rank": 2, "a": "vector", "b": "scalar", "c": "vector", "d": "scalar", "e": "none"}),
    ("glora", {"rank": 2, "a": "none", "b": "lora", "c": "none", "d": "none", "e": "vector"}),
    ("lora", {"rank": 2, "alpha": 4.0, "targets": ["attn.qkv", "mlp.fc2"]}),
    ("lora_add", {"rank": 2, "blocks": [1]}),
    ("vpt_shallow", {"num_tokens": 2, "blocks": [1]}),
    ("full", {"blocks": [0]}),
]
ROWS = [(name, SMALL.get(name, {})) for name in sorted(ADAPTERS)] + EXTRA_ROWS
ROW_IDS = [f"{n}-{i}" if i >= len(ADAPTERS) else n for i, (n, _) in enumerate(ROWS)]


def pretrained_like(model):
    """timm zero-initialises biases; pre-trained ones are not (GLoRA's b0 ⊙ D needs b0 ≠ 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


def tiny_vit(depth=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    return pretrained_like(
        timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            num_classes=5,
            img_size=32,
            depth=depth,
            **kwargs,
        )
    )


def tiny_swin(seed=0):
    torch.manual_seed(seed)
    return pretrained_like(
        timm.create_model(
            "swin_tiny_patch4_window7_224",
            pretrained=False,
            num_classes=5,
            img_size=32,
            depths=(1, 1, 2, 1),
            embed_dim=24,
            num_heads=(1, 1, 1, 1),
            window_size=2,
        )
    )


def perturb_trainable(model, seed=1):
    """Move every declared trainable tensor away from its init so each one matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def x_batch(n=3):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.fixture(params=ROWS, ids=ROW_IDS)
def row(request):
    return request.param


def adapted(row, model=None):
    """The row's method installed on a tiny ViT (calibrated on one batch if it needs data)."""
    name, fields = row
    model = inject(model if model is not None else tiny_vit(), name, **fields)
    calibrate(model, [(x_batch(4), torch.arange(4))])
    return model


def test_identity_at_init_as_declared(row):
    reference = tiny_vit().eval()
    model = adapted(row, copy.deepcopy(reference)).eval()
    same = torch.equal(model(x_batch()), reference(x_batch()))
    assert same == ADAPTERS[row[0]].impl.identity_at_init


def test_branches_off_is_the_pretrained_model(row):
    reference = tiny_vit().eval()
    model = adapted(row, copy.deepcopy(reference)).eval()
    perturb_trainable(model)
    set_branches_enabled(model, False)
    head = model.get_classifier()
    head.load_state_dict(reference.get_classifier().state_dict())  # the head is not a branch
    torch.testing.assert_close(model(x_batch()), reference(x_batch()), rtol=0, atol=1e-6)


def test_merged_equals_two_paths(row):
    if not ADAPTERS[row[0]].impl.mergeable:
        pytest.skip(f"{row[0]} is not mergeable: it always runs h0 + Δh")
    # float64: some variants (a scalar added to every weight) amplify float32 rounding.
    model = adapted(row).eval().double()
    perturb_trainable(model)
    modules = [m for _, m in branch_modules(model)]
    # The merged pass must not compute Δh on the side: a branch() call there fails the test.
    for module in modules:
        module.branch = _refuse_branch
    merged = model(x_batch().double())
    for module in modules:
        del module.branch  # the class's own branch() again
        module.merge = False
    torch.testing.assert_close(model(x_batch().double()), merged, rtol=1e-10, atol=1e-10)


def _refuse_branch(x, h0):
    raise AssertionError("a merged forward computed the branch separately")


def test_exactly_the_declared_parameters_train(row):
    model = adapted(row).train()
    declared = declared_trainable(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == declared
    perturb_trainable(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    F.cross_entropy(model(x_batch(4)), torch.arange(4)).backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    sizes = dict(model.named_parameters())
    assert changed == {n for n in declared if sizes[n].numel() > 0}  # GRFT: rows of some only


def test_trainable_state_round_trips_through_safetensors(row, tmp_path):
    model = adapted(row).eval()
    perturb_trainable(model)
    path = save_trainable(model, tmp_path / "adapter.safetensors")
    torch.manual_seed(123)  # a different branch init: the loaded file must overwrite it
    rebuilt = inject(tiny_vit(), row[0], **row[1]).eval()  # not calibrated: the file says how
    load_trainable(rebuilt, path)
    torch.testing.assert_close(rebuilt(x_batch()), model(x_batch()), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["pace", "lazy", "fast"])
def test_one_training_step_per_pace_mode(row, mode):
    model = adapted(row).train()
    perturb_trainable(model)
    # Every block noisy (hierarchical), the head's logits not: the consistency term then comes
    # from the method's own branches alone (tests/test_branch_noise.py checks where noise lands).
    regulariser = build_regulariser(
        model, mode, sigma=1.0, lam=1.0, interval=1, schedule="hierarchical"
    )
    model.get_classifier().branch_noise.sigma = 0.0
    regulariser.prepare(8, 5)
    x, y, index = x_batch(4), torch.arange(4), torch.arange(4)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(2):  # fast compares with the previous visit: the second step has a term
        optimizer.zero_grad()
        parts = regulariser(model, x, y, index, step)
        parts.loss.backward()
        optimizer.step()
    assert torch.isfinite(parts.loss)
    # fast compares with the previous step's logits, which the update moved for every method
    assert (parts.consistency > 0) == (mode == "fast" or row[0] != "linear")


# Adapter parameters (head excluded) on vit_base_patch16_224 with each method's defaults; the
# formulas are in docs/adapters.md, which also lists the literature's counts.
VIT_B_ADAPTER_PARAMS = {
    "adapter": 156_768,
    "adaptformer": 156_768,
    "bitfit": 102_912,
    "full": 85_798_656,
    "gps": 165_888,  # top-1 per output neuron + every adapted bias: 2 x 6,912 x 12
    "grft": 257_280,  # greedy fill of 0.30 % x 85,798,656 = 257,396 (all scores equal here)
    "glora": 1_603_776,
    "linear": 0,
    "lora": 294_912,
    "lora_add": 1_557_504,
    "lora_mul_vpt_add": 2_203_104,
    "repadapter": 239_808,
    "ssf": 205_824,
    "vera": 95_232,
    "vpt_add": 645_600,
    "vpt_deep": 460_800,
    "vpt_shallow": 38_400,
}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_parameter_count_on_vit_base(name):
    assert name in VIT_B_ADAPTER_PARAMS, f"add {name}'s ViT-B/16 count to VIT_B_ADAPTER_PARAMS"
    impl = ADAPTERS[name].impl
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
        inject(model, name)
        if impl.needs_calibration(model):  # no data on meta: every gradient statistic = 1
            layers = impl.layers(model)
            scores = [impl.statistic(torch.ones(m.base.weight.shape, device="cpu")) for m in layers]
            impl.select_by_scores(model, model.adapter_config, scores)
            set_trainable(model)
    counts = count_parameters(model)
    assert counts["adapter"] == VIT_B_ADAPTER_PARAMS[name]
    assert counts["trainable"] == VIT_B_ADAPTER_PARAMS[name] + 768 * 100 + 100


# --- Swin: block iteration in depth order, and PACE's hierarchical schedule -------------------

SWIN_ROWS = [(n, f) for n, f in ROWS if not n.startswith("vpt_") and f.get("blocks") != [1]]


def test_swin_blocks_are_listed_stage_by_stage():
    model = tiny_swin()
    assert (backbone_architecture(model), backbone_architecture(tiny_vit())) == ("swin", "vit")
    blocks = iter_blocks(model)
    assert [id(b) for b in blocks] == [id(b) for layer in model.layers for b in layer.blocks]
    assert len(blocks) == 5


@pytest.mark.parametrize("row", SWIN_ROWS, ids=[n for n, _ in SWIN_ROWS])
def test_swin_adapts_and_trains_with_hierarchical_pace(row):
    reference = tiny_swin().eval()
    model = adapted(row, copy.deepcopy(reference)).eval()
    if ADAPTERS[row[0]].impl.identity_at_init:
        torch.testing.assert_close(model(x_batch()), reference(x_batch()), rtol=0, atol=1e-6)
    perturb_trainable(model)
    model.train()
    regulariser = build_regulariser(model, "pace", sigma=0.6, lam=1.0, schedule="hierarchical")
    model.get_classifier().branch_noise.sigma = 0.0  # the consistency is the branches' alone
    parts = regulariser(model, x_batch(2), torch.arange(2), torch.arange(2), 0)
    parts.loss.backward()
    assert torch.isfinite(parts.loss)
    assert (parts.consistency > 0) == (row[0] != "linear")


def test_swin_noise_follows_depth_order():
    model = inject(tiny_swin(), "lora_add", rank=2)
    build_regulariser(model, "pace", sigma=0.6, schedule="hierarchical")
    per_block = [
        sorted({m.branch_noise.sigma for _, m in branch_modules(block)})
        for block in iter_blocks(model)
    ]
    assert per_block == [[pytest.approx(0.6 * (6 - i) / 6)] for i in range(5)]
    assert model.get_classifier().branch_noise.sigma == pytest.approx(0.6 / 6)


def test_vpt_refuses_swin_in_one_line():
    with pytest.raises(UserError, match="vpt_deep' needs a ViT-style backbone"):
        inject(tiny_swin(), "vpt_deep")


# --- Branches outside blocks take the σ of the next block (or the head's after the last) ------


def test_out_of_block_branches_take_the_neighbouring_sigma():
    model = inject(tiny_vit(depth=3), "ssf")
    build_regulariser(model, "pace", sigma=0.9)
    assert model.patch_embed.branch_noise.sigma == 0.0  # block 0's σ under the ViT schedule
    assert model.norm.branch_noise.sigma == pytest.approx(0.9 / 3)  # the head's σ
    assert model.blocks[1].norm1.branch_noise.sigma == pytest.approx(0.9)


# --- Registry and typed configs ---------------------------------------------------------------


def test_every_module_that_registers_a_method_is_loaded():
    """``load_methods`` imports METHOD_MODULES: a method module missing there registers nothing."""
    decorator = re.compile(r"^@register_adapter\(", re.M)
    files = Path(base.__file__).parent.glob("*.py")
    registering = {p.stem for p in files if decorator.search(p.read_text())}
    assert set(METHOD_MODULES) == registering


def test_unknown_field_names_the_method_fields():
    with pytest.raises(UserError, match=r"adapter 'lora' has no field dim; its fields are: .*rank"):
        make_config("lora", dim=4)


def test_unknown_adapter_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown adapter 'loar'.*lora_add.*lora_mul_vpt_add"):
        inject(tiny_vit(), "loar")


@pytest.mark.parametrize(
    "name, fields, message",
    [
        ("lora_add", {"rank": 0}, "rank must be a positive integer"),
        ("adapter", {"dim": 0}, "adapter.dim must be positive"),
        ("glora", {"d": "lora"}, "adapter.d must be one of vector, scalar, none"),
        ("repadapter", {"dim": 5}, "divisible by adapter.groups"),
        ("lora_add", {"blocks": [0, 7]}, r"adapter.blocks \[7\] out of range"),
        ("lora", {"targets": ["attn.nope"]}, "found none of the target layers"),
    ],
)
def test_bad_settings_are_one_line_user_errors(name, fields, message):
    with pytest.raises(UserError, match=message) as info:
        inject(tiny_vit(), name, **fields)
    assert "\n" not in str(info.value)


def test_blocks_subset_adapts_only_those_blocks():
    model = inject(tiny_vit(depth=3), "lora", rank=2, blocks=[0, 2])
    names = {n.split(".")[1] for n, _ in branch_modules(model)}
    assert names == {"0", "2"}


# --- Learning: each method's own parameters fit a batch (the head frozen) --------------------


def test_the_method_alone_fits_a_batch(row):
    """With the head frozen, only the method's parameters can lower the loss — so a method whose
    branch gets no gradient, or whose gradient does not reach the output, fails here."""
    name, fields = row
    if name == "linear":
        pytest.skip("linear probing trains the head alone")
    model = adapted((name, {**fields, "train_head": False})).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, name
    x, y = x_batch(6), torch.arange(6) % 5
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Prompt tokens on a random 2-block ViT learn slowest (about −7 % in 20 steps); a method
    # whose gradient never reaches its parameters stays at 100 %.
    assert losses[-1] < 0.95 * losses[0], (name, losses)
