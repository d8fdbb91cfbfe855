"""GLUE as users have it: the classic ``glue_data/<TASK>/{train,dev,test}.tsv`` download, or a
Hugging Face ``datasets`` folder (``save_to_disk`` output or parquet files), read with pyarrow.

Tasks are the paper's six (Table 5): CoLA, STS-B, MRPC, RTE, QNLI, SST-2. Labels on disk:

=======  ==========================================  ====================================
task     classic tsv (columns)                        datasets / parquet (columns)
=======  ==========================================  ====================================
cola     no header: source, label, author's, sentence  sentence, label
sst2     header: sentence, label                       sentence, label
mrpc     header: Quality, #1 ID, #2 ID, #1 String,     sentence1, sentence2, label
         #2 String (label = Quality)
stsb     header: index … sentence1, sentence2, score   sentence1, sentence2, label (float)
rte      header: index, sentence1, sentence2, label    sentence1, sentence2, label
         (entailment / not_entailment)                 (0 = entailment, 1 = not_entailment)
qnli     header: index, question, sentence, label      question, sentence, label (same)
=======  ==========================================  ====================================

GLUE's test labels are not public, so ``final`` trains on train and reports dev (the paper's and
LoRA's GLUE numbers are dev-set numbers); ``tune`` holds out a seeded 10 % of train as validation.

Any other task name is a custom two-class single-sentence task in SST-2's layout: the folder
``glue_data/<task>/`` (named exactly as ``data.task``) with ``{train,dev}.tsv`` headed
``sentence<TAB>label``, labels 0 and 1 — e.g. the offline text demo's ``TWEETS-k16-s0``
(``make text-data``).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from src.data.text_tokens import TextDataModule, TokenDataset, cached_tokens, file_key
from src.errors import UserError


@dataclass(frozen=True)
class GlueTask:
    folder: str  # the classic download's folder name
    text: tuple[str, ...]  # datasets column names of the one or two texts
    tsv_text: tuple[str, ...]  # tsv header names (or column numbers for CoLA)
    tsv_label: str | int
    labels: tuple[str, ...] | None  # tsv label strings in class order; None: numbers as they are
    header: bool = True
    num_classes: int = 2  # 1: regression


GLUE_TASKS = {
    "cola": GlueTask("CoLA", ("sentence",), (3,), 1, ("0", "1"), header=False),
    "sst2": GlueTask("SST-2", ("sentence",), ("sentence",), "label", ("0", "1")),
    "mrpc": GlueTask(
        "MRPC", ("sentence1", "sentence2"), ("#1 String", "#2 String"), "Quality", ("0", "1")
    ),
    "stsb": GlueTask(
        "STS-B",
        ("sentence1", "sentence2"),
        ("sentence1", "sentence2"),
        "score",
        None,
        num_classes=1,
    ),
    "rte": GlueTask(
        "RTE",
        ("sentence1", "sentence2"),
        ("sentence1", "sentence2"),
        "label",
        ("entailment", "not_entailment"),
    ),
    "qnli": GlueTask(
        "QNLI",
        ("question", "sentence"),
        ("question", "sentence"),
        "label",
        ("entailment", "not_entailment"),
    ),
}
# The datasets library's split names for the classic files.
HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
LAYOUT = (
    "glue_data/<TASK>/{train,dev}.tsv (the classic download), or a datasets folder <task>/ "
    "(save_to_disk output with dataset_dict.json, or train-*.parquet / validation-*.parquet)"
)
TUNE_FRACTION = 0.1


def custom_task(name: str) -> GlueTask:
    """A task outside GLUE's six: two classes, one sentence, SST-2's tsv layout, folder ``name``."""
    return GlueTask(name, ("sentence",), ("sentence",), "label", ("0", "1"))


def _read_tsv(path: Path, task: GlueTask) -> tuple[list[tuple[str, ...]], list]:
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None) if task.header else None
        if task.header and header is None:
            raise UserError(f"{path} is empty; restore it from the GLUE download")
        columns = list(task.tsv_text) + [task.tsv_label]
        if task.header:
            missing = [c for c in columns if c not in header]
            if missing:
                raise UserError(
                    f"{path}: header has no column {', '.join(map(str, missing))} (header: "
                    f"{', '.join(header)}); is this the GLUE file of task {task.folder}?"
                )
            index = [header.index(c) for c in columns]
        else:
            index = columns
        for line, row in enumerate(rows, start=2 if task.header else 1):
            if not row:
                continue
            if len(row) <= max(index):
                raise UserError(
                    f"{path}:{line}: {len(row)} tab-separated fields, expected at least "
                    f"{max(index) + 1}; repair the line or restore the file"
                )
            *text, label = (row[i] for i in index)
            texts.append(tuple(text))
            labels.append(_label(label, task, f"{path}:{line}"))
    return texts, labels


def _label(value, task: GlueTask, where: str):
    if task.labels is None:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: score {value!r} is not a number") from None
    text = str(value)
    if text in task.labels:
        return task.labels.index(text)
    raise UserError(f"{where}: label {value!r} is not one of {', '.join(task.labels)}")


def _read_table(files: list[Path], task: GlueTask, where: str) -> tuple[list, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file in files:
        if file.suffix == ".parquet":
            tables.append(pq.read_table(file))
        else:  # save_to_disk writes Arrow IPC streams
            with pa.memory_map(str(file)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
    table = pa.concat_tables(tables)
    columns = list(task.text) + ["label"]
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise UserError(
            f"{where}: no column {', '.join(missing)} (columns: {', '.join(table.column_names)}); "
            "is this the datasets folder of the right GLUE task?"
        )
    data = table.select(columns).to_pydict()
    texts = list(zip(*(data[c] for c in task.text), strict=True))
    labels = []
    for i, value in enumerate(data["label"]):
        if task.labels is None:
            labels.append(float(value))
        elif value in (0, 1):
            labels.append(int(value))
        else:
            raise UserError(f"{where}: row {i} has label {value!r}; expected 0 or 1")
    return texts, labels


def hf_split_files(folder: Path, split: str) -> list[Path]:
    """A datasets folder's files for one split (``validation`` for dev), or []."""
    name = HF_SPLITS[split]
    arrow = sorted((folder / name).glob("data-*.arrow"))
    if arrow:
        return arrow
    return sorted(folder.glob(f"{name}-*.parquet")) + sorted(
        (folder / name).glob("*.parquet") if (folder / name).is_dir() else []
    )


