"""Tiny GLUE and GSM-8K files in the layouts users have: the classic glue_data tsv download
(each task's own columns and header rules), datasets folders (parquet files and save_to_disk's
Arrow streams), and GSM-8K's jsonl."""

from __future__ import annotations

import json
from pathlib import Path

POSITIVE = ["the movie was very good", "a great film", "it is great and good", "very good plot"]
NEGATIVE = ["a terrible plot", "the film was bad", "it is not good", "bad actor and bad movie"]


def pairs(n: int):
    """n (sentence1, sentence2, label) rows: label 0 when both halves agree in sentiment."""
    rows = []
    for i in range(n):
        a = POSITIVE[i % 4]
        b = POSITIVE[(i + 1) % 4] if i % 2 == 0 else NEGATIVE[i % 4]
        rows.append((a, b, i % 2))
    return rows


def write_glue_tsv(root: Path, n_train: int = 16, n_dev: int = 8) -> Path:
    """glue_data/{CoLA,SST-2,MRPC,STS-B,RTE,QNLI}/{train,dev,test}.tsv with GLUE's columns."""
    glue = Path(root) / "glue_data"
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = pairs(n)
        # CoLA: no header; source, label, original label (or blank), sentence.
        _write(glue / "CoLA" / f"{split}.tsv", [], [["gj04", str(y), "", a] for a, _, y in rows])
        _write(
            glue / "SST-2" / f"{split}.tsv",
            ["sentence", "label"],
            [[a, str(y)] for a, _, y in rows],
        )
        _write(
            glue / "MRPC" / f"{split}.tsv",
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            [[str(y), str(100 + i), str(200 + i), a, b] for i, (a, b, y) in enumerate(rows)],
        )
        _write(
            glue / "STS-B" / f"{split}.tsv",
            "index genre filename year old_index source1 source2 sentence1 sentence2 score".split(),
            [
                [
                    str(i),
                    "main-captions",
                    "MSRvid",
                    "2012test",
                    str(i),
                    "none",
                    "none",
                    a,
                    b,
                    f"{(1 - y) * 4.2 + 0.4:.3f}",
                ]
                for i, (a, b, y) in enumerate(rows)
            ],
        )
        names = ("entailment", "not_entailment")
        _write(
            glue / "RTE" / f"{split}.tsv",
            ["index", "sentence1", "sentence2", "label"],
            [[str(i), a, b, names[y]] for i, (a, b, y) in enumerate(rows)],
        )
        _write(
            glue / "QNLI" / f"{split}.tsv",
            ["index", "question", "sentence", "label"],
            [[str(i), a + " ?", b, names[y]] for i, (a, b, y) in enumerate(rows)],
        )
    for task in ("CoLA", "SST-2"):  # test files: index + text, no labels
        _write(glue / task / "test.tsv", ["index", "sentence"], [["0", POSITIVE[0]]])
    return glue


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_glue_datasets(root: Path, task: str = "rte", kind: str = "parquet", n: int = 16) -> Path:
    """A datasets folder for one GLUE task: ``<task>/{train,validation}-*.parquet`` (the hub's
    layout) or ``save_to_disk`` output (``dataset_dict.json`` + ``<split>/data-*.arrow``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(root) / task
    for split, count in (("train", n), ("validation", n // 2)):
        rows = pairs(count)
        columns = {"sentence1": [a for a, _, _ in rows], "sentence2": [b for _, b, _ in rows]}
        if task == "stsb":
            columns["label"] = [float((1 - y) * 4.2 + 0.4) for *_, y in rows]
        else:
            columns["label"] = [y for *_, y in rows]
        columns["idx"] = list(range(count))
        table = pa.table(columns)
        if kind == "parquet":
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / f"{split}-00000-of-00001.parquet")
        else:
            (folder / split).mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(folder / split / "data-00000-of-00001.arrow"), "wb") as sink:
                with pa.ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
            (folder / split / "state.json").write_text(json.dumps({"_data_files": []}))
    if kind != "parquet":
        (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    return folder


PROBLEMS = [
    ("Tom has {a} apples and buys {b} more. How many apples has he?", "{a} + {b} = {s}"),
    ("A pen costs {a} dollars. How much do {b} pens cost?", "{a} * {b} = {p}"),
]


def write_gsm8k(root: Path, n_train: int = 12, n_test: int = 4) -> Path:
    """gsm8k/{train,test}.jsonl as released: question, answer ending in '#### N'."""
    folder = Path(root) / "gsm8k"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(n):
            a, b = 2 + i % 5, 3 + i % 4
            question, work = PROBLEMS[i % 2]
            values = dict(a=a, b=b, s=a + b, p=a * b)
            final = values["s"] if i % 2 == 0 else values["p"]
            answer = f"{work.format(**values)}\n#### {final:,}"
            lines.append(json.dumps({"question": question.format(**values), "answer": answer}))
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
