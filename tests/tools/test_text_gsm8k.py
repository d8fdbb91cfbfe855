"""reasoning-gym gsm_symbolic -> GSM-8K train/test.jsonl: format, '#### N' parsing and checks."""

import importlib.util
import json

import pytest

from src.errors import UserError
from tools.demo_assets.text_gsm8k import (
    PROMPT_SUFFIX,
    convert,
    final_answer,
    prepare,
    read_jsonl,
)


def _entry(question: str, cot: str, value) -> dict:
    """An entry shaped like reasoning-gym's gsm_symbolic output."""
    return {
        "question": question + PROMPT_SUFFIX,
        "answer": str(value),
        "metadata": {"answer_cot": cot, "answer_value": value},
    }


@pytest.mark.parametrize(
    "answer, number",
    [
        ("3 + 4 = 7\n#### 7", "7"),
        ("a\nb\n#### -12\n", "-12"),
        ("#### 1,250", "1,250"),
        ("half is 2.5\n#### 2.5", "2.5"),
    ],
)
def test_final_answer_reads_the_last_line(answer, number):
    assert final_answer(answer) == number


@pytest.mark.parametrize("answer", ["7", "#### 7\nthe end", "#### seven", "####7", "#### 7 apples"])
def test_final_answer_refuses_other_endings(answer):
    with pytest.raises(UserError, match="#### N"):
        final_answer(answer)


def test_convert_checks_the_number_strips_the_prompt_and_dedups():
    entries = [
        _entry("Ann has 3 and gets 4. How many?", "3 + 4 = 7\n#### 7", 7),
        _entry("Bob has 5 and loses 2. How many?", "5 - 2 = 3\n#### 4", 3),  # wrong as printed
        _entry("Cy has 2.", "no final line", 2),
        _entry("Ann has 3 and gets 4. How many?", "3 + 4 = 7\n#### 7", 7),  # repeated
        _entry("Di has 1,000 and 250.", "1,000 + 250 = 1,250\n#### 1,250", 1250),
    ]
    records, dropped = convert(entries)
    assert records == [
        {"question": "Ann has 3 and gets 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "Di has 1,000 and 250.", "answer": "1,000 + 250 = 1,250\n#### 1,250"},
    ]
    assert dropped == {"final_number_wrong": 1, "no_final_line": 1, "duplicate_question": 1}
    # a test problem that is also a training problem is dropped
    test, dropped = convert(entries[:1], {records[0]["question"]})
    assert test == [] and dropped == {"duplicate_question": 1}


def test_jsonl_layout(tmp_path):
    train = [_entry(f"Q{i}: {i} + 1?", f"{i} + 1 = {i + 1}\n#### {i + 1}", i + 1) for i in range(5)]
    test = [_entry("Q0: 0 + 1?", "0 + 1 = 1\n#### 1", 1), _entry("T: 2 * 3?", "#### 6", 6)]
    s = prepare(tmp_path / "gsm8k", n_train=5, n_test=2, entries=(train, test))
    assert s["sizes"] == {"train": 5, "test": 1}
    lines = (tmp_path / "gsm8k" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"question", "answer"}
        assert not record["question"].endswith(PROMPT_SUFFIX)
    assert read_jsonl(tmp_path / "gsm8k" / "test.jsonl") == [
        {"question": "T: 2 * 3?", "answer": "#### 6"}
    ]
    assert prepare(tmp_path / "gsm8k", n_train=5, n_test=2)["skipped"]
    with pytest.raises(UserError, match="--force"):
        prepare(tmp_path / "gsm8k", n_train=6, n_test=2)


@pytest.mark.skipif(
    importlib.util.find_spec("reasoning_gym") is None,
    reason="reasoning-gym is not installed (pip install reasoning-gym, or the textdemo extra)",
)
def test_real_generator_gives_checked_problems(tmp_path):
    s = prepare(tmp_path / "gsm8k", n_train=20, n_test=10, seed=3)
    assert s["dropped"]["train"].get("final_number_wrong", 0) == 0
    train = read_jsonl(tmp_path / "gsm8k" / "train.jsonl")
    test = read_jsonl(tmp_path / "gsm8k" / "test.jsonl")
    assert len(train) + s["dropped"]["train"].get("duplicate_question", 0) == 20
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for record in train + test:
        float(final_answer(record["answer"]).replace(",", ""))
        assert "\n" in record["answer"]  # worked steps before the final line
