"""Each method computes the formula its docstring (and docs/adapters.md) states."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from src.adapters import inject, make_config
from src.adapters.bottleneck import RepAdapter
from src.adapters.glora import LoRAAdd, LoRAMulVPTAdd, VPTAdd
from src.adapters.lora import LoRA
from tests.test_adapters import perturb_trainable, tiny_vit, x_batch


def randomised(layer):
    with torch.no_grad():
        for p in layer.parameters():
            if p.requires_grad:
                p.normal_()
    return layer


def test_lora_mul_vpt_add_matches_the_paper_formula():
    torch.manual_seed(1)
    base = nn.Linear(6, 4)
    layer = randomised(LoRAMulVPTAdd(base, make_config("lora_mul_vpt_add", rank=3)))
    w0, b0 = base.weight, base.bias
    x = torch.randn(5, 6)
    prompt = (w0 @ (layer.d_p @ layer.u_p)).squeeze(-1)
    expected = x @ (w0 * (layer.d_w @ layer.u_w)).T + prompt + b0 * layer.delta_b
    torch.testing.assert_close(layer.branch(x, base(x)), expected)
    w, b = layer.merged_weight_and_bias()
    torch.testing.assert_close(w, w0 * (1 + layer.d_w @ layer.u_w))
    torch.testing.assert_close(b, prompt + b0 * (1 + layer.delta_b))


def test_lora_add_and_vpt_add_formulas():
    torch.manual_seed(2)
    base = nn.Linear(6, 4)
    lora = randomised(LoRAAdd(base, make_config("lora_add", rank=2)))
    vpt = randomised(VPTAdd(copy.deepcopy(base), make_config("vpt_add", rank=2)))
    x = torch.randn(5, 6)
    torch.testing.assert_close(lora.branch(x, None), x @ (lora.d_w @ lora.u_w).T + lora.delta_b)
    prompt = (vpt.base.weight @ (vpt.d_p @ vpt.u_p)).squeeze(-1)
    torch.testing.assert_close(vpt(x), base(x) + prompt)


def test_lora_mul_vpt_add_is_one_glora_choice():
    choice = dict(rank=3, a="lora", b="none", c="lora", d="vector", e="none")
    torch.manual_seed(5)
    preset = inject(tiny_vit(), "lora_mul_vpt_add", rank=3).eval()
    torch.manual_seed(5)
    glora = inject(tiny_vit(), "glora", **choice).eval()
    preset_params = dict(preset.named_parameters())
    glora_params = dict(glora.named_parameters())
    assert len(preset_params) == len(glora_params)
    for (_, a), (_, b) in zip(preset_params.items(), glora_params.items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same init, same order
    perturb_trainable(preset)
    perturb_trainable(glora)
    torch.testing.assert_close(glora(x_batch()), preset(x_batch()), rtol=0, atol=0)


def test_lora_scale_is_alpha_over_rank():
    torch.manual_seed(3)
    base = nn.Linear(6, 9)
    layer = randomised(LoRA(base, make_config("lora", rank=2, alpha=8.0)))
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), base(x) + 4.0 * x @ (layer.lora_b @ layer.lora_a).T)


def test_repadapter_is_a_linear_adapter_before_the_layer():
    torch.manual_seed(4)
    base = nn.Linear(8, 5)
    layer = randomised(RepAdapter(base, make_config("repadapter", dim=4, groups=2, scale=0.5)))
    x = torch.randn(3, 8)
    hidden = x @ layer.down.T + layer.down_bias  # dense 8 -> 4
    # grouped 4 -> 8: outputs 0..3 read hidden 0..1, outputs 4..7 read hidden 2..3
    up = torch.cat([hidden[:, :2] @ layer.up[:4].T, hidden[:, 2:] @ layer.up[4:].T], dim=1)
    adapted_input = x + 0.5 * (up + layer.up_bias)
    torch.testing.assert_close(layer(x), base(adapted_input))


def test_adaptformer_reads_the_stream_and_adapter_the_mlp_output():
    for name in ("adaptformer", "adapter"):
        model = tiny_vit(depth=1).eval()
        block = copy.deepcopy(model.blocks[0])
        inject(model, name, dim=4)
        perturb_trainable(model)
        wrapped = model.blocks[0].mlp
        x = torch.randn(2, 5, 192)
        mlp_out = block.mlp(block.norm2(x))
        bottleneck_in = x if name == "adaptformer" else mlp_out
        delta = wrapped.scale * wrapped.up(wrapped.act(wrapped.down(bottleneck_in)))
        torch.testing.assert_close(model.blocks[0].mlp(model.blocks[0].norm2(x)), mlp_out + delta)


def test_ssf_scales_and_shifts_channels():
    model = inject(tiny_vit(depth=1), "ssf").eval()
    qkv = model.blocks[0].attn.qkv
    x = torch.randn(2, 5, 192)
    torch.testing.assert_close(qkv(x), qkv.gamma * qkv.base(x) + qkv.beta)
    torch.testing.assert_close(qkv.gamma.mean(), torch.tensor(1.0), atol=0.01, rtol=0)


def test_vera_projections_are_shared_and_regenerated_from_the_seed():
    a = inject(tiny_vit(), "vera", rank=16, projection_seed=3)
    b = inject(tiny_vit(), "vera", rank=16, projection_seed=3)
    qkv, fc2 = a.blocks[0].attn.qkv, a.blocks[1].mlp.fc2
    assert qkv.shared is fc2.shared is a.vera_projections
    torch.testing.assert_close(a.vera_projections.a, b.vera_projections.a, rtol=0, atol=0)
    assert "vera_projections.a" not in a.state_dict()  # regenerated, never saved
    with torch.no_grad():
        fc2.lambda_b.normal_()
    x = torch.randn(2, 5, 768)
    proj_a, proj_b = fc2.shared.a[:, :768], fc2.shared.b[:192]
    expected = fc2.base(x) + fc2.lambda_b * ((fc2.lambda_d * (x @ proj_a.T)) @ proj_b.T)
    torch.testing.assert_close(fc2(x), expected)


def test_vpt_deep_blocks_see_their_prompts_and_hand_back_the_usual_tokens():
    model = inject(tiny_vit(), "vpt_deep", num_tokens=3).eval()
    seen = []
    model.blocks[1].base.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o)))
    tokens = model.forward_features(x_batch(2))
    assert seen[0][0] == (2, 1 + 3 + 4, 192)  # class token, 3 prompts, 2x2 patches
    assert tokens.shape == (2, 1 + 4, 192)
    prompts_in = seen[0][1]
    assert not torch.equal(prompts_in[:, 1:4], model.blocks[1].prompts.expand(2, -1, -1))


def test_vpt_shallow_prompts_stay_until_the_last_block():
    model = inject(tiny_vit(depth=3), "vpt_shallow", num_tokens=2).eval()
    shapes = []
    for block in model.blocks:  # blocks 0 (inserts) and 2 (strips) are wrapped, block 1 is not
        inner = getattr(block, "base", block)
        inner.register_forward_hook(lambda m, i, o: shapes.append(i[0].shape[1]))
    assert model.forward_features(x_batch(1)).shape[1] == 5
    assert shapes == [7, 7, 7]


def test_bitfit_trains_every_backbone_bias():
    model = inject(tiny_vit(depth=1), "bitfit")
    adapter = {n for n, p in model.named_parameters() if p.requires_grad and "head" not in n}
    biases = 6 + 1 + 1  # qkv, proj, fc1, fc2, norm1, norm2; final norm; patch-embedding conv
    assert len(adapter) == biases
    assert "patch_embed.proj.parametrizations.bias.0.delta" in adapter


def test_full_trains_a_delta_for_every_backbone_tensor():
    model = inject(tiny_vit(depth=1), "full")
    counts = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    reference = tiny_vit(depth=1)
    assert counts == sum(p.numel() for p in reference.parameters())
    assert F.mse_loss(model(x_batch()), reference(x_batch())) == 0
