"""tools/compile_layer.py: every form it times computes the fused layer's output and gradients
(it checks that itself before timing, and would raise), and it prints one row per block layer."""

import pytest

from tools import compile_layer


@pytest.mark.slow  # Inductor compiles four C++ kernels
def test_compile_layer_compares_the_same_arithmetic(capsys):
    assert compile_layer.main(["--batch", "2", "--tokens", "3", "--dim", "8", "--rounds", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| qkv",
        "| proj",
        "| fc1",
        "| fc2",
        "| block (sum)",
    ]


def test_plain_form_is_the_fused_layer():
    x, w, b, dw, db, z, grad = compile_layer.tensors(2, 3, 8, 24)
    out = compile_layer.plain(x, w, b, dw, db, z)
    fused = compile_layer.dense_noisy_linear(x, w, b, dw, db, z)
    assert out.shape == (2, 3, 24)
    assert (out - fused).abs().max() < 1e-5
    assert compile_layer.layer_shapes(384)["fc2"] == (1536, 384)
