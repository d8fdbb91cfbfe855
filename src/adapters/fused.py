"""The noisy forward of a dense-Δ linear layer, ``h = x W0ᵀ + b0 + z ⊙ (x ΔWᵀ + Δb)``, in one GEMM.

The paper's adapter (``lora_mul_vpt_add``, ΔW = W0 ⊙ (D_W U_W)) has a dense ΔW, so a noisy layer
costs two full matmuls forward and two for the input gradient. Stacking does the same FLOPs in
fewer passes over the activations:

- forward: one GEMM of ``x`` with ``[W0; ΔW]`` (bias ``[b0; Δb]`` fused), then one fused
  multiply-add ``h0 + z ⊙ Δh`` into the output — no activation-sized temporaries besides the
  stacked product;
- backward: ``∂x = g W0 + (g ⊙ z) ΔW`` accumulated into one buffer (``addmm``), and
  ``∂ΔW = (g ⊙ z)ᵀ x`` (``∂Δb`` is its sum). W0 and b0 are frozen; ``z`` carries no gradient
  (the noise is drawn without one).

The stacked-gradient alternative for ``∂x`` (one GEMM of ``[g, g ⊙ z]`` with ``[W0; ΔW]``)
was measured no faster on a 2-core CPU (ViT-S/16 shapes, docs/bench.md): it needs an
activation-sized ``[g, g ⊙ z]`` buffer and the stacked weight kept for backward (a copy of W0
per layer). Only ``x``, ``z``, W0 (the parameter itself) and ΔW are kept here. The plain
two-path computation in ``BranchModule.forward`` stays as the oracle this is tested against
(``tests/test_fast_paths.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DenseNoisyLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, delta_weight, delta_bias, z):
        out_features = weight.shape[0]
        stacked = F.linear(x, torch.cat([weight, delta_weight]), torch.cat([bias, delta_bias]))
        h0, delta_h = stacked.split(out_features, dim=-1)
        # W0 is a parameter (no copy); ΔW is what the plain path's matmul keeps too.
        ctx.save_for_backward(x, weight, delta_weight, z)
        return torch.addcmul(h0, delta_h, z)

    @staticmethod
    def backward(ctx, grad):
        x, weight, delta_weight, z = ctx.saved_tensors
        need_x, need_w, need_b, need_dw, need_db, _ = ctx.needs_input_grad
        out_features = grad.shape[-1]
        rows = grad.reshape(-1, out_features)
        noisy_rows = (grad * z).reshape(-1, out_features)  # ∂/∂Δh = g ⊙ z
        x_rows = x.reshape(-1, x.shape[-1])
        grad_x = grad_w = grad_b = grad_dw = grad_db = None
        if need_x:  # g W0 + (g ⊙ z) ΔW, accumulated into one buffer
            grad_x = torch.addmm(rows @ weight, noisy_rows, delta_weight).view(x.shape)
        if need_dw:
            grad_dw = noisy_rows.t() @ x_rows
        if need_db:
            grad_db = noisy_rows.sum(0)
        if need_w:  # only when W0 is trained, which no method does; kept for completeness
            grad_w = rows.t() @ x_rows
        if need_b:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b, grad_dw, grad_db, None


def dense_noisy_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    delta_weight: torch.Tensor,
    delta_bias: torch.Tensor,
    z: torch.Tensor,
) -> torch.Tensor:
    """``x Wᵀ + b + z ⊙ (x ΔWᵀ + Δb)`` with ``z`` broadcastable to the output."""
    return DenseNoisyLinear.apply(x, weight, bias, delta_weight, delta_bias, z)