class GLUEDataModule(TextDataModule):
    benchmark = "glue"
    tasks = {name: t.num_classes for name, t in GLUE_TASKS.items()}
    protocols = {"final": "train -> dev (GLUE's reported number)", "tune": "90 % train -> 10 %"}

    def __init__(self, root: str, task: str, split_seed: int = 0, **kwargs):
        super().__init__(root, task, **kwargs)
        if self.protocol not in self.protocols:
            raise UserError(
                f"unknown GLUE protocol '{self.protocol}'; valid: {', '.join(self.protocols)}"
            )
        self.spec = GLUE_TASKS.get(task) or custom_task(task)
        self.num_classes = self.spec.num_classes
        self.objective = "regression" if self.num_classes == 1 else "classification"
        self.split_seed = split_seed
        self._found: tuple[str, Path] | None = None

    # ---------------------------------------------------------------- where the files are
    def locate(self) -> tuple[str, Path]:
        """(format, folder): ``tsv`` for the classic download, ``datasets`` for a datasets one."""
        if self._found is not None:
            return self._found
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UserError(
                f"GLUE root {root} does not exist; set data.root to a folder with {LAYOUT}"
            )
        for base in (root / "glue_data", root, root / "glue"):
            for name in (self.spec.folder, self.task, self.spec.folder.lower()):
                folder = base / name
                if (folder / "train.tsv").is_file():
                    self._found = ("tsv", folder)
                    return self._found
                if folder.is_dir() and hf_split_files(folder, "train"):
                    self._found = ("datasets", folder)
                    return self._found
        if self.task not in GLUE_TASKS:
            raise UserError(
                f"GLUE task '{self.task}' is not one of {', '.join(GLUE_TASKS)} and no custom task "
                f"folder {root}/glue_data/{self.task}/train.tsv (sentence<TAB>label) exists; "
                "check data.task and data.root"
            )
        raise UserError(
            f"GLUE task '{self.task}' not found under {root}: expected {LAYOUT}; check data.root"
        )

    def split_files(self, split: str) -> list[Path]:
        fmt, folder = self.locate()
        files = [folder / f"{split}.tsv"] if fmt == "tsv" else hf_split_files(folder, split)
        if not files or not files[0].is_file():
            raise UserError(f"GLUE {self.task}: no {split} split in {folder} ({LAYOUT})")
        return files

    def read(self, split: str) -> tuple[list, list]:
        fmt, folder = self.locate()
        files = self.split_files(split)
        if fmt == "tsv":
            return _read_tsv(files[0], self.spec)
        return _read_table(files, self.spec, str(folder / HF_SPLITS[split]))

    # ---------------------------------------------------------------- protocol and tokens
    def splits(self) -> dict[str, str]:
        if self.protocol == "tune":
            return {"train": "train[tune]", "val": "train[held]", "test": "train[held]"}
        return {"train": "train", "val": "dev", "test": "dev"}

    def _tokens(self, split: str) -> dict:
        tokenizer = self.tokenizer
        from src.data.text_tokens import tokenizer_key

        key = "-".join(
            [file_key(self.split_files(split)), tokenizer_key(tokenizer), str(self.max_length)]
        )

        def make() -> dict:
            texts, labels = self.read(split)
            columns = list(zip(*texts, strict=True))
            encoded = tokenizer(*columns, truncation=True, max_length=self.max_length)
            ids = [torch.tensor(seq, dtype=torch.int32) for seq in encoded["input_ids"]]
            return {"ids": ids, "labels": labels}

        return cached_tokens(self.cache_dir, f"glue-{self.task}-{split}", key, make)

    def tokenised(self, split: str, role: str) -> TokenDataset:
        base, _, part = split.partition("[")
        tokens = self._tokens(base)
        ids = [t.long() for t in tokens["ids"]]
        labels = list(tokens["labels"])
        if not ids:
            raise UserError(f"GLUE {self.task}: the {base} split is empty")
        if part:  # tune: a seeded held-out tenth of train
            order = list(range(len(ids)))
            random.Random(self.split_seed).shuffle(order)
            held = max(1, round(TUNE_FRACTION * len(ids)))
            keep = sorted(order[held:]) if part.startswith("tune") else sorted(order[:held])
            ids, labels = [ids[i] for i in keep], [labels[i] for i in keep]
        return TokenDataset(ids, labels, pad_side="right")

    def describe(self) -> str:
        fmt, folder = self.locate()
        split = self.splits()
        kind = "regression" if self.num_classes == 1 else f"{self.num_classes} classes"
        return (
            f"glue/{self.task} ({kind}, {fmt} files in {folder}) protocol={self.protocol}: "
            f"train={split['train']} ({self.train_size}) val={split['val']} "
            f"({len(self.dataset('val'))}) test={split['test']}; max_length {self.max_length}"
        )
