"""The noisy forward of a dense-Δ linear layer, ``h = x W0ᵀ + b0 + z ⊙ (x ΔWᵀ + Δb)``, in one GEMM.

The paper's adapter (``lora_mul_vpt_add``, ΔW = W0 ⊙ (D_W U_W)) has a dense ΔW, so a noisy layer
costs two full matmuls forward and two for the input gradient. Stacking does the same FLOPs in
fewer passes over the activations:

- forward: one GEMM of ``x`` with ``[W0; ΔW]`` (bias ``[b0; Δb]`` fused), then one fused
  multiply-add ``h0 + z ⊙ Δh`` into the output — no activation-sized temporaries besides the
  stacked product;
- backward: one GEMM of the stacked gradient ``[g, g ⊙ z]`` with ``[W0; ΔW]`` for ``∂x``, and one
  of ``(g ⊙ z)ᵀ x`` for ``∂ΔW`` (``∂Δb`` is its sum). W0 and b0 are frozen; ``z`` carries no
  gradient (the noise is drawn without one).

Only ``x``, ``z`` and the stacked weight (parameter-sized) are kept for backward. The plain
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
        stacked_weight = torch.cat([weight, delta_weight])
        stacked = F.linear(x, stacked_weight, torch.cat([bias, delta_bias]))
        h0, delta_h = stacked.split(out_features, dim=-1)
        ctx.save_for_backward(x, stacked_weight, z)
        return torch.addcmul(h0, delta_h, z)

    @staticmethod
    def backward(ctx, grad):
        x, stacked_weight, z = ctx.saved_tensors
        need_x, need_w, need_b, need_dw, need_db, _ = ctx.needs_input_grad
        out_features = grad.shape[-1]
        # [g, g ⊙ z] in one buffer: its right half is the gradient of Δh's pre-noise output.
        stacked_grad = grad.new_empty(grad.shape[:-1] + (2 * out_features,))
        stacked_grad[..., :out_features] = grad
        grad_delta_h = stacked_grad[..., out_features:]
        torch.mul(grad, z, out=grad_delta_h)
        grad_x = grad_w = grad_b = grad_dw = grad_db = None
        if need_x:
            grad_x = stacked_grad @ stacked_weight
        rows = grad_delta_h.reshape(-1, out_features)
        if need_dw:
            grad_dw = rows.t() @ x.reshape(-1, x.shape[-1])
        if need_db:
            grad_db = rows.sum(0)
        if need_w:  # only when W0 is trained, which no method does; kept for completeness
            grad_w = grad.reshape(-1, out_features).t() @ x.reshape(-1, x.shape[-1])
        if need_b:
            grad_b = grad.reshape(-1, out_features).sum(0)
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
