"""The noisy forward of a dense-Δ linear layer, ``h = x W0ᵀ + b0 + z ⊙ (x ΔWᵀ + Δb)``.

The paper's adapter (``lora_mul_vpt_add``, ΔW = W0 ⊙ (D_W U_W)) has a dense ΔW, so a noisy layer
costs two full matmuls forward and two for the input gradient. This autograd function does them
with as few activation-sized buffers as the arithmetic allows:

- forward: ``h0 = x W0ᵀ + b0`` is the output buffer and ``Δh = x ΔWᵀ + Δb`` is added into it in
  place (``addcmul_``) — one activation-sized temporary (Δh), nothing of it kept for backward;
- backward: ``∂x = g W0 + (g ⊙ z) ΔW`` accumulated in place into one buffer (``addmm_``), and
  ``∂ΔW = (g ⊙ z)ᵀ x`` (``∂Δb`` is its sum); ``g ⊙ z`` is the one temporary. W0 and b0 are
  frozen; ``z`` carries no gradient (the noise is drawn without one).

Only ``x``, ``z``, W0 (the parameter itself) and ΔW are kept for backward — what the merged
layer keeps too (``x`` and one ``[out, in]`` weight), plus the small ``z``.

Measured and not kept (2-core CPU, ViT-S/16 shapes, docs/bench.md): one GEMM of ``x`` with the
stacked ``[W0; ΔW]`` — no faster than the two GEMMs here (a layer benchmark: 2.5 % slower),
and it needs a ``[2·out, in]`` copy of the weights and a ``[…, 2·out]`` output per layer and
step (the step's peak RSS was 7 MB higher); ``torch.addmm(g W0, g ⊙ z, ΔW)`` into a second
buffer instead of ``addmm_`` (one more ``[…, in]`` buffer at the start of backward, where the
step's memory peaks: +7 MB of live tensors); and the stacked-gradient GEMM for ``∂x``
(``[g, g ⊙ z]`` with ``[W0; ΔW]``) — no faster, with an activation-sized ``[g, g ⊙ z]``
buffer. The plain two-path computation in ``BranchModule.forward`` stays as the oracle this is
tested against (``tests/test_fast_paths.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DenseNoisyLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, delta_weight, delta_bias, z):
        # h0 is the output buffer; Δh is the one activation-sized temporary, added into it.
        out = F.linear(x, weight, bias)
        out.addcmul_(F.linear(x, delta_weight, delta_bias), z)
        # W0 is a parameter (no copy); ΔW is what the plain path's matmul keeps too.
        ctx.save_for_backward(x, weight, delta_weight, z)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, delta_weight, z = ctx.saved_tensors
        need_x, need_w, need_b, need_dw, need_db, _ = ctx.needs_input_grad
        out_features = grad.shape[-1]
        rows = grad.reshape(-1, out_features)
        noisy_rows = (grad * z).reshape(-1, out_features)  # ∂/∂Δh = g ⊙ z
        x_rows = x.reshape(-1, x.shape[-1])
        grad_x = grad_w = grad_b = grad_dw = grad_db = None
        if need_x:  # g W0 + (g ⊙ z) ΔW, accumulated in place into one buffer
            grad_x = (rows @ weight).addmm_(noisy_rows, delta_weight).view(x.shape)
        if need_dw:
            grad_dw = noisy_rows.t() @ x_rows
        if need_db:
            grad_db = noisy_rows.sum(0)
        if need_w:  # only when W0 is trained, which no method does; kept for completeness
            grad_w = rows.t() @ x_rows
        if need_b:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b, grad_dw, grad_db, None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer computes ``x`` in: autocast's when autocast is on for x's device
    (what ``F.linear`` would run in; autocast leaves float64 alone), else x's own."""
    device = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def dense_noisy_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    delta_weight: torch.Tensor,
    delta_bias: torch.Tensor,
    z: torch.Tensor,
) -> torch.Tensor:
    """``x Wᵀ + b + z ⊙ (x ΔWᵀ + Δb)`` with ``z`` broadcastable to the output, computed in
    :func:`compute_dtype` (``z`` is drawn in it: the caller takes another path otherwise)."""
    # Under autocast every operand in its dtype, as F.linear would cast them (x may already be
    # low-precision, e.g. after a GELU, while the weights are float32); else nothing changes.
    dtype = compute_dtype(x)
    x, weight, bias, delta_weight, delta_bias = (
        t.to(dtype) for t in (x, weight, bias, delta_weight, delta_bias)
    )
    return DenseNoisyLinear.apply(x, weight, bias, delta_weight, delta_bias, z)
