"""PACE's noise lands on each method's branch Δh, and only there — checked per registered method.

The head's logits are always noisy under PACE, so a check such as "the consistency term is
positive" holds even for a method whose branches never see noise. Every check here turns the
head's noise off first, so what it sees is the method's own branches:

- noise on the branches changes the output (for every method that has a noisy branch);
- σ = 0 gives the merged (evaluation) output exactly;
- at every branch module, the noisy output is ``h0 + z ⊙ Δh`` with ``z`` the module's own draw:
  ``h0`` is untouched and the whole of ``Δh`` is multiplied.
"""

import pytest
import torch

from src.adapters import branch_modules
from src.adapters.vpt import PromptedBlock
from src.pace import build_regulariser, noise_modules
from tests.test_adapters import ROW_IDS, ROWS, adapted, perturb_trainable, x_batch

# Linear probing trains the head alone: under PACE its only noise is the logits'.
NO_BRANCH = {"linear"}


def noisy_model(row, sigma=1.0):
    """The row's method on a tiny ViT, PACE's noise attached, the head's noise switched off.

    The hierarchical schedule gives block 0 noise too (the ViT schedule gives it σ = 0), so that
    a method whose few trainable tensors all sit in block 0 (GRFT on a 2-block ViT) is checked.
    """
    model = adapted(row)
    perturb_trainable(model)
    build_regulariser(model, "pace", sigma=sigma, lam=1.0, schedule="hierarchical")
    model.get_classifier().branch_noise.sigma = 0.0
    return model.train()


def forward_with_seed(model, seed):
    torch.manual_seed(seed)
    return model(x_batch())


@pytest.fixture(params=ROWS, ids=ROW_IDS)
def row(request):
    return request.param


def test_branch_noise_changes_the_output_exactly_when_the_method_has_a_branch(row):
    model = noisy_model(row)
    changed = not torch.equal(forward_with_seed(model, 1), forward_with_seed(model, 2))
    assert changed == (row[0] not in NO_BRANCH)


def test_the_vit_schedule_leaves_shallow_prompts_noise_free():
    """Shallow prompts enter before block 0, which the ViT schedule gives σ = 0 (README)."""
    model = adapted(("vpt_shallow", {"num_tokens": 3}))
    build_regulariser(model, "pace", sigma=1.0, schedule="vit")
    assert [m.branch_noise.sigma for _, m in branch_modules(model) if m.prompts is not None] == [0]


def test_sigma_zero_gives_the_merged_output_exactly(row):
    model = noisy_model(row)
    for noise in noise_modules(model):
        noise.sigma = 0.0
    trained = forward_with_seed(model, 1)
    torch.testing.assert_close(trained, model.eval()(x_batch()), rtol=0, atol=0)


def test_noise_multiplies_delta_h_and_leaves_h0_untouched(row):
    """At every branch module: noisy output − h0 = z ⊙ Δh, with z re-drawn from the same seed."""
    model = noisy_model(row).double()
    inputs = record_inputs(model, lambda m: m)
    checked = 0
    for name, module in branch_modules(model):
        if isinstance(module, PromptedBlock):
            continue  # its Δh is a set of tokens, not an output increment: the next test
        x = inputs[name]
        with torch.no_grad():
            h0 = module.base(x)
            delta_h = module.branch(x, h0).expand_as(h0)
            torch.manual_seed(5)
            noisy = module(x)
            torch.manual_seed(5)
            z = module.branch_noise.draw(h0.shape, h0.dtype, h0.device)
        assert not torch.equal(z, torch.ones_like(z)), name
        torch.testing.assert_close(noisy - h0, z * delta_h, rtol=1e-9, atol=1e-12, msg=name)
        checked += 1
    assert (checked > 0) == (row[0] not in {"linear", "vpt_deep", "vpt_shallow"})


@pytest.mark.parametrize("name", ["vpt_deep", "vpt_shallow"])
def test_prompt_noise_multiplies_the_prompt_tokens_only(name):
    """VPT's Δh is its prompt tokens: the block sees the patch tokens as they were, z ⊙ P after."""
    model = noisy_model((name, {"num_tokens": 3})).double()
    inputs = record_inputs(model, lambda m: m.base)
    checked = 0
    for block_name, block in branch_modules(model):
        if block.prompts is None:
            continue
        x = inputs[block_name]  # the tokens the prompted block received, without prompts
        seen = []
        hook = block.base.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
        with torch.no_grad():
            torch.manual_seed(5)
            block(x)
            torch.manual_seed(5)
            z = block.branch_noise.draw((x.shape[0], 3, x.shape[-1]), x.dtype, x.device)
        hook.remove()
        prefix = block.num_prefix
        tokens = seen[0]
        prompts = tokens[:, prefix : prefix + 3]
        torch.testing.assert_close(prompts, z * block.prompts, rtol=0, atol=0)
        torch.testing.assert_close(tokens[:, :prefix], x[:, :prefix], rtol=0, atol=0)
        torch.testing.assert_close(tokens[:, prefix + 3 :], x[:, prefix:], rtol=0, atol=0)
        checked += 1
    assert checked == (2 if name == "vpt_deep" else 1)


def record_inputs(model, target):
    """The input each branch module (or ``target(module)``) receives in one noisy forward."""
    inputs = {}
    hooks = [
        target(m).register_forward_pre_hook(
            lambda mod, args, n=name: inputs.setdefault(n, args[0].detach())
        )
        for name, m in branch_modules(model)
    ]
    torch.manual_seed(0)
    model(x_batch().double())
    for hook in hooks:
        hook.remove()
    return inputs
