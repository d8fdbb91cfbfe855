"""Fine-tune a timm ViT with PEFT adapters and (optionally) PACE.

    python -m src.train experiment=vtab_pace data.task=cifar sigma=0.5
    python -m src.train experiment=vtab_pace sigma=0.1,0.5,1 lam=0.1,1 -m

Every run folder holds the resolved config.yaml (Hydra keeps the composed one in .hydra/),
checkpoints/last.ckpt (resume with ``ckpt_path=last``), adapter.safetensors (adapter + head, for
``src.eval``) and results.json; :class:`src.run.folder.RunFolder` writes and names them all.

torch, Lightning and timm are imported inside the functions that use them, not at the top: Hydra
answers ``--help`` and reports config mistakes before any of them would be needed.
"""

from __future__ import annotations

# ruff: noqa: E402  (the signal handlers come before every other import, see below)
from src.run.stopping import stop_cleanly_on_signals

if __name__ == "__main__":  # the entry itself (and each DDP rank); an import changes nothing
    stop_cleanly_on_signals()  # first: a signal while the rest imports is one line, no trace

import contextlib
import logging
import shlex
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

import src.adapters.schemas  # noqa: F401  (registers the conf/adapter schemas with Hydra; no torch)
import src.cli.validation  # noqa: F401  (registers the resolvers the configs use)
from src.cli.entry import (
    RunInterrupted,
    finish_wandb,
    instantiate_group,
    prepare_wandb,
    report_user_errors,
    run_entry,
    say,
    to_float_dict,
)
from src.cli.extras import apply_extras
from src.cli.validation import refuse_unread_keys, validate_train_config
from src.data.workers import check_worker_temp_dir
from src.run.folder import Launch, RunFolder, forget_unused_folder, in_multirun, prepare_run_folder
from src.run.launch import drop_requeue_checkpoints, prepare_ddp_for_this_job
from src.run.loggers import log_run_config
from src.run.precision import check_precision
from src.run.stopping import RunDiverged, StopRequested, describe_early_stop, entry_started

if TYPE_CHECKING:
    from src.finetuner import FineTuner

log = logging.getLogger(__name__)


def build_finetuner(cfg: DictConfig, num_classes: int, datamodule=None, weights=None) -> FineTuner:
    """The model and its training objective. ``datamodule``: a text model takes its tokenizer
    and head from it (docs/text.md); ``weights``: the resolved ``backbone.weights``
    (:func:`src.backbones.sources.resolve_weights`), resolved here when not given."""
    from src.finetuner import FineTuner
    from src.network import build_model
    from src.pace import build_regulariser

    if OmegaConf.select(cfg, "backbone.library") == "transformers":  # text: docs/text.md
        from src.text.build import build_text_finetuner

        return build_text_finetuner(cfg, datamodule)

    model = build_model(
        num_classes,
        backbone_name=cfg.backbone.name,
        adapter=cfg.adapter,
        weights=weights if weights is not None else cfg.backbone.weights,
        img_size=cfg.backbone.img_size,
        drop_path=cfg.backbone.drop_path,
        timm_kwargs=cfg.backbone.get("kwargs"),
        # Run folders written before the recipe group existed have no recipe section.
        head_init=OmegaConf.select(cfg, "recipe.head_init", default="trunc_normal"),
    )
    # The pace/optim/diagnostics groups hold exactly the keyword arguments of these factories.
    regulariser = build_regulariser(model, **cfg.pace)
    return FineTuner(model, regulariser, num_classes=num_classes, **cfg.optim, **cfg.diagnostics)


def check_launch(cfg: DictConfig) -> Launch:
    """Everything checked before a launch writes: the config's keys and values, then its run
    folder."""
    from src.cli.hydra_errors import config_groups

    refuse_unread_keys(cfg, config_groups())
    validate_train_config(cfg)
    check_precision(cfg.get("trainer") or {})
    check_worker_temp_dir(cfg.data.get("num_workers"))
    return prepare_run_folder(cfg)


