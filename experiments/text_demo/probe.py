"""How hard is TWEETS for MiniLM? A linear probe on its frozen sentence embeddings.

Logistic regression (L2 1e-3, LBFGS) on MiniLM's own sentence embedding (mean over tokens,
L2-normalised), trained on 1,000 tweets of the training pool and on each k-per-class draw, scored
on dev.tsv. Not a method of the study: a floor for what fine-tuning should beat, and a check
that the task is neither chance nor solved.

    python experiments/text_demo/probe.py [--data data/glue_data] [--model checkpoints/minilm_l6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tools.demo_assets.text_minilm import sentence_embeddings
from tools.demo_assets.text_tweets import TASK, read_tsv


def embed(model, tokenizer, rows, batch=64):
    parts = [
        sentence_embeddings(model, tokenizer, [t for t, _ in rows[i : i + batch]])
        for i in range(0, len(rows), batch)
    ]
    return torch.cat(parts), torch.tensor([label for _, label in rows])


def fit(x, y, weight_decay=1e-3, scale=10.0):
    """Logistic regression on unit vectors (``scale`` sets the logits' range); returns predict."""
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(w.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w * scale + b, y) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: (z @ w * scale + b).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/glue_data"))
    p.add_argument("--model", type=Path, default=Path("checkpoints/minilm_l6"))
    p.add_argument("--shots", default="8,16,32")
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args()
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(a.model, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(a.model, local_files_only=True)
    x_dev, y_dev = embed(model, tokenizer, read_tsv(a.data / TASK / "dev.tsv"))

    def accuracy(rows):
        predict = fit(*embed(model, tokenizer, rows))
        return float((predict(x_dev) == y_dev).float().mean())

    pool = read_tsv(a.data / TASK / "train.tsv")
    pick = np.random.default_rng(0).choice(len(pool), min(1000, len(pool)), replace=False)
    print(f"probe, {len(pick)} pool tweets: dev accuracy {accuracy([pool[i] for i in pick]):.3f}")
    for k in (int(s) for s in a.shots.split(",")):
        accs = [
            accuracy(read_tsv(a.data / f"{TASK}-k{k}-s{s}" / "train.tsv"))
            for s in (int(s) for s in a.seeds.split(","))
        ]
        print(f"probe, k={k} per class: dev accuracy {np.round(accs, 3)} mean {np.mean(accs):.3f}")


if __name__ == "__main__":
    main()
