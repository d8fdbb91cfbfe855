"""Write GSM-8K-style ``train.jsonl`` / ``test.jsonl`` from reasoning-gym's ``gsm_symbolic``.

reasoning-gym's ``gsm_symbolic`` generator instantiates GSM-8K problem templates (GSM-Symbolic)
with fresh names and numbers from a seed, each with a worked answer whose last line is
``#### N``. This writes them in the original GSM-8K layout, one JSON object a line::

    <out>/train.jsonl   {"question": "...", "answer": "step\\nstep\\n#### 42"}
    <out>/test.jsonl
    <out>/prepare_demo.json   settings, sizes, what was dropped and why

Checks: the answer's last line is ``#### N``; N, as printed, equals the generator's own answer
value; no test question is also a training question. A problem that fails a check is dropped
and counted (reported on the command line and in prepare_demo.json). reasoning-gym appends
"Give the result as your final answer. Do not include units." to every question; GSM-8K has no
such sentence, so it is removed.

    python -m tools.demo_assets.text_gsm8k [--out data/gsm8k] [--n-train 1000] [--n-test 250]
        [--seed 0] [--force]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

from src.cli.entry import report_user_errors
from src.errors import UserError
from tools.demo_assets.common import atomic_output

DEFAULT_OUT = Path("data/gsm8k")
META_FILE = "prepare_demo.json"
GENERATOR = "gsm_symbolic"
PROMPT_SUFFIX = " Give the result as your final answer. Do not include units."
# The test draw's seeds start this far from the training draw's: reasoning-gym seeds problem i
# with seed + i, so two draws closer than their size would share problems.
TEST_SEED_OFFSET = 1_000_000
FINAL = re.compile(r"^#### (-?[0-9][0-9,]*(?:\.[0-9]+)?)$")


def final_answer(answer: str) -> str:
    """The number on a GSM-8K answer's last line, ``#### N``; UserError if there is none."""
    last = answer.rstrip("\n").rsplit("\n", 1)[-1].strip()
    match = FINAL.match(last)
    if match is None:
        raise UserError(f"answer does not end in '#### N': last line {last!r}")
    return match.group(1)


def as_number(text: str) -> float:
    return float(text.replace(",", ""))


def to_record(entry: dict) -> tuple[dict | None, str | None]:
    """One reasoning-gym entry as a GSM-8K record, or (None, why it is dropped)."""
    question = entry["question"]
    if question.endswith(PROMPT_SUFFIX):
        question = question[: -len(PROMPT_SUFFIX)]
    answer = entry["metadata"]["answer_cot"].strip()
    try:
        printed = final_answer(answer)
    except UserError:
        return None, "no_final_line"
    if as_number(printed) != float(entry["metadata"]["answer_value"]):
        return None, "final_number_wrong"
    return {"question": question, "answer": answer}, None


def generate(seed: int, size: int) -> list[dict]:
    """``size`` reasoning-gym gsm_symbolic entries from ``seed``."""
    try:
        import reasoning_gym
    except ImportError as exc:
        raise UserError("reasoning-gym is not installed; pip install reasoning-gym") from exc
    return list(reasoning_gym.create_dataset(GENERATOR, seed=seed, size=size))


def convert(
    entries: Iterable[dict], exclude_questions: set[str] = frozenset()
) -> tuple[list[dict], dict[str, int]]:
    """Records that pass the checks, and how many were dropped for each reason."""
    records, dropped, seen = [], {}, set(exclude_questions)
    for entry in entries:
        record, why = to_record(entry)
        if record is not None and record["question"] in seen:
            record, why = None, "duplicate_question"
        if record is None:
            dropped[why] = dropped.get(why, 0) + 1
            continue
        seen.add(record["question"])
        records.append(record)
    return records, dropped


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def prepare(
    out: Path = DEFAULT_OUT,
    n_train: int = 1000,
    n_test: int = 250,
    seed: int = 0,
    force: bool = False,
    entries: tuple[list[dict], list[dict]] | None = None,
) -> dict:
    """Write ``train.jsonl`` and ``test.jsonl``; ``entries`` (train, test) replaces generation."""
    out = Path(out)
    settings = {"generator": GENERATOR, "n_train": n_train, "n_test": n_test, "seed": seed}
    meta_path = out / META_FILE
    if (
        not force
        and meta_path.is_file()
        and (out / "train.jsonl").is_file()
        and (out / "test.jsonl").is_file()
    ):
        prev = json.loads(meta_path.read_text())["settings"]
        if prev != settings:  # never silently keep data built with other settings
            diff = sorted(k for k in settings if prev.get(k) != settings[k])
            raise UserError(
                f"{out} was built with other settings "
                f"({', '.join(f'{k}={prev.get(k)}' for k in diff)}); pass --force to rebuild it"
            )
        return {"out": str(out), "settings": settings, "skipped": True}
    if min(n_train, n_test) <= 0:
        raise UserError(f"--n-train {n_train} / --n-test {n_test}: both must be positive")
    if entries is None:
        entries = (generate(seed, n_train), generate(seed + TEST_SEED_OFFSET, n_test))
    train, dropped_train = convert(entries[0])
    test, dropped_test = convert(entries[1], {r["question"] for r in train})
    meta = {
        "settings": settings,
        "test_seed": seed + TEST_SEED_OFFSET,
        "sizes": {"train": len(train), "test": len(test)},
        "dropped": {"train": dropped_train, "test": dropped_test},
    }
    with atomic_output(out) as tmp:
        tmp.mkdir()
        write_jsonl(tmp / "train.jsonl", train)
        write_jsonl(tmp / "test.jsonl", test)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return {**meta, "out": str(out), "skipped": False}


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    # No source file: the problems are generated, so the shared asset_parser does not fit.
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="seed of the training draw")
    p.add_argument("--force", action="store_true", help="rebuild the output even if complete")
    p.add_argument("--n-train", type=int, default=1000, help="problems generated for train.jsonl")
    p.add_argument("--n-test", type=int, default=250, help="problems generated for test.jsonl")
    _build(p.parse_args(argv))


def _build(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    s = prepare(a.out, a.n_train, a.n_test, a.seed, a.force)
    if s["skipped"]:
        print(f"text_gsm8k: {a.out} already complete, nothing to do (--force rebuilds)")
        return
    print(
        f"text_gsm8k: wrote {a.out} (train {s['sizes']['train']}, test {s['sizes']['test']}; "
        f"dropped {s['dropped']}) in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
