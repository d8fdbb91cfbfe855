"""The adapter contract: zero-init identity, merge == base + branch, parameter counts, freezing."""

import copy

import pytest
import timm
import torch
from torch import nn

from src.adapters import (
    ADAPTERS,
    AdaptedLinear,
    adapted_layers,
    count_parameters,
    inject,
    set_branches_enabled,
)
from src.errors import UserError


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, depth=2, **kwargs
    )


def randomise_adapters(model):
    """Give every zero-initialised adapter tensor a non-zero value so branches do something."""
    with torch.no_grad():
        for _, layer in adapted_layers(model):
            for p in layer.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.1)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_zero_init_model_equals_pretrained(name):
    model = tiny_vit().eval()
    reference = copy.deepcopy(model)
    inject(model, name, rank=4)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_merged_forward_equals_base_plus_branch(name):
    model = inject(tiny_vit(), name, rank=4)
    randomise_adapters(model)
    x = torch.randn(2, 7, 192)
    for _, layer in adapted_layers(model):
        x_in = torch.randn(2, 7, layer.in_features)
        separate = layer.base(x_in) + layer.branch(x_in)
        torch.testing.assert_close(layer(x_in), separate, rtol=1e-5, atol=1e-5)
    assert x.shape[-1] == 192


def test_lora_mul_vpt_add_matches_spec_formula():
    torch.manual_seed(1)
    base = nn.Linear(6, 4)
    layer = ADAPTERS["lora_mul_vpt_add"](base, rank=3)
    with torch.no_grad():
        for p in (layer.d_w, layer.delta_b, layer.d_p):
            p.normal_()
    w0, b0 = base.weight, base.bias
    x = torch.randn(5, 6)
    expected_branch = (
        x @ (w0 * (layer.d_w @ layer.u_w)).T
        + (w0 @ (layer.d_p @ layer.u_p)).squeeze(-1)
        + b0 * layer.delta_b
    )
    torch.testing.assert_close(layer.branch(x), expected_branch)
    w, b = layer.merged_weight_and_bias()
    torch.testing.assert_close(w, w0 * (1 + layer.d_w @ layer.u_w))
    torch.testing.assert_close(
        b, (w0 @ (layer.d_p @ layer.u_p)).squeeze(-1) + b0 * (1 + layer.delta_b)
    )


def test_lora_add_and_vpt_add_formulas():
    torch.manual_seed(2)
    base = nn.Linear(6, 4)
    lora = ADAPTERS["lora_add"](base, rank=2)
    vpt = ADAPTERS["vpt_add"](copy.deepcopy(base), rank=2)
    with torch.no_grad():
        for p in (lora.d_w, lora.delta_b, vpt.d_p):
            p.normal_()
    x = torch.randn(5, 6)
    torch.testing.assert_close(lora.branch(x), x @ (lora.d_w @ lora.u_w).T + lora.delta_b)
    prompt = (vpt.base.weight @ (vpt.d_p @ vpt.u_p)).squeeze(-1)
    torch.testing.assert_close(vpt(x), base(x) + prompt)


def test_paper_parameter_count_on_vit_base():
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
        inject(model, "lora_mul_vpt_add", rank=10)
    counts = count_parameters(model)
    assert counts["adapter"] == 2_203_104
    assert counts["trainable"] == 2_203_104 + 768 * 100 + 100


def test_only_adapters_and_head_are_trainable():
    model = inject(tiny_vit(), "lora_add", rank=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all(
        n.startswith("head.") or ".d_" in n or ".u_" in n or "delta_b" in n for n in trainable
    )
    layers = dict(adapted_layers(model))
    assert len(layers) == 2 * 4  # every linear of every block
    assert all(isinstance(m, AdaptedLinear) for m in layers.values())


def test_branches_can_be_switched_off():
    model = tiny_vit().eval()
    reference = copy.deepcopy(model)
    inject(model, "lora_mul_vpt_add", rank=2)
    randomise_adapters(model)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(model(x), reference(x))
    set_branches_enabled(model, False)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-6)


def test_unknown_adapter_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown adapter 'loar'.*lora_add.*lora_mul_vpt_add"):
        inject(tiny_vit(), "loar")


def test_bad_rank_is_rejected():
    with pytest.raises(UserError, match="rank must be a positive integer"):
        inject(tiny_vit(), "lora_add", rank=0)
