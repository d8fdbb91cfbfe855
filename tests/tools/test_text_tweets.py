"""Election tweets (Orange .tab) -> GLUE single-sentence tsv folders, on a tiny .tab file."""

import csv
import json

import pytest

from src.errors import UserError
from tests.test_cli import error_line
from tools.demo_assets.text_tweets import (
    HEADER,
    TASK,
    clean_text,
    main,
    prepare,
    read_orange_tab,
    read_tsv,
)

COLUMNS = ["Is retweet", "Author", "Content", "Place"]
PER_CLASS = 12


def _write_tab(path, rows):
    """An Orange .tab file: names, types and flags rows, then data, tab-separated, csv-quoted."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerow(["discrete", "discrete", "string", "string"])
        w.writerow(["", "class", "meta include=True", "meta"])
        w.writerows(rows)


def _rows():
    rows = []
    for i in range(PER_CLASS):
        rows.append(
            ["False", "HillaryClinton", f"Stronger together, number {i}. https://t.co/a{i}", ""]
        )
        rows.append(["False", "realDonaldTrump", f'"Make it great" again\tand again {i}!', ""])
    # the same text once cleaned (a tab is a space): a duplicate
    rows.append(["True", "realDonaldTrump", '"Make it great" again and again 0!', ""])
    rows.append(["False", "HillaryClinton", "https://t.co/xyz", ""])  # a bare link
    rows.append(["False", "HillaryClinton", "Same words", ""])  # under both accounts
    rows.append(["False", "realDonaldTrump", "Same words", ""])
    return rows


@pytest.fixture
def tab(tmp_path):
    path = tmp_path / "election-tweets-2016.tab"
    _write_tab(path, _rows())
    return path


def test_orange_tab_is_read_with_its_quoting(tab):
    names, rows = read_orange_tab(tab)
    assert names == COLUMNS
    assert len(rows) == 2 * PER_CLASS + 4
    # csv quoting is undone: the tab inside a quoted field stays in the field
    assert rows[1]["Content"] == '"Make it great" again\tand again 0!'


def test_clean_text_is_one_tsv_safe_line():
    assert clean_text("A &amp; B\tC\nD  https://t.co/Ab1?x=2 end") == "A & B C D http end"


def test_layout_sizes_and_nested_draws(tab, tmp_path):
    out = tmp_path / "glue_data"
    s = prepare(tab, out, shots=(1, 2, 4), seeds=(0, 1), n_dev=4, n_test=6)
    assert not s["skipped"]
    # duplicates: repeated rows (the retweet and the second "Same words"); conflicting: texts
    assert s["rows_dropped"] == {"no_words": 1, "duplicate": 2, "conflicting_labels": 1}
    assert s["label_names"] == ["HillaryClinton", "realDonaldTrump"]
    assert s["class_counts"] == [PER_CLASS, PER_CLASS]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [TASK] + [f"{TASK}-k{k}-s{seed}" for k in (1, 2, 4) for seed in (0, 1)]
    )
    full = {split: read_tsv(out / TASK / f"{split}.tsv") for split in ("train", "dev", "test")}
    for rows in full.values():
        assert all("\t" not in t and "\n" not in t and lab in (0, 1) for t, lab in rows)
    assert [len(full[s]) for s in ("train", "dev", "test")] == [2 * PER_CLASS - 10, 4, 6]
    for split in ("dev", "test"):  # balanced
        assert sum(lab for _, lab in full[split]) == len(full[split]) // 2
    sets = {k: {t for t, _ in v} for k, v in full.items()}
    assert not (
        sets["train"] & sets["dev"] or sets["train"] & sets["test"] or sets["dev"] & sets["test"]
    )
    for seed in (0, 1):
        draws = {k: read_tsv(out / f"{TASK}-k{k}-s{seed}" / "train.tsv") for k in (1, 2, 4)}
        for k, rows in draws.items():
            assert [lab for _, lab in rows].count(0) == k and [lab for _, lab in rows].count(1) == k
            assert set(rows) <= set(full["train"])  # from the pool, never dev or test
            # dev and test are the fixed ones in every folder
            for split in ("dev", "test"):
                path = out / f"{TASK}-k{k}-s{seed}" / f"{split}.tsv"
                assert path.read_text() == (out / TASK / f"{split}.tsv").read_text()
        assert set(draws[1]) <= set(draws[2]) <= set(draws[4])  # nested for one seed
    assert set(read_tsv(out / f"{TASK}-k4-s0" / "train.tsv")) != set(
        read_tsv(out / f"{TASK}-k4-s1" / "train.tsv")
    )
    first_line = (out / f"{TASK}-k1-s0" / "train.tsv").read_text().splitlines()[0]
    assert first_line == HEADER == "sentence\tlabel"
    meta = json.loads((out / f"{TASK}-k2-s1" / "prepare_demo.json").read_text())
    assert meta["sizes"] == {"train": 4, "dev": 4, "test": 6}


def test_same_settings_skip_other_settings_refuse(tab, tmp_path):
    out = tmp_path / "glue_data"
    kw = dict(shots=(1,), seeds=(0,), n_dev=4, n_test=6)
    prepare(tab, out, **kw)
    assert prepare(tab, out, **kw)["skipped"]
    with pytest.raises(UserError, match="--force"):
        prepare(tab, out, **{**kw, "n_dev": 2})
    assert not prepare(tab, out, **{**kw, "n_dev": 2}, force=True)["skipped"]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(n_dev=3), "multiple of 2"),
        (dict(n_test=40), "too few"),
        (dict(shots=(100,)), "--shots 100"),
    ],
)
def test_impossible_sizes_are_user_errors(tab, tmp_path, kw, message):
    base = dict(shots=(1,), seeds=(0,), n_dev=4, n_test=6)
    with pytest.raises(UserError, match=message):
        prepare(tab, tmp_path / "out", **{**base, **kw})
    assert not (tmp_path / "out" / TASK).exists()


def test_wrong_file_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "other.tab"
    bad.write_text("Category\tText\nd\tstring\nclass\t\nearn\tsome text\n")
    line = error_line(capsys, main, ["--source", str(bad), "--out", str(tmp_path / "o")])
    assert "no column Author, Content" in line
