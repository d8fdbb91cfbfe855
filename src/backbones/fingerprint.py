"""A short fingerprint of a set of tensors, to check that a rebuilt backbone is the one trained.

Checkpoints and ``adapter.safetensors`` hold only what trains; the frozen backbone is rebuilt from
its source (timm + weights file, or the seed for a random init). Its fingerprint, stored beside the
trained tensors, turns "rebuilt a different backbone" into a one-line error instead of silently
wrong results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def tensor_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """blake2b over names, shapes, dtypes and bytes (order-independent: sorted by name)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def frozen_fingerprint(model: torch.nn.Module) -> str:
    """The fingerprint of every parameter that does not train."""
    return tensor_fingerprint((n, p) for n, p in model.named_parameters() if not p.requires_grad)
