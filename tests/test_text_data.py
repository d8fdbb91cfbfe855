"""GLUE (classic tsv, parquet, save_to_disk) and GSM-8K (jsonl) as users have them: reading,
tokenising once into the cache, batches, bad files, metrics and src.data.check."""

from __future__ import annotations

import pytest
import torch

from src.data.check import main as check_main
from src.data.glue import GLUE_TASKS, GLUEDataModule
from src.data.gsm8k import PROMPT, GSM8KDataModule
from src.errors import UserError
from src.text.metrics import GlueMetrics, final_number, main_metric
from src.text.objectives import IGNORE
from tests.text_data import write_glue_datasets, write_glue_tsv, write_gsm8k
from tests.text_models import save_tiny_decoder, save_tiny_encoder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_models")
    return {
        "roberta": save_tiny_encoder(root / "roberta", "roberta"),
        "phi3": save_tiny_decoder(root / "phi3", "phi3"),
    }


def glue(root, task, models, **kwargs):
    tokenizer = {"name": None, "path": str(models["roberta"])}
    return GLUEDataModule(str(root), task, tokenizer=tokenizer, batch_size=4, **kwargs)


@pytest.mark.parametrize("task", list(GLUE_TASKS))
def test_every_glue_task_reads_its_classic_tsv(tmp_path, task, models):
    write_glue_tsv(tmp_path)
    dm = glue(tmp_path, task, models)
    texts, labels = dm.read("train")
    assert len(texts) == 16 and len(texts[0]) == len(GLUE_TASKS[task].text)
    if task == "stsb":
        assert dm.num_classes == 1 and dm.objective == "regression"
        assert labels[0] == pytest.approx(4.6) and labels[1] == pytest.approx(0.4)
    else:
        assert labels[:4] == [0, 1, 0, 1]
    assert texts[0][0].startswith("the movie was very good")  # CoLA: 4th column, no header


def test_cola_without_header_keeps_its_first_line_and_test_files_are_not_read(tmp_path, models):
    write_glue_tsv(tmp_path, n_train=3)
    dm = glue(tmp_path, "cola", models)
    assert len(dm.read("train")[0]) == 3  # a header would have swallowed one


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_a_datasets_folder_gives_the_same_tokens_as_the_tsv(tmp_path, models, kind):
    write_glue_tsv(tmp_path / "classic")
    write_glue_datasets(tmp_path / "hf", "rte", kind)
    classic = glue(tmp_path / "classic", "rte", models)
    hf = glue(tmp_path / "hf", "rte", models)
    assert hf.locate()[0] == "datasets" and classic.locate()[0] == "tsv"
    a, b = classic.dataset("train"), hf.dataset("train")
    assert a.labels == b.labels
    assert all(torch.equal(x, y) for x, y in zip(a.ids, b.ids, strict=True))
    assert len(hf.dataset("val")) == 8  # validation = GLUE's dev


def test_batches_are_inputs_label_index(tmp_path, models):
    write_glue_tsv(tmp_path)
    dm = glue(tmp_path, "mrpc", models)
    dm.setup("fit")
    x, y, index = next(iter(dm.val_dataloader()))
    assert x.shape[:2] == (4, 2) and x.dtype == torch.long
    assert y.tolist() == [0, 1, 0, 1] and index.tolist() == [0, 1, 2, 3]
    lengths = x[:, 1].sum(1)
    assert lengths.max() == x.shape[2]  # padded to the batch's longest only
    assert (x[:, 1, 0] == 1).all()  # right padding: every row starts with a real token
    shorter = int(lengths.argmin())
    pad = dm.tokenizer.pad_token_id
    assert (x[shorter, 0, int(lengths[shorter]) :] == pad).all()


