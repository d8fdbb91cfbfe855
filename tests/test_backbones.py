"""Backbone construction and weight loading (.npz / .safetensors / .pth) on tiny ViTs."""

import argparse
import fractions
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from src.backbones import build_backbone, load_weights
from src.backbones.sources import resolve_weights
from src.data.synthetic import write_vtab_task
from src.errors import UserError

NAME = "vit_tiny_patch16_224"  # 12 blocks, width 192, 3 heads
SIZE = 32  # 2x2 patch grid keeps every forward pass cheap


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two torch threads on two shared cores thrash while another job runs (5x slower model init).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = build_backbone(NAME, num_classes=7, img_size=SIZE).eval()
    with torch.no_grad():  # non-default values everywhere, so a skipped tensor cannot go unnoticed
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _features(model, size=SIZE):
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return model.eval().forward_features(x)


def _backbone_state(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def _assert_backbone_equal(model, reference):
    got, want = _backbone_state(model), _backbone_state(reference)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)


def _to_google_npz(model, path):
    """Write ``model`` in the layout of Google's original ViT-B_16.npz (read by timm)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    hd = dim // heads
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
        # the paper's in21k files carry a representation layer that timm (and we) ignore
        "pre_logits/kernel": np.ones((dim, dim), np.float32),
        "pre_logits/bias": np.ones(dim, np.float32),
    }
    for i in range(len(model.blocks)):
        b, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        att = g + "MultiHeadDotProductAttention_1/"
        out[g + "LayerNorm_0/scale"], out[g + "LayerNorm_0/bias"] = (
            sd[b + "norm1.weight"],
            sd[b + "norm1.bias"],
        )
        out[g + "LayerNorm_2/scale"], out[g + "LayerNorm_2/bias"] = (
            sd[b + "norm2.weight"],
            sd[b + "norm2.bias"],
        )
        qkv_w = np.split(sd[b + "attn.qkv.weight"], 3)  # each [out, in]
        qkv_b = np.split(sd[b + "attn.qkv.bias"], 3)
        for n, w, bias in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True):
            out[f"{att}{n}/kernel"] = w.T.reshape(dim, heads, hd)  # [in, heads, head_dim]
            out[f"{att}{n}/bias"] = bias.reshape(heads, hd)
        # proj: [out, in=heads*hd] -> flax [heads, head_dim, out]
        proj = sd[b + "attn.proj.weight"]
        out[att + "out/kernel"] = proj.reshape(dim, heads, hd).transpose(1, 2, 0)
        out[att + "out/bias"] = sd[b + "attn.proj.bias"]
        for j in (0, 1):
            out[f"{g}MlpBlock_3/Dense_{j}/kernel"] = sd[f"{b}mlp.fc{j + 1}.weight"].T
            out[f"{g}MlpBlock_3/Dense_{j}/bias"] = sd[f"{b}mlp.fc{j + 1}.bias"]
    np.savez(path, **out)
    return out


# ----------------------------------------------------------------------------- happy paths


def test_random_init_builds_requested_head():
    model = build_backbone(NAME, num_classes=5, img_size=SIZE, drop_path=0.1)
    assert model.head.out_features == 5
    assert model.patch_embed.grid_size == (2, 2)
    assert model(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 5)


def test_npz_google_layout_roundtrip(reference, tmp_path, caplog):
    path = tmp_path / "ViT-Ti_16.npz"
    _to_google_npz(reference, path)
    with caplog.at_level(logging.INFO, logger="src.backbones.weights"):
        model = build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))
    _assert_backbone_equal(model, reference)
    torch.testing.assert_close(_features(model), _features(reference), rtol=0, atol=1e-5)
    assert model.head.out_features == 3
    assert any(
        "ViT-Ti_16.npz" in r.getMessage() and "loaded" in r.getMessage() for r in caplog.records
    )


def test_npz_head_never_taken_from_file(reference, tmp_path):
    path = tmp_path / "w.npz"
    _to_google_npz(reference, path)  # head size 7 = target size: timm alone would copy it
    model = build_backbone(NAME, num_classes=7, img_size=SIZE, weights=str(path))
    assert not torch.equal(model.head.weight, reference.head.weight)
    assert torch.all(model.head.bias == 0) and model.head.weight.std() < 0.05  # timm-style init
    _assert_backbone_equal(model, reference)


def test_npz_resamples_pos_embed(reference, tmp_path):
    path = tmp_path / "w.npz"
    _to_google_npz(reference, path)
    model = build_backbone(NAME, num_classes=3, img_size=64, weights=str(path))
    assert model.pos_embed.shape == (1, 1 + 16, 192)
    assert _features(model, 64).shape == (2, 17, 192)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_state_dict_roundtrip(reference, tmp_path, fmt):
    path = tmp_path / f"w.{fmt}"
    sd = reference.state_dict()  # head has 7 classes, the new model 4
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    model = build_backbone(NAME, num_classes=4, img_size=SIZE, weights=str(path))
    assert model.head.out_features == 4
    _assert_backbone_equal(model, reference)
    torch.testing.assert_close(_features(model), _features(reference), rtol=0, atol=1e-6)


def test_pth_wrapped_and_prefixed(reference, tmp_path):
    path = tmp_path / "ddp.pt"
    wrapped = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, path)
    model = load_weights(build_backbone(NAME, num_classes=2, img_size=SIZE), path)
    _assert_backbone_equal(model, reference)


def test_state_dict_pos_embed_resampled(reference, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_backbone(NAME, num_classes=3, img_size=48, weights=str(path))
    assert model.pos_embed.shape == (1, 1 + 9, 192)
    torch.testing.assert_close(model.blocks[3].mlp.fc1.weight, reference.blocks[3].mlp.fc1.weight)
    assert _features(model, 48).shape == (2, 10, 192)


# ----------------------------------------------------------------------------- user errors


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(UserError, match="not found") as e:
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(missing))
    assert str(missing) in str(e.value)


def test_unknown_extension(tmp_path):
    path = tmp_path / "w.ckpt"
    path.write_bytes(b"x")
    with pytest.raises(UserError, match=r"\.ckpt") as e:
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))
    for ext in (".npz", ".safetensors", ".pth"):
        assert ext in str(e.value)


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(UserError, match="vit_tiny_patch16_224") as e:
        build_backbone("vit_tiny_patch16_2244", num_classes=3)
    assert "unknown timm model 'vit_tiny_patch16_2244'" in str(e.value)


def test_extra_timm_kwargs_pass_through():
    model = build_backbone(NAME, num_classes=2, img_size=SIZE, depth=2, embed_dim=48)
    assert len(model.blocks) == 2 and model.embed_dim == 48


def test_unknown_pretrained_tag():
    with pytest.raises(UserError, match="pretrained tag"):
        build_backbone(f"{NAME}.no_such_tag", num_classes=3)


def test_wrong_width_names_keys_and_shapes(tmp_path):
    other = timm.create_model(NAME, embed_dim=96, num_heads=3, img_size=SIZE, num_classes=3)
    path = tmp_path / "small.safetensors"
    save_file(other.state_dict(), str(path))
    with pytest.raises(UserError) as e:
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))
    msg = str(e.value)
    assert "shape mismatches" in msg and NAME in msg
    assert "cls_token: file (1, 1, 96) vs model (1, 1, 192)" in msg
    assert "\n" not in msg


def test_missing_and_unexpected_keys(reference, tmp_path):
    sd = {k: v for k, v in reference.state_dict().items() if not k.startswith("blocks.11.")}
    sd["extra.weight"] = torch.zeros(2)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(UserError) as e:
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))
    msg = str(e.value)
    assert "missing keys (12): blocks.11.norm1.weight" in msg and "(+7 more)" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "head." not in msg  # the head is never expected from the file


def test_npz_missing_keys(reference, tmp_path):
    arrays = _to_google_npz(reference, tmp_path / "full.npz")
    for k in [k for k in arrays if k.startswith("Transformer/encoderblock_11/")]:
        del arrays[k]
    path = tmp_path / "short.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError) as e:
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))
    msg = str(e.value)
    assert "missing keys (16)" in msg and NAME in msg
    assert "Transformer/encoderblock_11/LayerNorm_0/scale" in msg


def test_npz_wrong_width_and_too_deep(tmp_path):
    narrow = timm.create_model(NAME, embed_dim=96, num_heads=3, img_size=SIZE, num_classes=3)
    _to_google_npz(narrow, tmp_path / "narrow.npz")
    with pytest.raises(UserError, match="width 96, 12 blocks.*width 192, 12 blocks"):
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(tmp_path / "narrow.npz"))

    deep = timm.create_model(NAME, depth=13, img_size=SIZE, num_classes=3)
    _to_google_npz(deep, tmp_path / "deep.npz")
    with pytest.raises(UserError, match="13 encoder blocks.*Transformer/encoderblock_12/"):
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(tmp_path / "deep.npz"))


def test_npz_not_google_layout(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, foo=np.zeros(3))
    with pytest.raises(UserError, match="Google's ViT .npz layout"):
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))


def test_pth_with_pickled_object_refused(reference, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": reference.state_dict(), "args": fractions.Fraction(1, 3)}, path)
    with pytest.raises(UserError, match=r"pickled Python objects \(fractions.Fraction\)"):
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))


def test_timm_training_checkpoint_loads(reference, tmp_path):
    # timm's train.py saves its argparse.Namespace beside the weights; timm's reader allows it.
    path = tmp_path / "w.pth"
    args = argparse.Namespace(lr=0.1)
    torch.save({"state_dict": reference.state_dict(), "args": args, "epoch": 3}, path)
    model = build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)


def test_lightning_state_dict_prefix_stripped(reference, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))
    torch.testing.assert_close(model.blocks[0].mlp.fc2.bias, reference.blocks[0].mlp.fc2.bias)


def test_non_state_dict_file_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(UserError, match="does not hold a state dict"):
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path))


def test_corrupt_files(tmp_path):
    for name in ("w.pth", "w.safetensors", "w.npz"):
        (tmp_path / name).write_bytes(b"not a checkpoint at all")
        with pytest.raises(UserError, match="cannot read"):
            build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(tmp_path / name))


# ------------------------------------------------------------------------- Google's .npz, by hand


def _google_vit_arrays(depth=2, dim=192, heads=3, mlp=768, patch=16, grid=2, seed=0):
    """Random arrays under the names and shapes of Google's ViT .npz (vit_jax / big_vision's
    ViT-B_16.npz), independent of any model: the loader must map them, not a round trip."""
    rng = np.random.default_rng(seed)

    def a(*shape):
        return rng.normal(0, 0.1, shape).astype(np.float32)

    hd = dim // heads
    out = {
        "embedding/kernel": a(patch, patch, 3, dim),  # HWIO
        "embedding/bias": a(dim),
        "cls": a(1, 1, dim),
        "Transformer/posembed_input/pos_embedding": a(1, 1 + grid * grid, dim),
        "Transformer/encoder_norm/scale": a(dim),
        "Transformer/encoder_norm/bias": a(dim),
        "pre_logits/kernel": a(dim, dim),
        "pre_logits/bias": a(dim),
        "head/kernel": a(dim, 5),
        "head/bias": a(5),
    }
    for i in range(depth):
        g = f"Transformer/encoderblock_{i}/"
        att = g + "MultiHeadDotProductAttention_1/"
        for j in (0, 2):
            out[f"{g}LayerNorm_{j}/scale"], out[f"{g}LayerNorm_{j}/bias"] = a(dim), a(dim)
        for n in ("query", "key", "value"):
            out[f"{att}{n}/kernel"], out[f"{att}{n}/bias"] = a(dim, heads, hd), a(heads, hd)
        out[att + "out/kernel"], out[att + "out/bias"] = a(heads, hd, dim), a(dim)
        for j, (n_in, n_out) in enumerate(((dim, mlp), (mlp, dim))):
            dense = f"{g}MlpBlock_3/Dense_{j}/"
            out[dense + "kernel"], out[dense + "bias"] = a(n_in, n_out), a(n_out)
    return out


def test_npz_arrays_land_where_google_meant_them(tmp_path):
    arrays = _google_vit_arrays()
    path = tmp_path / "ViT-B_16.npz"
    np.savez(path, **arrays)
    model = build_backbone(NAME, num_classes=3, img_size=SIZE, weights=str(path), depth=2).eval()
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    att = "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/"
    block = model.blocks[1]
    # Dense kernels are [in, out]; attention kernels [in, heads, head_dim] / [heads, head_dim, out].
    torch.testing.assert_close(block.attn.qkv.weight[:192], t[att + "query/kernel"].flatten(1).T)
    torch.testing.assert_close(block.attn.qkv.weight[192:384], t[att + "key/kernel"].flatten(1).T)
    torch.testing.assert_close(block.attn.qkv.bias[384:], t[att + "value/bias"].flatten())
    torch.testing.assert_close(block.attn.proj.weight, t[att + "out/kernel"].flatten(0, 1).T)
    mlp = "Transformer/encoderblock_1/MlpBlock_3/"
    torch.testing.assert_close(block.mlp.fc1.weight, t[mlp + "Dense_0/kernel"].T)
    ln2 = t["Transformer/encoderblock_1/LayerNorm_2/scale"]
    torch.testing.assert_close(block.norm2.weight, ln2)

    # The tokens entering block 0, computed from the arrays by hand: each 16x16 patch (row-major
    # over the grid) times the HWIO kernel, plus bias; the class token first; plus positions.
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    patches = [x[0, :, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16] for i in (0, 1) for j in (0, 1)]
    kernel, bias = t["embedding/kernel"], t["embedding/bias"]
    tokens = torch.stack([torch.einsum("chw,hwcd->d", p, kernel) + bias for p in patches])
    by_hand = torch.cat([t["cls"][0], tokens]) + t["Transformer/posembed_input/pos_embedding"][0]
    with torch.no_grad():
        got = model._pos_embed(model.patch_embed(x))[0]
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-5)
    # ... and block 0's query projection of them, by hand: LayerNorm_0, then query/kernel.
    ln = "Transformer/encoderblock_0/"
    normed = torch.nn.functional.layer_norm(
        by_hand, (192,), t[ln + "LayerNorm_0/scale"], t[ln + "LayerNorm_0/bias"], eps=1e-6
    )
    q_att = ln + "MultiHeadDotProductAttention_1/query/"
    q = torch.einsum("td,dhk->thk", normed, t[q_att + "kernel"]) + t[q_att + "bias"]
    with torch.no_grad():
        got_q = model.blocks[0].attn.qkv(model.blocks[0].norm1(got))[:, :192]
    torch.testing.assert_close(got_q, q.flatten(1), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- named weights


TAG = "vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """An empty Hugging Face home, offline: nothing here may reach the network."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


