"""What one MiniLM-L6 step costs here: the numbers the text demo's 15-minute budget is built on.

Times, on batch B x T tokens (default 16 x 64) of the real MiniLM from checkpoints/minilm_l6/:
an eval forward; a LoRA training step (r 8 on query and value, backbone frozen, linear head on
[CLS], AdamW), at batch B (baseline, PACE-fast: one forward) and 2B (PACE: one forward of
[x; x]); and a full fine-tuning step for reference. Reports the median wall time and the
process CPU time per step, and the load average: on a shared machine the wall time measures the
neighbours, the CPU time (with one thread) what the step needs.

    python experiments/text_demo/time_minilm.py [--model checkpoints/minilm_l6] [--threads 2]
        [--batch 16] [--tokens 64] [--steps 6]

The LoRA here is a stand-in of a few lines, not src/adapters: it has the same matmuls (x A^T B^T
beside the frozen linear), which is all a timing needs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn


class TimingLoRA(nn.Module):
    """h0 + x A^T B^T beside a frozen linear (B starts at zero, as LoRA does)."""

    def __init__(self, base: nn.Linear, rank: int = 8):
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.a.T) @ self.b.T


def load(model_dir: Path, lora: bool):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    if lora:
        model.requires_grad_(False)
        for layer in model.encoder.layer:
            attn = layer.attention.self
            attn.query, attn.value = TimingLoRA(attn.query), TimingLoRA(attn.value)
    return model


def batch(n: int, tokens: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(1000, vocab, (n, tokens), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def measure(fn, steps: int) -> tuple[float, float]:
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("checkpoints/minilm_l6"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"threads {a.threads}, batch {a.batch} x {a.tokens} tokens, load {os.getloadavg()}")

    def train_step(model, head, opt, n):
        x = batch(n, a.tokens, model.config.vocab_size)
        loss = head(model(**x).last_hidden_state[:, 0]).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for kind in ("lora", "full"):
        model = load(a.model, lora=kind == "lora").train()
        head = nn.Linear(model.config.hidden_size, 2)
        params = [q for q in model.parameters() if q.requires_grad] + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)
        sizes = (a.batch, 2 * a.batch) if kind == "lora" else (a.batch,)
        for n in sizes:
            wall, cpu = measure(lambda n=n, m=model, h=head, o=opt: train_step(m, h, o, n), a.steps)
            what = {a.batch: "batch B", 2 * a.batch: "batch 2B = PACE [x; x]"}[n]
            print(
                f"{kind} train step, {what} ({n}): wall {wall * 1e3:.0f} ms, "
                f"cpu {cpu * 1e3:.0f} ms ({sum(q.numel() for q in params):,} trainable)"
            )
    model.eval()
    with torch.no_grad():
        wall, cpu = measure(
            lambda: model(**batch(a.batch, a.tokens, model.config.vocab_size)), a.steps
        )
    print(f"eval forward ({a.batch}): wall {wall * 1e3:.0f} ms, cpu {cpu * 1e3:.0f} ms")
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
