"""transformers backbones on the branch contract: blocks and sites per family, and PACE's maths
(noise only on branches, schedule by depth, merged ≡ unmerged, exact consistency) on tiny
real-format BERT/RoBERTa encoders and Phi-3/Llama decoders built from local folders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.adapters import branch_modules, inject, iter_blocks
from src.backbones.text import build_text_backbone, load_tokenizer
from src.errors import UserError
from src.pace import PACE, build_regulariser, paired_batch, sigma_schedule
from src.pace.noise import noise_modules
from src.text.objectives import IGNORE, CausalLM, Regression
from tests.text_models import save_tiny_decoder, save_tiny_encoder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_models")
    return {
        "bert": save_tiny_encoder(root / "bert", "bert", layers=3),
        "roberta": save_tiny_encoder(root / "roberta", "roberta", layers=3),
        "phi3": save_tiny_decoder(root / "phi3", "phi3", layers=3),
        "llama": save_tiny_decoder(root / "llama", "llama", layers=2),
    }


def encoder(folders, kind="roberta", num_classes=3, objective="classification"):
    torch.manual_seed(0)
    return build_text_backbone(None, num_classes, objective, "encoder", path=str(folders[kind]))


def decoder(folders, kind="phi3"):
    torch.manual_seed(0)
    return build_text_backbone(None, 0, "causal_lm", "decoder", path=str(folders[kind]))


def batch(folders, kind, texts):
    tok = load_tokenizer(None, str(folders[kind]))
    enc = tok(texts, padding=True, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)


TEXTS = ["the movie was very good", "a terrible plot and bad actor", "it is great"]


def adapted_names(model):
    return sorted(
        name.split("layer.")[-1].split("layers.")[-1] for name, _ in branch_modules(model)
    )


# ---------------------------------------------------------------- blocks and sites per family


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_encoder_blocks_and_paper_glue_sites(folders, kind):
    model = inject(encoder(folders, kind), "lora", targets=["query", "value"], rank=2)
    assert len(iter_blocks(model)) == 3
    assert iter_blocks(model)[1] is model.hf.base_model.encoder.layer[1]
    assert adapted_names(model) == sorted(
        f"{k}.attention.self.{t}" for k in range(3) for t in ("query", "value")
    )


def test_output_dense_means_the_mlp_output_only(folders):
    """``output.dense`` is also a suffix of ``attention.output.dense``: exact names win."""
    model = inject(encoder(folders), "lora", targets=["output.dense"], rank=2)
    assert adapted_names(model) == [f"{k}.output.dense" for k in range(3)]


def test_vit_role_names_translate_to_each_layout(folders):
    bert = inject(encoder(folders, "bert"), "lora_add", rank=2)  # default: the 4 ViT roles
    assert {n.split(".", 1)[1] for n in adapted_names(bert)} == {
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    }
    phi3 = inject(decoder(folders, "phi3"), "lora_add", rank=2)
    assert {n.split(".", 1)[1] for n in adapted_names(phi3)} == {
        "self_attn.qkv_proj",
        "self_attn.o_proj",
        "mlp.gate_up_proj",
        "mlp.down_proj",
    }
    llama = inject(decoder(folders, "llama"), "lora", rank=2)  # lora's default: attn.qkv
    assert {n.split(".", 1)[1] for n in adapted_names(llama)} == {
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
    }


def test_phi3_native_targets_and_decoder_blocks(folders):
    model = inject(decoder(folders), "lora", targets=["qkv_proj", "o_proj"], rank=4)
    assert iter_blocks(model)[2] is model.hf.model.layers[2]
    assert len(adapted_names(model)) == 6
    assert model.get_classifier() is model.hf.lm_head


@pytest.mark.parametrize(
    "method", ["lora_mul_vpt_add", "vpt_add", "glora", "vera", "repadapter", "bitfit", "full"]
)
def test_linear_methods_install_on_text_blocks_and_start_at_pretrained(folders, method):
    x = batch(folders, "roberta", TEXTS)
    plain = encoder(folders).eval()
    model = inject(encoder(folders), method).eval()
    torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=1e-5)
    assert any(p.requires_grad for n, p in model.named_parameters() if "classifier" not in n)


@pytest.mark.parametrize(
    "method,family", [("vpt_deep", "decoder"), ("adaptformer", "encoder"), ("grft", "encoder")]
)
def test_methods_without_text_sites_are_refused_in_one_line(folders, method, family):
    model = decoder(folders) if family == "decoder" else encoder(folders)
    with pytest.raises(UserError, match=f"adapter '{method}' does not apply .* {family}") as err:
        inject(model, method)
    assert "\n" not in str(err.value)


def test_unknown_target_names_suggest_the_family_names(folders):
    with pytest.raises(UserError, match=r"names such as \[self_attn.qkv_proj, self_attn.o_proj"):
        inject(decoder(folders), "lora", targets=["attn.nothing"])


# ---------------------------------------------------------------- PACE's noise and schedule


def test_schedule_by_depth_with_the_head_as_block_L(folders):
    model = inject(encoder(folders), "lora", targets=["query", "value"], rank=2)
    build_regulariser(model, "pace", sigma=0.9, lam=1.0)
    expected = sigma_schedule(0.9, 3)
    for k, block in enumerate(iter_blocks(model)):
        assert {layer.branch_noise.sigma for _, layer in branch_modules(block)} == {expected[k]}
    assert model.get_classifier().branch_noise.sigma == pytest.approx(0.9 / 3)


def test_noise_multiplies_the_branch_only(folders):
    """In training, a site outputs h0 + z ⊙ Δh with z per sample and channel: h0 untouched."""
    model = inject(decoder(folders), "lora", targets=["qkv_proj"], rank=2)
    build_regulariser(model, "pace", sigma=1.0, lam=1.0)
    site = model.hf.model.layers[1].self_attn.qkv_proj
    torch.nn.init.normal_(site.lora_b)
    x = torch.randn(2, 5, site.in_features)
    h0 = site.base(x)
    delta = site.branch(x, h0)
    site.train()
    out = site(x)
    z = (out - h0) / delta
    torch.testing.assert_close(z, z[:, :1].expand_as(z), atol=1e-3, rtol=1e-3)  # one z per channel
    assert (z - 1).abs().mean() > 0.1  # really noisy
    torch.nn.init.zeros_(site.lora_b)  # Δh = 0: the noisy output is exactly the frozen one
    torch.testing.assert_close(site(x), h0, atol=0, rtol=0)


def test_merged_equals_unmerged(folders):
    model = inject(encoder(folders, "bert"), "lora_mul_vpt_add", rank=2).eval()
    for _, layer in branch_modules(model):
        for p in layer.branch_parameters():
            torch.nn.init.normal_(p[1], std=0.05)
    x = batch(folders, "bert", TEXTS)
    merged = model(x)
    for _, layer in branch_modules(model):
        layer.merge = False
    torch.testing.assert_close(model(x), merged, atol=1e-5, rtol=1e-5)


def test_pace_consistency_is_exact_on_an_encoder(folders):
    model = inject(encoder(folders), "lora", targets=["query", "value"], rank=2)
    pace = build_regulariser(model, "pace", sigma=0.8, lam=0.3)
    for _, layer in branch_modules(model):
        torch.nn.init.normal_(layer.lora_b, std=0.1)
    model.train()
    x, y = batch(folders, "roberta", TEXTS), torch.tensor([0, 2, 1])
    torch.manual_seed(5)
    parts = pace(model, x, y, torch.arange(3), step=0)
    torch.manual_seed(5)
    with paired_batch(model):
        f1, f2 = model(torch.cat([x, x])).chunk(2)
    consistency = (f1 - f2).pow(2).sum(-1).mean()
    assert consistency > 0
    torch.testing.assert_close(parts.ce, F.cross_entropy(f1, y))
    torch.testing.assert_close(parts.consistency, consistency)
    torch.testing.assert_close(parts.loss, F.cross_entropy(f1, y) + 0.3 * consistency)
    parts.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("mode", ["lazy", "fast"])
def test_lazy_and_fast_train_a_regression_encoder(folders, mode):
    model = inject(encoder(folders, "bert", objective="regression"), "lora", targets=["query"])
    reg = build_regulariser(model, mode, sigma=0.5, lam=1.0, objective=Regression())
    reg.prepare(num_train=3, num_classes=1)
    model.train()
    x, y = batch(folders, "bert", TEXTS), torch.tensor([0.5, 4.0, 2.5])
    consistency = []
    for step in range(2):
        parts = reg(model, x, y, torch.arange(3), step)
        parts.loss.backward()
        consistency.append(parts.consistency.item())
    assert parts.logits.shape[-1] == 1
    # lazy: PACE (half batch) on step 0, one plain pass on step 1; fast: nothing seen on step 0
    assert (consistency[0] > 0, consistency[1] > 0) == (
        (True, False) if mode == "lazy" else (False, True)
    )
    if mode == "fast":
        assert reg.history.shape == (3, 1)


# ---------------------------------------------------------------- the LM objective


def test_causal_lm_loss_is_transformers_own_answer_only_loss(folders):
    model = decoder(folders).eval()
    x = batch(folders, "phi3", ["2 + 3 = 5 #### 5"])
    labels = x[:, 0].clone()
    labels[:, :4] = IGNORE  # the prompt
    logits = model(x)
    expected = model.hf(input_ids=x[:, 0], attention_mask=x[:, 1], labels=labels).loss
    torch.testing.assert_close(CausalLM().loss(logits, labels), expected)


def test_causal_lm_distance_is_the_mean_over_answer_tokens():
    a = torch.zeros(1, 4, 3)
    b = torch.zeros(1, 4, 3)
    b[0, 0] = 10.0  # predicts token 1 (prompt): ignored
    b[0, 1] = 1.0  # predicts token 2 (answer): 3
    b[0, 2, 0] = 2.0  # predicts token 3 (answer): 4
    b[0, 3] = 7.0  # the last position predicts nothing
    labels = torch.tensor([[IGNORE, IGNORE, 8, 9]])
    assert CausalLM().distance(a, b, labels).item() == pytest.approx((3 + 4) / 2)


def test_pace_on_a_decoder_perturbs_all_blocks_but_the_first(folders):
    model = inject(decoder(folders), "lora", targets=["qkv_proj", "o_proj"], rank=2)
    build_regulariser(model, "pace", sigma=0.6, lam=1.0, objective=CausalLM())
    sigmas = [m.sigma for m in noise_modules(model)]
    assert sigmas[:2] == [0.0, 0.0] and sigmas[2] == pytest.approx(0.6)
    x = batch(folders, "phi3", ["2 + 3 = 5", "4 + 4 = 8"])
    labels = torch.where(x[:, 1].bool(), x[:, 0], IGNORE)
    for _, layer in branch_modules(model):
        torch.nn.init.normal_(layer.lora_b, std=0.1)
    parts = PACE(0.5, objective=CausalLM())(model.train(), x, labels, torch.arange(2), 0)
    assert parts.consistency > 0 and torch.isfinite(parts.loss)


# ---------------------------------------------------------------- where the model comes from


def test_offline_without_the_model_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(UserError) as err:
        build_text_backbone("roberta-base", 2, path=None)
    message = str(err.value)
    assert "'roberta-base'" in message and "backbone.path=" in message and "\n" not in message


def test_random_weights_from_the_folder_config(folders):
    torch.manual_seed(1)
    model = build_text_backbone(
        None, 2, path=str(folders["roberta"]), weights="random", kwargs={"num_hidden_layers": 1}
    )
    assert len(iter_blocks(model)) == 1
    pretrained = encoder(folders)
    w = model.hf.roberta.embeddings.word_embeddings.weight
    assert not torch.equal(w, pretrained.hf.roberta.embeddings.word_embeddings.weight)


def test_a_missing_folder_names_the_key(tmp_path):
    with pytest.raises(UserError, match="backbone.path .* does not exist"):
        build_text_backbone(None, 2, path=str(tmp_path / "nothing"))