def test_tokens_are_cached_and_a_changed_file_is_tokenised_again(tmp_path, models):
    glue_dir = write_glue_tsv(tmp_path / "data")
    cache = tmp_path / "cache"
    glue(tmp_path / "data", "rte", models, cache_dir=str(cache)).setup("fit")
    files = sorted((cache / "tokens").glob("glue-rte-*.pt"))
    assert len(files) == 2  # train and dev
    stamp = {f: f.stat().st_mtime_ns for f in files}
    glue(tmp_path / "data", "rte", models, cache_dir=str(cache)).setup("fit")
    assert {f: f.stat().st_mtime_ns for f in files} == stamp  # read, not rewritten
    dev = glue_dir / "RTE" / "dev.tsv"
    dev.write_text(dev.read_text().replace("very good", "very bad"))
    dm = glue(tmp_path / "data", "rte", models, cache_dir=str(cache))
    dm.setup("fit")
    assert len(list((cache / "tokens").glob("glue-rte-*.pt"))) == 3


def test_tune_protocol_holds_out_a_tenth_of_train(tmp_path, models):
    write_glue_tsv(tmp_path, n_train=40)
    dm = glue(tmp_path, "sst2", models, protocol="tune")
    assert len(dm.dataset("train")) == 36 and len(dm.dataset("val")) == 4


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda p: p.write_text("index\tsentence1\tsentence2\tlabel\n0\tonly one\n"),
            r"dev.tsv:2: 2",
        ),
        (
            lambda p: p.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n"),
            "label 'maybe'",
        ),
        (lambda p: p.write_text("idx\ttext\n"), "header has no column sentence1"),
    ],
)
def test_bad_tsv_lines_are_one_error_with_file_and_line(tmp_path, models, edit, message):
    glue_dir = write_glue_tsv(tmp_path)
    edit(glue_dir / "RTE" / "dev.tsv")
    with pytest.raises(UserError, match=message):
        glue(tmp_path, "rte", models).read("dev")


def test_missing_glue_names_the_layouts(tmp_path, models):
    with pytest.raises(UserError, match="glue_data/<TASK>/.*parquet"):
        glue(tmp_path, "qnli", models).locate()


def test_a_custom_single_sentence_task_reads_its_own_folder(tmp_path, models):
    """The text demo's layout (tools/demo_assets/text_tweets.py): glue_data/TWEETS-k2-s0/, SST-2's
    header, labels 0/1; the folder name is the task name, and a typo is one error naming it."""
    folder = tmp_path / "glue_data" / "TWEETS-k2-s0"
    folder.mkdir(parents=True)
    rows = {"train": ["Crooked Hillary!", "Stronger together. -H", "MAGA!", "I'm with her"],
            "dev": ["Sad!", "Love trumps hate"]}  # fmt: skip
    for split, texts in rows.items():
        lines = [f"{t}\t{i % 2}" for i, t in enumerate(texts)]
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n")
    dm = glue(tmp_path, "TWEETS-k2-s0", models)
    assert dm.num_classes == 2 and dm.objective == "classification"
    assert dm.read("train") == ([(t,) for t in rows["train"]], [0, 1, 0, 1])
    dm.setup("fit")
    assert dm.train_size == 4 and len(dm.dataset("val")) == 2  # final: train -> dev
    assert main_metric("TWEETS-k2-s0") == "acc"
    with pytest.raises(UserError, match="not one of cola.*glue_data/TWEETS-k2-s9/train.tsv"):
        glue(tmp_path, "TWEETS-k2-s9", models).locate()


# ---------------------------------------------------------------- GSM-8K


def gsm8k(root, models, **kwargs):
    tokenizer = {"name": None, "path": str(models["phi3"])}
    return GSM8KDataModule(str(root), tokenizer=tokenizer, batch_size=2, **kwargs)


