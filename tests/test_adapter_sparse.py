"""GPS and GRFT: the scoring pass finds the rows/columns that matter, on a hand-built case."""

import pytest
import torch

from src.adapters import branch_modules, calibrate, inject
from src.network import load_trainable, save_trainable
from tests.test_adapters import tiny_vit


def loader(n_batches=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 32, 32, generator=gen), torch.arange(4)) for _ in range(n_batches)]


def only_hidden_units_matter(model, keep):
    """fc2 reads only hidden units ``keep``: every other fc1 row gets an exactly zero gradient."""
    with torch.no_grad():
        fc2 = model.blocks[0].mlp.fc2
        mask = torch.zeros(fc2.in_features, dtype=torch.bool)
        mask[list(keep)] = True
        fc2.weight[:, ~mask] = 0
    return model


def only_hidden_unit_active(model, unit):
    """fc1 outputs 0 (GELU(0) = 0) except unit ``unit``: fc2's other columns get no gradient."""
    with torch.no_grad():
        fc1 = model.blocks[0].mlp.fc1
        keep = torch.zeros(fc1.out_features, dtype=torch.bool)
        keep[unit] = True
        fc1.weight[~keep] = 0
        fc1.bias[~keep] = 0
    return model


def backbone_size(model):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))


def test_grft_selects_the_rows_that_carry_the_gradient(capsys):
    model = only_hidden_units_matter(tiny_vit(depth=1), keep=[3, 7])
    budget = 2 * 192 / backbone_size(model)  # room for exactly two fc1 rows
    inject(model, "grft", targets=["mlp.fc1"], budget=budget)
    calibrate(model, loader())
    fc1 = model.blocks[0].mlp.fc1
    assert fc1.rows.tolist() == [3, 7] and fc1.cols.tolist() == []
    assert fc1.delta_rows.shape == (2, 192) and fc1.delta_rows.requires_grad
    assert "GRFT scoring" in capsys.readouterr().err  # the pass shows progress


def test_grft_selects_the_column_that_carries_the_gradient():
    model = only_hidden_unit_active(tiny_vit(depth=1), unit=5)
    inject(model, "grft", targets=["mlp.fc2"], budget_scope="per_matrix", budget=192 / 768 / 192)
    calibrate(model, loader())
    fc2 = model.blocks[0].mlp.fc2
    assert fc2.cols.tolist() == [5] and fc2.rows.tolist() == []


def test_gps_keeps_the_top_gradient_weight_of_every_neuron(capsys):
    model = only_hidden_unit_active(tiny_vit(depth=1), unit=5)
    inject(model, "gps", targets=["mlp.fc2"])
    calibrate(model, loader())
    fc2 = model.blocks[0].mlp.fc2
    assert fc2.index.shape == (192, 1) and set(fc2.index.flatten().tolist()) == {5}
    assert "GPS scoring" in capsys.readouterr().err


def test_grft_penalty_adds_its_exact_gradient():
    model = inject(tiny_vit(depth=1), "grft", mu=0.25)
    calibrate(model, loader(1))
    layer = next(m for _, m in branch_modules(model) if m.delta_rows.numel())
    with torch.no_grad():
        layer.delta_rows.normal_()
    (0 * layer.delta_rows.sum()).backward()  # the task loss contributes nothing here
    torch.testing.assert_close(layer.delta_rows.grad, 2 * 0.25 * layer.delta_rows.detach())


def test_the_selection_travels_with_the_adapter_weights(tmp_path):
    model = inject(tiny_vit(), "grft")
    calibrate(model, loader())
    path = save_trainable(model, tmp_path / "adapter.safetensors")
    rebuilt = inject(tiny_vit(), "grft")  # uncalibrated: the file carries the choice
    load_trainable(rebuilt, path)
    for (_, a), (_, b) in zip(branch_modules(model), branch_modules(rebuilt), strict=True):
        assert torch.equal(a.rows, b.rows) and torch.equal(a.cols, b.cols)


@pytest.mark.parametrize("scope", ["global", "per_matrix"])
def test_grft_stays_within_its_budget(scope):
    model = inject(tiny_vit(), "grft", budget=0.01, budget_scope=scope)
    calibrate(model, loader())
    trained = sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and "head" not in n
    )
    assert 0 < trained <= 0.01 * backbone_size(model)
