"""Random-number-generator state that travels with a checkpoint.

Lightning restores weights, optimiser, scheduler and loop counters but not the RNGs, so a resumed
run would shuffle and draw PACE noise differently from the run it continues. Saving them makes a
resumed run finish exactly where the uninterrupted one would have.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_states() -> dict:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _numpy_state() -> tuple:
    # Plain tensors and scalars only, so the checkpoint still loads with weights_only=True.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
