"""PACE: noise on adapter branches + consistency between noisy passes.

``build_regulariser`` (``regulariser.py``) is the one entry the rest of the project uses.
Importing the package loads no torch (``MODES`` is all it defines, so ``python -m src.bench
--help`` lists the modes in a fraction of a second); the first access to anything else imports
the module that defines it.
"""

from __future__ import annotations

from src.lazy import lazy_exports

# The objectives ``pace.mode`` chooses from (conf/pace/<mode>.yaml): the baseline and the three
# PACE variants (paper §3 and App. C).
MODES = ("none", "pace", "lazy", "fast")

# Public name -> the module that defines it (imported on first access).
_LAZY = {
    "build_regulariser": "regulariser",
    "FastPACE": "consistency",
    "LazyPACE": "consistency",
    "LossParts": "consistency",
    "PACE": "consistency",
    "Regulariser": "consistency",
    "paired_batch": "droppath",
    "share_drop_path_masks": "droppath",
    "MultiplicativeNoise": "noise",
    "attach_noise": "noise",
    "noise_modules": "noise",
    "sigma_schedule": "noise",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["MODES", *_LAZY]