def _fake_hub_cache(home, tag, tensors, *, symlinked=True, ref=True):
    """``tensors`` as model.safetensors of hub repo timm/<tag>, in huggingface_hub's cache layout
    (blobs named by their sha256, snapshots linking to them, refs/main naming the snapshot)."""
    repo = home / "hub" / f"models--timm--{tag}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    staged = repo / "staged.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(staged))
    sha = hashlib.sha256(staged.read_bytes()).hexdigest()
    if symlinked:
        (repo / "blobs").mkdir()
        staged.rename(repo / "blobs" / sha)
        (snapshot / "model.safetensors").symlink_to(f"../../blobs/{sha}")
    else:  # a cache copied without its links (rsync -L, a zip)
        staged.rename(snapshot / "model.safetensors")
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(rev)
    return snapshot / "model.safetensors", sha


@pytest.fixture(scope="module")
def two_blocks():
    torch.manual_seed(2)
    model = build_backbone(NAME, num_classes=7, img_size=SIZE, depth=2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("symlinked", [True, False])
def test_tag_found_in_hub_cache_offline(hub_home, two_blocks, symlinked):
    sd = {k: v for k, v in two_blocks.state_dict().items() if not k.startswith("head.")}
    file, sha = _fake_hub_cache(hub_home, TAG, sd, symlinked=symlinked, ref=symlinked)
    source = resolve_weights(NAME, f"timm:{TAG}")
    assert source.path == file and source.revision == file.parent.name
    assert source.record() == {"source": f"timm:{TAG}", "tag": TAG, "file": str(file),
                               "sha256": sha, "revision": file.parent.name}  # fmt: skip
    model = build_backbone(NAME, num_classes=3, img_size=SIZE, weights=f"timm:{TAG}", depth=2)
    _assert_backbone_equal(model, two_blocks)


def test_hub_means_timms_default_tag_not_any_cached_one(hub_home, two_blocks):
    _fake_hub_cache(hub_home, TAG, two_blocks.state_dict())
    # vit_tiny_patch16_224's default tag is the ImageNet-1k fine-tune, which is not cached.
    with pytest.raises(UserError, match=r"timm:vit_tiny_patch16_224\.augreg_in21k_ft_in1k are not"):
        resolve_weights(NAME, "hub")


def test_paper_weights_offline_without_a_file_say_which_file(hub_home):
    with pytest.raises(UserError) as e:
        resolve_weights("vit_base_patch16_224", "timm:vit_base_patch16_224.orig_in21k")
    msg = str(e.value)
    assert "timm:vit_base_patch16_224.orig_in21k" in msg and "HF_HUB_OFFLINE" in msg
    assert "backbone.weights=/path/ViT-B_16.npz" in msg and str(hub_home / "hub") in msg
    assert "\n" not in msg
    with pytest.raises(UserError, match="swin_base_patch4_window7_224_22k.pth"):
        swin = "swin_base_patch4_window7_224"
        resolve_weights(swin, f"timm:{swin}.ms_in22k")


def test_unreachable_hub_is_the_same_error_at_once(hub_home, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # A closed local port stands in for a machine without network: refused at once, no DNS.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UserError, match=r"127\.0\.0\.1:9 unreachable.*/path/ViT-B_16\.npz"):
        resolve_weights("vit_base_patch16_224", "timm:vit_base_patch16_224.orig_in21k")


def test_weights_must_be_named(hub_home):
    with pytest.raises(UserError, match="backbone.weights is null.*random"):
        build_backbone(NAME, num_classes=3, img_size=SIZE, weights=None)
    with pytest.raises(UserError, match="is for swin_base_patch4_window7_224, but backbone.name"):
        resolve_weights(NAME, "timm:swin_base_patch4_window7_224.ms_in22k")
    with pytest.raises(UserError, match="unknown timm pretrained tag.*augreg_in21k"):
        resolve_weights(NAME, "timm:vit_tiny_patch16_224.nope")
    assert resolve_weights(NAME, "random").record()["source"] == "random"


def test_file_identity_is_its_content(tmp_path, two_blocks):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({k: v.contiguous() for k, v in two_blocks.state_dict().items()}, str(a))
    b.write_bytes(a.read_bytes())
    sa, sb = resolve_weights(NAME, str(a)), resolve_weights(NAME, str(b))
    assert sa.sha256 == sb.sha256 == hashlib.sha256(a.read_bytes()).hexdigest()
    assert sa.identity == f"file:a.safetensors@sha256:{sa.sha256[:16]}"


# ----------------------------------------------------------------------------- through a run

ROOT = Path(__file__).resolve().parents[1]


def test_paper_command_offline_without_weights_is_one_error_line(tmp_path):
    write_vtab_task(tmp_path / "data", "toy", num_classes=4, n_train=4, n_val=4, n_test=4)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "experiment=vtab_pace", f"data.root={tmp_path}/data",
         "data.task=toy", "data.num_classes=4", f"paths.log_dir={tmp_path}/logs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for fragment in ("timm:vit_base_patch16_224.orig_in21k", "backbone.weights=/path/ViT-B_16.npz"):
        assert fragment in errors[0]
    assert not list((tmp_path / "logs").rglob("results.json"))


def test_runs_record_their_weights_and_the_report_keeps_them_apart(tmp_path, two_blocks, capsys):
    from src.report import build_tables
    from src.runs import load_runs
    from src.train import train
    from tests.conftest import compose_config

    write_vtab_task(tmp_path / "data", "toy", num_classes=4, n_train=8, n_val=4, n_test=4)
    npz = tmp_path / "ViT-B_16.npz"  # the paper's file name; a 2-block tiny ViT inside
    _to_google_npz(two_blocks, npz)
    results = {}
    for weights in ("random", str(npz)):
        out = tmp_path / "runs" / Path(weights).stem
        cfg = compose_config(
            ["experiment=vtab_pace", "backbone=vit_tiny_patch16", f"backbone.weights={weights}",
             "+backbone.kwargs.depth=2", "data.img_size=32", f"data.root={tmp_path}/data",
             "data.task=toy", "data.num_classes=4", "data.batch_size=8", "trainer.max_epochs=1",
             "trainer=cpu", "callbacks.progress_bar=null", "trainer.enable_model_summary=false",
             "extras.print_config=false"],
            out,
        )  # fmt: skip
        train(cfg)
        said = [line for line in capsys.readouterr().err.splitlines() if "paper setup:" in line]
        assert len(said) == 1 and "departs from the paper's VTAB-1k setup" in said[0]
        results[weights] = json.loads((out / "results.json").read_text())
        hparams = next(out.rglob("hparams.yaml")).read_text()  # what every logger was told
        assert f"backbone.weights_source: {results[weights]['weights']['source']}" in hparams

    sha = hashlib.sha256(npz.read_bytes()).hexdigest()
    nothing = dict.fromkeys(("tag", "file", "sha256", "revision"))
    assert results["random"]["weights"] == {"source": "random", **nothing}
    assert results[str(npz)]["weights"]["sha256"] == sha
    assert results[str(npz)]["weights"]["source"] == f"file:ViT-B_16.npz@sha256:{sha[:16]}"
    departed = {w: {d["key"]: d for d in r["paper_departures"]} for w, r in results.items()}
    assert departed["random"]["backbone.weights"]["paper"].startswith("timm:vit_base_patch16_224")
    assert "backbone.weights" not in departed[str(npz)]  # Google's file name: the paper's weights
    for found in departed.values():
        assert found["data.img_size"] == {"key": "data.img_size", "value": 32, "paper": 224}
        assert found["trainer.max_epochs"]["paper"] == 300
        assert {"backbone.name", "data.task"} <= set(found)

    (table,), _ = build_tables(load_runs([tmp_path / "runs"]))
    labels = [label for label, _ in table.rows]
    assert len(labels) == 2
    assert any("backbone.weights=random" in label for label in labels)
    assert any(f"backbone.weights=file:ViT-B_16.npz@sha256:{sha[:16]}" in label for label in labels)


def test_swin_in_microsofts_release_layout_loads(tmp_path):
    # The offline error for Swin-B names Microsoft's swin_base_patch4_window7_224_22k.pth: its
    # layout (stage downsampling at a stage's end, head.*, the buffers, under "model") must load.
    tiny = dict(depths=[1, 1, 2, 1], embed_dim=24, num_heads=[1, 1, 1, 1], window_size=2)
    name = "swin_tiny_patch4_window7_224"
    torch.manual_seed(4)
    ref = build_backbone(name, num_classes=5, img_size=SIZE, **tiny)
    release = {}
    for k, v in ref.state_dict().items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k)
        release[k.replace("head.fc.", "head.")] = v + 0.01  # not the init: a skipped tensor shows
    release["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(4, 4, dtype=torch.long)
    path = tmp_path / "swin_base_patch4_window7_224_22k.pth"
    torch.save({"model": release}, path)
    model = build_backbone(name, num_classes=3, img_size=SIZE, weights=str(path), **tiny)
    want = {k: v + 0.01 for k, v in _backbone_state(ref).items() if not k.startswith("head.")}
    got = {k: v for k, v in _backbone_state(model).items() if not k.startswith("head.")}
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)
