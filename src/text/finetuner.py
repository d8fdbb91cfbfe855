"""The LightningModule for text tasks: the vision ``FineTuner`` (same objectives, optimiser,
checkpoints, diagnostics) with GLUE's metrics or GSM-8K's generation-based exact match.

Logged: ``train/acc`` (classification accuracy, or answer-token accuracy for the LM; none for
STS-B), ``val/<metric>`` and ``test/<metric>`` per :mod:`src.text.metrics` for GLUE; for GSM-8K
``val/loss`` and ``val/acc`` (answer tokens, teacher-forced) and ``test/exact_match`` (greedy
generation from the question alone). ``val/fp_distance`` is the objective's own distance between
the outputs and those with every adapter branch off.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric

from src.finetuner import FineTuner
from src.text.metrics import ExactMatch, GlueMetrics
from src.text.objectives import IGNORE, make_objective, next_token_view


def answer_token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    logits, labels = next_token_view(logits, labels)
    answer = labels != IGNORE
    hits = (logits.argmax(-1) == labels) & answer
    count = int(answer.sum())
    return (float(hits.sum()) / count if count else 0.0), count


class TextFineTuner(FineTuner):
    def __init__(
        self,
        model: nn.Module,
        regulariser,
        num_classes: int,
        task: str,
        objective: str,
        max_new_tokens: int = 256,
        **finetuner_kwargs,
    ):
        self.task_name = task
        self.objective_name = objective
        super().__init__(model, regulariser, num_classes, **finetuner_kwargs)
        self.save_hyperparameters(ignore=["model", "regulariser"])
        self.objective = make_objective(objective)
        self.max_new_tokens = max_new_tokens
        self.references: list[str] = []
        self.tokenizer = None

    @property
    def is_lm(self) -> bool:
        return self.objective_name == "causal_lm"

    def build_metrics(self, num_classes: int) -> None:
        if self.is_lm:
            self.train_acc = MeanMetric()
            self.val_acc = MeanMetric()
            self.val_loss = MeanMetric()
            self.test_acc = ExactMatch()
        else:
            train = GlueMetrics(self.task_name, num_classes).metrics
            self.train_acc = train["acc"] if "acc" in train else None  # STS-B: none
            self.val_acc = GlueMetrics(self.task_name, num_classes)
            self.test_acc = GlueMetrics(self.task_name, num_classes)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None:
            self.regulariser.prepare(datamodule.train_size, self.hparams.num_classes)
        if stage == "test" and datamodule is not None and self.is_lm:
            self.references = datamodule.references("test")
            self.tokenizer = datamodule.tokenizer
        self.test_accs = nn.ModuleList([self.test_acc])  # one test set

    def log_train_metrics(self, parts) -> None:
        if self.is_lm:
            acc, count = answer_token_accuracy(parts.logits.detach(), parts.targets)
            if count:
                self.train_acc.update(acc, count)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        elif self.train_acc is not None:  # no accuracy for STS-B's regression
            self.train_acc(parts.logits.detach(), parts.targets)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

    def _log_glue(self, stage: str, metrics: GlueMetrics, outputs, y, prog_bar: bool) -> None:
        metrics.update(outputs, y)
        for name, metric in metrics.metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=prog_bar, batch_size=y.shape[0])

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y, _ = batch
        outputs = self.model(x)
        if self.is_lm:
            acc, count = answer_token_accuracy(outputs, y)
            if count:
                self.val_acc.update(acc, count)
                self.val_loss.update(self.objective.loss(outputs, y), count)
            self.log("val/acc", self.val_acc, prog_bar=True, batch_size=x.shape[0])
            self.log("val/loss", self.val_loss, batch_size=x.shape[0])
        else:
            self._log_glue("val", self.val_acc, outputs, y, prog_bar=True)
        if self.hparams.fp_distance:
            distance = self.objective.distance(outputs, self._pretrained_logits(x), y)
            self.val_fp_distance.update(distance, x.shape[0])
            self.log("val/fp_distance", self.val_fp_distance, batch_size=x.shape[0])

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y, index = batch
        if not self.is_lm:
            self._log_glue("test", self.test_acc, self.model(x), y, prog_bar=False)
            return
        tok = self.tokenizer
        new = self.model.generate(x, self.max_new_tokens, tok.pad_token_id, tok.eos_token_id)
        texts = tok.batch_decode(new, skip_special_tokens=True)
        self.test_acc.update_texts(texts, [self.references[i] for i in index.tolist()])
        self.log("test/exact_match", self.test_acc, batch_size=x.shape[0])
