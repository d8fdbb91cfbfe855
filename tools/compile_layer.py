"""Does ``torch.compile`` make the dense noisy layer cheaper here? A side-by-side layer benchmark.

    python -m tools.compile_layer                     # ViT-S/16 at 112 px, batch 32 (make bench's)
    python -m tools.compile_layer --tokens 197 --dim 768 --batch 8

The paper's adapter makes every noisy linear layer compute ``x W0ᵀ + b0 + z ⊙ (x ΔWᵀ + Δb)``
(``src/adapters/fused.py``). This times forward + backward of one such layer of each ViT block
shape (qkv, proj, fc1, fc2) in four forms, interleaved round by round so a busy machine slows
them alike, and prints the median per form as a ratio to the merged layer (``x Wᵀ + b``, what a
``pace=none`` step runs):

- ``merged``: one linear with the merged weight, the baseline's layer;
- ``fused``: the project's autograd function (two GEMMs, in-place accumulation);
- ``plain``: the same arithmetic written out in eager PyTorch (the test oracle's shape);
- ``compiled``: ``torch.compile`` of the plain form (Inductor; its C++ kernels need gcc), with
  the compile time measured apart (first call, forward + backward).

The result decides whether the project compiles the layer (docs/bench.md, "torch.compile").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from src.adapters.fused import dense_noisy_linear


def plain(x, weight, bias, delta_weight, delta_bias, z):
    return F.linear(x, weight, bias) + z * F.linear(x, delta_weight, delta_bias)


def merged(x, weight, bias):
    return F.linear(x, weight, bias)


def layer_shapes(dim: int) -> dict[str, tuple[int, int]]:
    """(in, out) of the four linear layers of a ViT block of width ``dim``."""
    return {"qkv": (dim, 3 * dim), "proj": (dim, dim), "fc1": (dim, 4 * dim), "fc2": (4 * dim, dim)}


def tensors(batch: int, tokens: int, d_in: int, d_out: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, d_in, generator=gen, requires_grad=True)
    weight = torch.randn(d_out, d_in, generator=gen) / d_in**0.5
    bias = torch.randn(d_out, generator=gen)
    delta_weight = (0.01 * torch.randn(d_out, d_in, generator=gen)).requires_grad_()
    delta_bias = (0.01 * torch.randn(d_out, generator=gen)).requires_grad_()
    z = 1 + 0.5 * torch.randn(batch, 1, d_out, generator=gen)  # channel noise
    grad = torch.randn(batch, tokens, d_out, generator=gen)
    return x, weight, bias, delta_weight, delta_bias, z, grad


def step(form, args, grad) -> float:
    start = time.perf_counter()
    form(*args).backward(grad)
    return time.perf_counter() - start


def bench_layer(name, batch, tokens, d_in, d_out, rounds) -> dict:
    x, w, b, dw, db, z, grad = tensors(batch, tokens, d_in, d_out)
    merged_w = (w + dw.detach()).requires_grad_()  # the merged layer trains its weight
    merged_b = (b + db.detach()).requires_grad_()
    compiled = torch.compile(plain, dynamic=False)
    start = time.perf_counter()
    step(compiled, (x, w, b, dw, db, z), grad)
    compile_s = time.perf_counter() - start
    # Same output and gradients as the fused layer, or the timing compares different arithmetic.
    for form in (plain, compiled):
        for t in (x, dw, db):
            t.grad = None
        form(x, w, b, dw, db, z).backward(grad)
        got = [t.grad.clone() for t in (x, dw, db)]
        for t in (x, dw, db):
            t.grad = None
        dense_noisy_linear(x, w, b, dw, db, z).backward(grad)
        for g, want in zip(got, (x.grad, dw.grad, db.grad), strict=True):
            torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-4)
    forms = {
        "merged": (merged, (x, merged_w, merged_b)),
        "fused": (dense_noisy_linear, (x, w, b, dw, db, z)),
        "plain": (plain, (x, w, b, dw, db, z)),
        "compiled": (compiled, (x, w, b, dw, db, z)),
    }
    times: dict[str, list[float]] = {k: [] for k in forms}
    for r in range(rounds + 1):
        for key in list(forms)[r % len(forms) :] + list(forms)[: r % len(forms)]:
            fn, fn_args = forms[key]
            step(fn, fn_args, grad)  # settle: a timed step follows one of the same form
            seconds = step(fn, fn_args, grad)
            if r:  # round 0 warms up
                times[key].append(seconds)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"layer": name, "compile_s": compile_s, **median}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=50, help="50 = ViT/16 at 112 px")
    p.add_argument("--dim", type=int, default=384, help="384 = ViT-S")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"batch {args.batch}, {args.tokens} tokens, width {args.dim}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; forward + backward, "
        f"median of {args.rounds} interleaved rounds, ratio to the merged layer"
    )
    print("| layer | merged (ms) | fused × | plain × | compiled × | compile time (s) |")
    print("|---|---|---|---|---|---|")
    totals = {"merged": 0.0, "fused": 0.0, "plain": 0.0, "compiled": 0.0}
    for name, (d_in, d_out) in layer_shapes(args.dim).items():
        r = bench_layer(name, args.batch, args.tokens, d_in, d_out, args.rounds)
        for k in totals:
            totals[k] += r[k]
        m = r["merged"]
        print(
            f"| {name} | {1e3 * m:.2f} | {r['fused'] / m:.2f} | {r['plain'] / m:.2f} | "
            f"{r['compiled'] / m:.2f} | {r['compile_s']:.1f} |",
            flush=True,
        )
    m = totals["merged"]
    print(
        f"| block (sum) | {1e3 * m:.2f} | {totals['fused'] / m:.2f} | {totals['plain'] / m:.2f} "
        f"| {totals['compiled'] / m:.2f} | |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
