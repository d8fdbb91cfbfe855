"""The LightningModule: a PEFT model, its training objective, metrics and optimiser."""

from __future__ import annotations

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from timm.optim import create_optimizer_v2
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from src.adapters import count_parameters, set_branches_enabled
from src.adapters.sparse import set_loss_scale
from src.backbones.fingerprint import frozen_fingerprint
from src.errors import UserError, check_choice
from src.pace import Regulariser
from src.pace.consistency import squared_distance
from src.run.rng import capture_rng_states, restore_rng_states
from src.run.stopping import RunDiverged
from src.schedule import LR_SCHEDULES, epoch_cosine_scheduler, step_cosine_scheduler


class FineTuner(LightningModule):
    """Trains the trainable part of ``model`` with ``regulariser``'s objective.

    Logs ``train/{loss,ce,consistency,acc}``, ``val/acc``, ``test/acc`` (``test/acc/<name>`` per
    set when the datamodule has several test sets) and two diagnostics from
    the paper's theory: ``train/grad_norm`` (‖∇CE‖ over trainable parameters, Thm. 2) and
    ``val/fp_distance`` (squared logit distance to the same model with every adapter branch off,
    Thm. 3).
    """

    def __init__(
        self,
        model: nn.Module,
        regulariser: Regulariser,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 10,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-5,
        decay_1d: bool = False,
        schedule: str = "step",
        grad_norm_every: int | str = 10,
        fp_distance: bool = True,
    ):
        super().__init__()
        check_choice("recipe.lr_schedule", schedule, LR_SCHEDULES)
        # train/grad_norm costs one extra backward of the CE (docs/bench.md measures it).
        if grad_norm_every != "epoch" and not (
            isinstance(grad_norm_every, int) and grad_norm_every >= 0
        ):
            raise UserError(
                "diagnostics.grad_norm_every must be 'epoch', 0 (off) or a number of steps, "
                f"got {grad_norm_every!r}"
            )
        self.save_hyperparameters(ignore=["model", "regulariser"])
        self.model = model
        self.regulariser = regulariser
        self.build_metrics(num_classes)
        self.val_fp_distance = MeanMetric()
        # Checkpoints leave the frozen backbone out (see on_save_checkpoint), so a resume loads a
        # partial state dict; on_load_checkpoint checks the trainable part itself.
        self.strict_loading = False
        self._frozen_fingerprint: str | None = None
        # Epoch-level metrics of the checkpoint a resume starts from (see on_save_checkpoint).
        self.restored_metrics: dict[str, float] = {}
        self._use_test_sets(["test"], {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def build_metrics(self, num_classes: int) -> None:
        """The task's metrics (a text task's subclass builds its own: src/text/finetuner.py)."""
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def log_train_metrics(self, parts) -> None:
        self.train_acc(parts.logits.detach(), parts.targets)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None:
            self.regulariser.prepare(datamodule.train_size, self.hparams.num_classes)
        if stage == "test" and datamodule is not None:
            self._use_test_sets(
                getattr(datamodule, "test_set_names", ["test"]),
                getattr(datamodule, "class_subsets", {}),
            )

    def _use_test_sets(self, names: list[str], class_subsets: dict[str, list[int]]) -> None:
        """One accuracy per test set: ``test/acc`` for one set, ``test/acc/<name>`` for several.

        A set covering only some classes (ImageNet-A/-R: 200 of 1000) is scored the paper's
        way: logits of the classes it lacks are masked out before the arg-max.
        """
        self.test_names = list(names)
        self.test_accs = nn.ModuleList(
            [self.test_acc]
            + [
                MulticlassAccuracy(self.hparams.num_classes, average="micro")
                for _ in self.test_names[1:]
            ]
        )
        masks = {}
        for name, classes in class_subsets.items():
            mask = torch.zeros(self.hparams.num_classes, dtype=torch.bool)
            mask[list(classes)] = True
            masks[name] = mask
        self.test_masks = masks

    def on_fit_start(self) -> None:
        counts = count_parameters(self.model)
        rank_zero_info(
            f"parameters: {counts['trainable']:,} trainable ({counts['adapter']:,} adapter, "
            f"{counts['trainable'] - counts['adapter']:,} head) "
            f"of {counts['total']:,} total ({100 * counts['trainable'] / counts['total']:.2f}%)"
        )
        for logger in self.loggers:
            logger.log_hyperparams({f"params/{k}": v for k, v in counts.items()})

    def frozen_fingerprint(self) -> str:
        """Of the frozen backbone, computed once: it cannot change while training."""
        if self._frozen_fingerprint is None:
            self._frozen_fingerprint = frozen_fingerprint(self.model)
        return self._frozen_fingerprint

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = capture_rng_states()
        # Keep what trains (plus buffers such as PACE-fast's history), not the frozen backbone:
        # it is rebuilt from its source on resume, and storing it would make every checkpoint
        # the backbone's size (0.35 GB for ViT-B) instead of a few MB.
        frozen = {f"model.{n}" for n, p in self.model.named_parameters() if not p.requires_grad}
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in frozen}
        checkpoint["frozen_fingerprint"] = self.frozen_fingerprint()
        # A run resumed from its last epoch's checkpoint fits nothing more; these let its
        # results.json report the same validation metrics an uninterrupted run does.
        checkpoint["epoch_metrics"] = {
            name: float(value)
            for name, value in self.trainer.callback_metrics.items()
            if value.numel() == 1 and not name.endswith("_step")
        }
        bad = [n for n, p in self.named_parameters() if p.requires_grad and not p.isfinite().all()]
        if bad:  # never save a checkpoint that a resume could not train on from
            raise RunDiverged(
                f"weights became non-finite ({bad[0]})", self.global_step, self.current_epoch
            )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved_fingerprint = checkpoint.get("frozen_fingerprint")
        if saved_fingerprint is not None and saved_fingerprint != self.frozen_fingerprint():
            raise UserError(
                "the checkpoint was trained on a different frozen backbone than this config "
                "builds (backbone name, weights file, img_size or seed differ); resume with the "
                "run's own config.yaml settings"
            )
        self._check_trainable_state(checkpoint["state_dict"])
        self.restored_metrics = dict(checkpoint.get("epoch_metrics", {}))
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])

    def _check_trainable_state(self, state: dict) -> None:
        expected = {n: p for n, p in self.named_parameters() if p.requires_grad}
        missing = sorted(set(expected) - set(state))
        reshaped = sorted(n for n in expected if n in state and state[n].shape != expected[n].shape)
        if missing or reshaped:
            names = ", ".join((missing + reshaped)[:3])
            raise UserError(
                f"the checkpoint does not fit the model this config builds ({len(missing)} "
                f"trainable tensors missing, {len(reshaped)} with another shape, e.g. {names}); "
                "resume with the run's own adapter and backbone settings (see its config.yaml)"
            )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, index = batch
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # 16-mixed only
        if scaler is not None:  # the scale the loss will be backpropagated with
            set_loss_scale(self.model, scaler.get_scale())
        # Lazy PACE alternates per training iteration (batch), as the official loop counts; with
        # trainer.accumulate_grad_batches > 1 the optimiser-step count would make whole steps
        # PACE or CE. Lightning keeps this count in the loop state, so a resume continues it.
        iteration = self.trainer.fit_loop.epoch_loop.total_batch_idx
        parts = self.regulariser(self.model, x, y, index, iteration)
        # Stop before the optimiser applies a NaN/inf loss: the weights (and every checkpoint)
        # stay finite. One device sync per step, which the progress bar's loss costs anyway.
        if not torch.isfinite(parts.loss):
            raise RunDiverged(
                f"the loss became {parts.loss.item()}", self.global_step, self.current_epoch
            )
        # sync_dist: values are averaged over DDP ranks (torchmetrics objects sync themselves).
        log = dict(on_step=True, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.log("train/loss", parts.loss, prog_bar=True, **log)
        self.log("train/ce", parts.ce, **log)
        self.log("train/consistency", parts.consistency, **log)
        self.log_train_metrics(parts)
        # The learning rate as a metric (every logger, summary lines), not a logger-only callback.
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=x.shape[0])
        every = self.hparams.grad_norm_every
        if every == "epoch" and batch_idx == 0:  # once per epoch, written at the epoch's end
            self.log("train/grad_norm", self._ce_grad_norm(parts.ce), on_step=False, on_epoch=True)
        elif every != "epoch" and every and (self.global_step + 1) % every == 0:
            # The steps Lightning writes logs on (with every = trainer.log_every_n_steps).
            self.log("train/grad_norm", self._ce_grad_norm(parts.ce), on_step=True, on_epoch=False)
        return parts.loss

    def _ce_grad_norm(self, ce: torch.Tensor) -> torch.Tensor:
        """‖∂CE/∂θ‖₂ over trainable θ — of the CE alone, not of the regularised loss."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
        squares = [g.pow(2).sum() for g in grads if g is not None]
        return torch.stack(squares).sum().sqrt().detach()

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y, _ = batch
        logits = self.model(x)
        self.val_acc(logits, y)
        self.log("val/acc", self.val_acc, prog_bar=True, batch_size=x.shape[0])
        if self.hparams.fp_distance:
            self.val_fp_distance.update(
                squared_distance(logits, self._pretrained_logits(x)), x.shape[0]
            )
            self.log("val/fp_distance", self.val_fp_distance, batch_size=x.shape[0])

    def _pretrained_logits(self, x: torch.Tensor) -> torch.Tensor:
        set_branches_enabled(self.model, False)
        try:
            return self.model(x)
        finally:
            set_branches_enabled(self.model, True)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y, _ = batch
        name = self.test_names[dataloader_idx]
        logits = self.model(x)
        if name in self.test_masks:
            logits = logits.masked_fill(~self.test_masks[name].to(logits.device), float("-inf"))
        metric = self.test_accs[dataloader_idx]
        metric(logits, y)
        key = "test/acc" if len(self.test_names) == 1 else f"test/acc/{name}"
        self.log(key, metric, batch_size=x.shape[0], add_dataloader_idx=False)

    def configure_optimizers(self):
        hp = self.hparams
        # decay_1d=False (the project's) leaves biases and other 1-D tensors undecayed, the usual
        # ViT practice; True decays every trainable tensor like the official code's AdamW.
        optimizer = create_optimizer_v2(
            self.model,
            "adamw",
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            filter_bias_and_bn=not hp.decay_1d,
        )
        if hp.schedule == "epoch":
            scheduler = epoch_cosine_scheduler(
                optimizer, self.trainer.max_epochs, hp.warmup_epochs, hp.warmup_lr, hp.min_lr
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
            }
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(round(hp.warmup_epochs * per_epoch))
        scheduler = step_cosine_scheduler(optimizer, total, warmup, hp.warmup_lr, hp.min_lr)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # Both schedules are timm's. A per-step one is told how many optimiser steps are done; an
        # epoch one which epoch just ended (the official loop calls step(ep) after epoch ep), as
        # Lightning calls this at each epoch end, before current_epoch advances.
        if scheduler.t_in_epochs:
            scheduler.step(epoch=self.current_epoch)
        else:
            scheduler.step_update(num_updates=self.global_step)
