"""``python -m src.data.check``'s text part: GLUE (classic tsv or datasets folder) and GSM-8K.

Reads every split a protocol uses — no tokenizer needed — and reports counts and labels; a split
that cannot be read marks its task broken with the reader's own one-line fix.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from src.data import TEXT_DATAMODULES
from src.errors import UserError


def _glue_lines(root: Path) -> tuple[list[str], bool]:
    from src.data.glue import GLUE_TASKS, LAYOUT, GLUEDataModule

    lines, healthy, found = [], True, 0
    for task in GLUE_TASKS:
        dm = GLUEDataModule(str(root), task, tokenizer={})
        try:
            fmt, folder = dm.locate()
        except UserError:
            lines.append(f"  glue/{task:<23} missing")
            continue
        found += 1
        parts, problems = [], []
        for split in ("train", "dev"):
            try:
                _, labels = dm.read(split)
            except UserError as error:
                problems.append(str(error))
                continue
            if dm.num_classes == 1:
                what = f"scores {min(labels):.2f}..{max(labels):.2f}" if labels else "empty"
            else:
                counts = Counter(labels)
                what = "labels " + " ".join(f"{k}:{counts[k]}" for k in sorted(counts))
            parts.append(f"{split}: {len(labels)} examples, {what}")
        healthy &= not problems
        lines.append(f"  glue/{task:<23} {'BROKEN' if problems else 'ok'} ({fmt}: {folder})")
        lines += [f"      {p}" for p in parts] + [f"    ! {p}" for p in problems]
    if not found:
        return [f"glue: not present (expected {LAYOUT})"], True
    return ["glue:", *lines], healthy


def _gsm8k_lines(root: Path) -> tuple[list[str], bool]:
    from src.data.gsm8k import LAYOUT, GSM8KDataModule, read_jsonl

    dm = GSM8KDataModule(str(root), tokenizer={})
    try:
        folder = dm.folder()
    except UserError:
        return [f"gsm8k: not present (expected {LAYOUT})"], True
    lines, problems = [], []
    for split in ("train", "test"):
        try:
            lines.append(f"      {split}: {len(read_jsonl(dm.split_file(split)))} problems")
        except UserError as error:
            problems.append(str(error))
    status = "BROKEN" if problems else "ok"
    return [f"gsm8k: {folder} {status}", *lines, *[f"    ! {p}" for p in problems]], not problems


def check_text_root(root: Path, benchmarks: list[str] | None = None) -> tuple[list[str], bool]:
    """Report lines for the text benchmarks under ``root`` and whether every one found is usable."""
    checks = {"glue": _glue_lines, "gsm8k": _gsm8k_lines}
    lines, healthy = [], True
    for name in TEXT_DATAMODULES:  # every text benchmark has its check here
        if benchmarks and name not in benchmarks:
            continue
        more, ok = checks[name](root)
        lines += more
        healthy &= ok
    return lines, healthy