def train(cfg: DictConfig, launch: Launch | None = None) -> dict[str, float]:
    """Fit and test one configuration; returns the final metrics (also in results.json).

    ``launch`` is the checked use of the run folder (:func:`prepare_run_folder`, done here when
    not given). Nothing is written before the config, the run folder, the data's list files and
    the backbone weights have been checked.
    """
    import lightning as L

    from src.adapters import calibrate_adapters, count_parameters

    launch = launch or check_launch(cfg)
    if launch.finished_metrics is not None:
        return launch.finished_metrics
    run = launch.run
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    weights, origin = weights_and_departures(cfg)
    datamodule = hydra.utils.instantiate(cfg.data)
    finetuner = build_finetuner(cfg, datamodule.num_classes, datamodule, weights)
    say(  # describe() reads every split's list file: bad data stops the launch here
        f"{datamodule.describe()}; "
        f"pace={cfg.pace.mode} sigma={cfg.pace.sigma} lam={cfg.pace.lam} adapter={cfg.adapter.name}"
    )
    if cfg.train:
        datamodule.setup("fit")  # decodes (and caches) the images fit uses: a bad one stops here
    launch.begin(cfg)
    prepare_wandb(cfg)
    prepare_ddp_for_this_job(run.path)
    from src.run.checkpoints import (
        AtomicCheckpointIO,
        RecordThreads,
        RequeueSignalInStages,
        SameDataOrderOnResume,
        SignalsStopTraining,
        remove_partial_checkpoints,
    )

    trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=instantiate_group(cfg.get("logger")) or False,
        # Not config entries: stopping cleanly on SIGUSR1 and resuming exactly are not options.
        callbacks=[
            *instantiate_group(cfg.get("callbacks")),
            SignalsStopTraining(),
            RequeueSignalInStages(),  # after SignalsStopTraining
            SameDataOrderOnResume(),
            RecordThreads(),
        ],
        plugins=[AtomicCheckpointIO()],
    )
    if trainer.is_global_zero:  # what a run killed while saving left
        remove_partial_checkpoints(run.path, run.checkpoints)
    log_run_config(trainer.loggers, cfg, origin_hyperparameters(origin))

    metrics: dict[str, float] = {}
    started = time.perf_counter()
    if cfg.train:
        ckpt_path = launch.ckpt_path
        calibrate_adapters(finetuner.model, datamodule, ckpt_path)  # GPS/GRFT: one data pass
        try:
            fit_or_explain_interruption(trainer, finetuner, datamodule, ckpt_path, run.path)
        except RunDiverged as diverged:
            run.record_divergence(run_identity(cfg, datamodule, origin), diverged, trainer)
        drop_requeue_checkpoints(trainer, run.path)
        # A resume after the last epoch's checkpoint fits nothing: its metrics come from there.
        metrics.update(finetuner.restored_metrics)
        metrics.update(to_float_dict(trainer.callback_metrics))
        run.write_adapter(finetuner.model, trainer)
    fit_seconds = time.perf_counter() - started
    if cfg.test:
        with interruptions_explained(trainer, run.path):
            trainer.test(finetuner, datamodule=datamodule)
        metrics.update(to_float_dict(trainer.callback_metrics))

    summary = {
        **run_identity(cfg, datamodule, origin),
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "peak_rss_mb": _peak_rss_mb(),
        "params": count_parameters(finetuner.model),
        "metrics": metrics,
    }
    import torch

    if torch.cuda.is_available():
        summary["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    run.write_results(summary, trainer)
    return metrics


def weights_and_departures(cfg: DictConfig):
    """The backbone's weights, found (or a one-line error), and what results.json and the loggers
    record about where the run starts from: the weights and the departures from the paper's
    setup. Both are said at the terminal once."""
    from src.backbones.sources import resolve_text_weights, resolve_weights
    from src.backbones.text import is_text_backbone
    from src.paper_setup import departure_line, departures

    if is_text_backbone(cfg.backbone):
        weights = resolve_text_weights(cfg.backbone)
    else:
        weights = resolve_weights(cfg.backbone.name, cfg.backbone.weights)
    say(f"backbone weights: {weights.describe()}")
    record = weights.record()
    found = departures(cfg, record["source"], record["file"])
    if found is not None:
        say(departure_line(cfg, found))
    return weights, {"weights": record, "paper_departures": found}


def origin_hyperparameters(origin: dict) -> dict:
    """The loggers' view of :func:`weights_and_departures`: flat values W&B and TensorBoard show."""
    found = origin["paper_departures"]
    return {
        "backbone.weights_source": origin["weights"]["source"],
        "backbone.weights_sha256": origin["weights"]["sha256"],
        "paper_departures": None if found is None else "; ".join(d["key"] for d in found),
    }


def run_identity(cfg: DictConfig, datamodule, origin: dict) -> dict:
    """What results.json says about which run this is (finished or not)."""
    return {
        **origin,
        "task": datamodule.task,
        "protocol": datamodule.protocol,
        "pace": cfg.pace.mode,
        "sigma": cfg.pace.sigma,
        "lam": cfg.pace.lam,
        "adapter": cfg.adapter.name,
        "adapter_config": OmegaConf.to_container(cfg.adapter, resolve=True),
        "lr": cfg.optim.lr,
        "backbone": cfg.backbone.name,
        "seed": cfg.seed,
    }


def fit_or_explain_interruption(trainer, finetuner, datamodule, ckpt_path, output_dir) -> None:
    """``trainer.fit``; when a signal stops it, say what was saved and the command that resumes."""
    with interruptions_explained(trainer, output_dir):
        trainer.fit(finetuner, datamodule=datamodule, ckpt_path=ckpt_path)


@contextlib.contextmanager
def interruptions_explained(trainer, output_dir: Path):
    """Ctrl-C, SIGTERM or SIGUSR1 during a Trainer stage become :class:`RunInterrupted`.

    Lightning finishes the hooks and then calls ``exit(1)`` (Ctrl-C) or raises a SystemExit
    without a status (SIGTERM, which would exit 0); the entry point prints the message and
    exits with 128 + the signal's number.
    """
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from src.run.stopping import SIGNAL_NAMES

    try:
        yield
    except SystemExit as stop:
        if not trainer.interrupted:
            raise
        received = signal.SIGINT
        if isinstance(stop, SIGTERMException):
            usr1 = [c.received for c in trainer.callbacks if hasattr(c, "received")]
            received = next((r for r in usr1 if r is not None), signal.SIGTERM)
        saved = what_was_saved(output_dir, trainer.current_epoch)
        fitting = trainer.state.fn is not None and trainer.state.fn.value == "fit"
        stage = f"in epoch {trainer.current_epoch + 1}" if fitting else "while testing"
        raise RunInterrupted(
            f"{SIGNAL_NAMES[received]} stopped the run {stage}; {saved}. Resume with: "
            f"{resume_command(output_dir)}",
            exit_status=128 + int(received),
        ) from None


def what_was_saved(output_dir: Path, epoch: int) -> str:
    """The newest checkpoint a stopped run left: the one Lightning saved when SLURM asked for a
    requeue (the requeued job resumes from it by itself), else the one saved at the stop
    (part-way through an epoch), else the last epoch's."""
    run = RunFolder(output_dir)
    last = run.last_checkpoint
    requeues = sorted(run.requeue_checkpoints(), key=lambda p: p.stat().st_mtime)
    last_time = last.stat().st_mtime if last.exists() else float("-inf")
    if requeues and requeues[-1].stat().st_mtime >= last_time:
        return f"{requeues[-1]} was saved for SLURM's requeue, and the requeued job resumes from it"
    if last.exists() and last.resolve().name == run.stopped_checkpoint.name:
        return f"{last} holds the run as it stopped, part-way through epoch {epoch + 1}"
    if last.exists():
        return f"{last} holds the end of epoch {epoch}"
    return "no epoch had finished, nothing was saved"


def resume_command(output_dir: Path) -> str:
    """The command that continues this run in its own folder from its last.ckpt."""
    from hydra.core.hydra_config import HydraConfig

    try:
        typed = list(HydraConfig.get().overrides.task)
    except ValueError:  # called outside a Hydra run (tests, notebooks)
        typed = []
    keep = [o for o in typed if o.split("=", 1)[0].lstrip("+~") not in RESUME_KEYS]
    words = ["python", "-m", "src.train", *keep, f"hydra.run.dir={output_dir}", "ckpt_path=last"]
    return " ".join(shlex.quote(w) for w in words)


# Overrides that a resume command sets itself.
RESUME_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "ckpt_path", "overwrite")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quiet_lightning_logs() -> None:
    """Each Lightning log line once, without adverts.

    Importing ``lightning`` gives its logger a console handler of its own although Hydra's root
    handlers already print (and file) its records, so every line would show twice. Imported
    before Hydra set up logging (a notebook, a program that imported it first), its
    ``pytorch``/``fabric`` loggers also keep their own stderr handlers and stop propagating, so
    their lines would miss the terminal's format and ``train.log``: the same records go through
    Hydra's handlers whichever came first.
    """
    import lightning  # noqa: F401  (the import is what adds the handler)

    if logging.getLogger().hasHandlers():
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )


