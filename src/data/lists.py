"""Split readers: `relative/path.jpg <label>` list files (VTAB-1k, few-shot, ImageNet shifts)
and VPT's `{"relative/path.jpg": label}` JSON files (FGVC). Both give ``list[Sample]``."""

from __future__ import annotations

import json
from pathlib import Path

from src.data.images import Sample, one_line
from src.errors import UserError

LINE_FORM = "<relative/image/path> <integer label>"
JSON_FORM = '{"relative/image/path": <integer label, or a string of digits such as "132">, ...}'


def duplicate_lines(samples: list[Sample]) -> int:
    """How many entries repeat an earlier (image, label) pair (0 for a clean list)."""
    return len(samples) - len(set(samples))


def read_text(path: Path) -> str:
    """A split file's text: UTF-8, with or without a byte-order mark (Windows editors add one);
    CRLF line ends need nothing here (``splitlines`` and ``strip`` take the carriage return)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); save the file as "
            "UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_list_file(
    path: str | Path,
    num_classes: int,
    base_dir: str | Path | None = None,
    layout_hint: str | None = None,
    label_advice: str = "set data.num_classes to the real class count (the largest label + 1)",
) -> list[Sample]:
    """Parse a list file into (image path, label) pairs.

    Image paths are resolved against ``base_dir`` (default: the folder holding the list file,
    which is the task folder for VTAB-1k). ``layout_hint`` is appended to the "missing file"
    error so callers can describe their benchmark's layout; ``label_advice`` to a label outside
    ``[0, num_classes)``.
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    if not path.is_file():
        hint = layout_hint or f"a text file with one '{LINE_FORM}' line per image"
        raise UserError(f"list file {path} not found; expected {hint}")
    samples: list[Sample] = []
    text = read_text(path)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        # rsplit keeps paths with spaces intact: the label is always the last token.
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise UserError(
                f"{path}:{number}: malformed line '{one_line(line)}'; expected '{LINE_FORM}'"
            )
        relative, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise UserError(
                f"{path}:{number}: label '{one_line(label_text)}' is not an integer; "
                f"expected '{LINE_FORM}'"
            ) from None
        if not 0 <= label < num_classes:
            raise UserError(
                f"{path}:{number}: label {label} is outside [0, {num_classes}); {label_advice}"
            )
        samples.append((base / relative, label))
    if not samples:
        raise UserError(f"list file {path} has no samples; expected '{LINE_FORM}' lines")
    return samples


def read_json_split(path: str | Path, layout_hint: str) -> list[tuple[str, int]]:
    """Parse one of VPT's FGVC split files into (relative image path, raw label id) pairs.

    Raw ids are those of the dataset's own annotation (e.g. 1..200 for CUB); the FGVC
    datamodule maps them to 0..C-1 the way VPT does (sorted ids of the training split). The
    split files in circulation write them as JSON integers or as strings of digits, zero-padded
    ("001", "132"); both are the integer they spell (so zero-padded strings sort as VPT sorts
    them).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"split file {path} not found; expected {layout_hint}")
    try:
        table = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} is not valid JSON ({one_line(error)}); expected {JSON_FORM}"
        ) from None
    if not isinstance(table, dict) or not table:
        raise UserError(f"{path} must be a non-empty JSON object; expected {JSON_FORM}")
    pairs = []
    for relative, label in table.items():
        if isinstance(label, str) and label.strip().isdecimal():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int):
            raise UserError(
                f"{path}: label {one_line(repr(label))} of '{one_line(relative)}' is not an "
                f"integer; expected {JSON_FORM}"
            )
        pairs.append((relative, label))
    return pairs
