"""timm backbones: build_backbone() makes a model, load_weights() fills it from a file."""

from src.backbones.factory import build_backbone
from src.backbones.weights import load_weights

__all__ = ["build_backbone", "load_weights"]