def _processes_per_node(cfg: DictConfig) -> int:
    """DDP processes that share this node's CPUs (they split the thread budget)."""
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices", 1)
    if trainer.get("accelerator") == "cpu" and isinstance(devices, int):
        return max(1, devices)
    return 1


def use_cpu_threads(cfg: DictConfig, launch: Launch) -> None:
    """Give torch the run's thread count: the one its checkpoint recorded when it resumes
    (the count changes the bits), else ``cpu_threads`` (src/run/threads.py)."""
    from src.run.threads import set_cpu_threads, threads_for_run

    setting = cfg.get("cpu_threads", "auto")
    threads, warning = threads_for_run(
        setting, _processes_per_node(cfg), deterministic_setting(cfg), launch.ckpt_path
    )
    set_cpu_threads(threads)
    if warning:
        say(warning)
    log.info("torch uses %d CPU thread(s) (cpu_threads=%s)", threads, setting)


def deterministic_setting(cfg: DictConfig) -> bool:
    value = cfg.get("deterministic", False)
    if not isinstance(value, bool):
        from src.errors import UserError

        raise UserError(f"deterministic must be true or false, got {value!r}")
    return value


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    # Again here: a SLURM job (hydra/launcher=slurm) calls main without running this module.
    stop_cleanly_on_signals()
    entry_started()
    say(f"run folder: {cfg.paths.output_dir}")
    output_dir = Path(cfg.paths.output_dir)
    try:
        return run_main(cfg, output_dir)
    except (StopRequested, KeyboardInterrupt) as stop:  # outside a Trainer stage
        signum = getattr(stop, "signum", signal.SIGINT)
        raise RunInterrupted(stopped_outside_training(signum, output_dir), 128 + signum) from None


def stopped_outside_training(signum: int, output_dir: Path) -> str:
    """What a signal before or after training leaves (its launch's folder is forgotten when
    nothing was written) and the command that goes on."""
    from src.run.folder import choose_good_checkpoint, run_status

    if not output_dir.is_dir() or run_status(output_dir) is None:
        return describe_early_stop(signum, None, None)
    return describe_early_stop(
        signum, choose_good_checkpoint(output_dir), resume_command(output_dir)
    )


def run_main(cfg: DictConfig, output_dir: Path) -> float | None:
    with forget_unused_folder(output_dir):  # a refused launch leaves no folder
        launch = check_launch(cfg)  # before anything logs into the folder's train.log
        apply_extras(cfg)
        quiet_lightning_logs()
        use_cpu_threads(cfg, launch)
        try:
            metrics = train(cfg, launch)
        except RunDiverged as diverged:
            if not in_multirun():
                raise
            say(f"error: {diverged}; the sweep goes on with its next job")
            return None
        finally:
            finish_wandb()
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    run_entry(main, "train")
