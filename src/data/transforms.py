"""ImageNet normalisation shared by every benchmark (the whole VTAB literature uses it)."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Shaped [3, 1, 1] so they broadcast over both one image [3, H, W] and a batch [B, 3, H, W].
_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 image(s) [3, H, W] or [B, 3, H, W] in 0..255 -> float32 ImageNet-normalised."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise expects uint8 images, got {images.dtype}")
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"normalise expects [3,H,W] or [B,3,H,W], got {tuple(images.shape)}")
    mean = _MEAN.to(images.device)
    std = _STD.to(images.device)
    return (images.float().div_(255.0) - mean).div_(std)


class CentreCrop:
    """The central ``size`` x ``size`` window of a uint8 image [3, S, S] (the test view)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top = (image.shape[-2] - self.size) // 2
        left = (image.shape[-1] - self.size) // 2
        return image[..., top : top + self.size, left : left + self.size]


class RandomCropFlip:
    """A random ``size`` x ``size`` window, mirrored with probability 1/2 (the training view).

    Draws from torch's global generator, which Lightning seeds per worker.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top = int(torch.randint(0, image.shape[-2] - self.size + 1, ()))
        left = int(torch.randint(0, image.shape[-1] - self.size + 1, ()))
        crop = image[..., top : top + self.size, left : left + self.size]
        return crop.flip(-1) if bool(torch.rand(()) < 0.5) else crop