def test_gsm8k_loss_covers_the_answer_only(tmp_path, models):
    write_gsm8k(tmp_path)
    dm = gsm8k(tmp_path, models)
    ids, labels, _ = dm.dataset("train")[0]
    tok = dm.tokenizer
    answer = labels != IGNORE
    assert tok.decode(ids[~answer]) == PROMPT.format(
        question="Tom has 2 apples and buys 3 more. How many apples has he?"
    )
    assert tok.decode(ids[answer]).strip() == "2 + 3 = 5\n#### 5</s>"
    assert torch.equal(ids[answer], labels[answer])


def test_gsm8k_test_batches_are_left_padded_prompts(tmp_path, models):
    write_gsm8k(tmp_path)
    dm = gsm8k(tmp_path, models)
    x, _, index = next(iter(dm.test_dataloader()))
    assert (x[:, 1, -1] == 1).all()  # left padding: every prompt ends at the last column
    text = dm.tokenizer.decode(x[0, 0][x[0, 1].bool()])
    assert text.endswith("Answer:")
    assert dm.references("test")[0].endswith("#### 5") and index.tolist() == [0, 1]


@pytest.mark.parametrize(
    "line,message",
    [
        ("not json", "train.jsonl:1: not a JSON line"),
        ('{"question": "q"}', "needs the keys"),
        ('{"question": "q", "answer": "42"}', "#### <number>"),
    ],
)
def test_bad_gsm8k_lines(tmp_path, models, line, message):
    folder = write_gsm8k(tmp_path)
    (folder / "train.jsonl").write_text(line + "\n")
    with pytest.raises(UserError, match=message):
        gsm8k(tmp_path, models).dataset("train")


@pytest.mark.parametrize(
    "text,number",
    [
        ("so 3 + 4 = 7\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("#### $18.00", "18"),
        ("#### -3.5", "-3.5"),
        ("The answer is 12 apples, 14 total", "14"),  # no ####: the last number
        ("no number here", None),
    ],
)
def test_final_number_normalises(text, number):
    assert final_number(text) == number


# ---------------------------------------------------------------- metrics and the checker


def test_glue_metrics_follow_the_convention():
    assert [main_metric(t) for t in ("glue_cola", "glue_stsb", "glue_mrpc", "glue_rte")] == [
        "mcc",
        "pearson",
        "acc",
        "acc",
    ]
    cola = GlueMetrics("cola", 2)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # preds 0 1 1 0
    cola.update(logits, torch.tensor([0, 1, 0, 0]))
    tp, tn, fp, fn = 1, 2, 1, 0
    mcc = (tp * tn - fp * fn) / ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    assert cola.metrics["mcc"].compute().item() == pytest.approx(mcc)
    stsb = GlueMetrics("stsb", 1)
    stsb.update(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 3.0, 5.0]))
    assert stsb.metrics["spearman"].compute().item() == pytest.approx(1.0, abs=1e-5)
    mrpc = GlueMetrics("mrpc", 2)
    mrpc.update(logits, torch.tensor([0, 1, 0, 0]))
    assert mrpc.metrics["f1"].compute().item() == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))


def test_data_check_reports_text_benchmarks(tmp_path, capsys):
    write_glue_tsv(tmp_path)
    write_gsm8k(tmp_path)
    (tmp_path / "glue_data" / "QNLI" / "dev.tsv").write_text("index\tquestion\n")
    assert check_main([str(tmp_path), "--benchmark", "glue", "--benchmark", "gsm8k"]) == 1
    out = capsys.readouterr().out
    assert "glue/rte                     ok (tsv" in out and "gsm8k:" in out
    assert "glue/qnli                    BROKEN" in out and "header has no column" in out


def test_drop_last_that_drops_every_batch_is_an_error(tmp_path, models):
    write_glue_tsv(tmp_path)  # 16 training examples
    dm = GLUEDataModule(
        str(tmp_path), "rte", tokenizer={"name": None, "path": str(models["roberta"])},
        batch_size=32, drop_last=True,
    )  # fmt: skip
    with pytest.raises(UserError, match="drops every training batch: 16 training examples"):
        dm.train_dataloader()
