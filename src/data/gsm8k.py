"""GSM-8K as released: ``<root>/gsm8k/{train,test}.jsonl`` (or the repository's
``grade_school_math/data/``), one ``{"question": ..., "answer": "... #### N"}`` per line.

A training example is ``prompt + answer + EOS`` with the prompt ``"Question: <q>\\nAnswer:"`` and
the answer ``" <worked answer ending in #### N>"``; its labels are the answer's tokens and EOS,
and ``IGNORE`` on the prompt, so the loss (and PACE's consistency) covers the answer only.
Validation scores the same format teacher-forced; the test feeds the prompt alone, left-padded,
and the module generates greedily (``data.max_new_tokens``) and compares final numbers.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from src.data.text_tokens import (
    TextDataModule,
    TokenDataset,
    cached_tokens,
    file_key,
    tokenizer_key,
)
from src.errors import UserError
from src.text.objectives import IGNORE

PROMPT = "Question: {question}\nAnswer:"
LAYOUT = 'gsm8k/{train,test}.jsonl (lines of {"question": ..., "answer": "... #### N"})'
TUNE_FRACTION = 0.05


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{line_no}: not a JSON line ({error.msg})") from None
            if not isinstance(row, dict) or not {"question", "answer"} <= set(row):
                raise UserError(f"{path}:{line_no}: needs the keys 'question' and 'answer'")
            if "####" not in row["answer"]:
                raise UserError(
                    f"{path}:{line_no}: the answer does not end in '#### <number>' as GSM-8K's do"
                )
            rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no problems")
    return rows


class GSM8KDataModule(TextDataModule):
    benchmark = "gsm8k"
    objective = "causal_lm"
    label_pad = IGNORE
    protocols = {"final": "train -> test", "tune": "95 % train -> 5 % of train"}

    def __init__(
        self,
        root: str,
        task: str = "gsm8k",
        split_seed: int = 0,
        max_new_tokens: int = 256,
        limit_test: int | None = None,
        **kwargs,
    ):
        super().__init__(root, task, **kwargs)
        if self.protocol not in self.protocols:
            raise UserError(
                f"unknown GSM-8K protocol '{self.protocol}'; valid: {', '.join(self.protocols)}"
            )
        self.num_classes = 1  # unused by the LM objective; the protocol wants a number
        self.split_seed = split_seed
        self.max_new_tokens = max_new_tokens
        self.limit_test = limit_test

    def folder(self) -> Path:
        root = Path(self.root).expanduser()
        for candidate in (root / "gsm8k", root / "grade_school_math" / "data", root):
            if (candidate / "train.jsonl").is_file():
                return candidate
        raise UserError(f"GSM-8K not found under {root}: expected {LAYOUT}; check data.root")

    def split_file(self, split: str) -> Path:
        path = self.folder() / f"{split}.jsonl"
        if not path.is_file():
            raise UserError(f"GSM-8K: {path} is missing ({LAYOUT})")
        return path

    def splits(self) -> dict[str, str]:
        if self.protocol == "tune":
            return {"train": "train[tune]", "val": "train[held]", "test": "train[held]"}
        return {"train": "train", "val": "test", "test": "test"}

    def _tokens(self, split: str) -> dict:
        tok = self.tokenizer
        base = split.partition("[")[0]
        key = "-".join(
            [file_key([self.split_file(base)]), tokenizer_key(tok), str(self.max_length)]
        )

        def make() -> dict:
            prompts, answers = [], []
            for row in read_jsonl(self.split_file(base)):
                prompts.append(tok(PROMPT.format(question=row["question"]))["input_ids"])
                answer = tok(" " + row["answer"], add_special_tokens=False)["input_ids"]
                answers.append(answer + [tok.eos_token_id])
            return {
                "prompts": [torch.tensor(p, dtype=torch.int32) for p in prompts],
                "answers": [torch.tensor(a, dtype=torch.int32) for a in answers],
            }

        return cached_tokens(self.cache_dir, f"gsm8k-{base}", key, make)

    def _selection(self, split: str, count: int) -> list[int]:
        base, _, part = split.partition("[")
        order = list(range(count))
        if part:
            random.Random(self.split_seed).shuffle(order)
            held = max(1, round(TUNE_FRACTION * count))
            return sorted(order[held:]) if part.startswith("tune") else sorted(order[:held])
        return order

    def _test_limit(self, chosen: list[int], role: str) -> list[int]:
        return chosen[: self.limit_test] if role == "test" and self.limit_test else chosen

    def tokenised(self, split: str, role: str) -> TokenDataset:
        tokens = self._tokens(split)
        chosen = self._test_limit(self._selection(split, len(tokens["prompts"])), role)
        ids, labels = [], []
        for i in chosen:
            prompt, answer = tokens["prompts"][i].long(), tokens["answers"][i].long()
            if role == "test":  # the prompt alone; the model writes the answer
                ids.append(prompt[-self.max_length :])
                labels.append(torch.tensor([IGNORE]))
                continue
            seq = torch.cat([prompt, answer])[: self.max_length]
            lab = torch.cat([torch.full_like(prompt, IGNORE), answer])[: self.max_length]
            ids.append(seq)
            labels.append(lab)
        return TokenDataset(ids, labels, pad_side="left" if role == "test" else "right")

    def references(self, role: str = "test") -> list[str]:
        """The reference answers of ``role``'s examples, in dataset order."""
        split = self.splits()[role]
        rows = read_jsonl(self.split_file(split.partition("[")[0]))
        chosen = self._test_limit(self._selection(split, len(rows)), role)
        return [rows[i]["answer"] for i in chosen]

    def describe(self) -> str:
        split = self.splits()
        return (
            f"gsm8k ({self.folder()}) protocol={self.protocol}: train={split['train']} "
            f"({self.train_size}) val={split['val']} ({len(self.dataset('val'))}, teacher-forced) "
            f"test={split['test']} ({len(self.dataset('test'))}, greedy generation up to "
            f"{self.max_new_tokens} tokens); max_length {self.max_length}"
        )
