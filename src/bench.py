"""What each PACE mode costs per adapter on this machine, side by side (``make bench``).

    python -m src.bench                                   # defaults: < 5 min on 2 CPU cores
    python -m src.bench --adapters lora_mul_vpt_add --modes none,pace --steps 8 --plain

For every adapter and mode it trains a few steps on one synthetic batch (random weights; forward +
backward + AdamW step, the project's own regularisers), in ONE process and in interleaved rounds
(round r runs every case in turn: ``--settle`` untimed steps, then one timed step; warm-up rounds
are discarded), so slow phases of a shared machine hit every case alike. Reported per case: median
step time, images/s and the peak memory added by training, each also as a ratio to ``none`` of the
same adapter, with the PACE paper's Table 9 ratios (App. C, ViT-B on one GPU) beside them. Memory is
measured in a fresh subprocess per case, over the same steps for every mode (one that creates the
optimiser state, then a whole lazy cycle): on a GPU the CUDA peak allocated minus what the built
model holds, on CPU the peak RSS minus the RSS after building the model, with glibc's mmap threshold
pinned so that the RSS follows the live tensors, not the allocator's history. Also: eval throughput
(merged weights), the data loader's throughput from the decoded cache, and the cost of the
``train/grad_norm`` diagnostic. Writes ``bench.json`` and ``bench.md`` to ``--out``. ``--plain``
adds each PACE mode on the plain paths (no fused noisy layers, no shared prefix) — the before/after
of docs/bench.md in one run. ``--profile`` writes a ``torch.profiler`` table of one case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from src import PROJECT_ROOT
from src.cli.entry import report_user_errors
from src.pace import MODES

# The PACE paper's Table 9 (App. C; ViT-B, CIFAR-100, one H100): time and memory vs the baseline
# (29 min, 8.9 GB). Lazy is "lazy-half" with N = 2.
PAPER_TABLE9 = {
    "none": {"time": 1.0, "memory": 1.0},
    "pace": {"time": 53 / 29, "memory": 17.7 / 8.9},
    "lazy": {"time": 29 / 29, "memory": 9.3 / 8.9},
    "fast": {"time": 29 / 29, "memory": 9.0 / 8.9},
}
# glibc's malloc, left to itself, raises its mmap threshold each time a large block is freed, so
# after the first step activations come from heaps that keep freed memory and fragment: the peak
# RSS then depends on the allocation history (a `none` case's peak RSS grew by 60-120 MB from
# its first step to its second, docs/bench.md). Pinned, every activation-sized block is mapped and
# unmapped with its tensor and the RSS follows the live tensors. Set for the memory subprocesses
# only (it costs page faults, so never for timing); a value already in the environment wins.
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


@dataclasses.dataclass(frozen=True)
class Case:
    """One trained configuration: an adapter under a PACE mode, optionally a variant of it."""

    adapter: str
    mode: str
    plain: bool = False  # the plain paths (the fused ones' test oracle), for before/after
    grad_norm: bool = False  # plus the train/grad_norm diagnostic's extra backward every step

    @property
    def label(self) -> str:
        return (
            self.mode
            + (" (plain)" if self.plain else "")
            + (" + grad_norm" if self.grad_norm else "")
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="vit_small_patch16_224", help="timm model name")
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--adapters", default="lora_mul_vpt_add,lora_add", help="comma-separated")
    p.add_argument("--rank", type=int, default=10, help="for adapters that have a rank")
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES)
    )
    p.add_argument("--steps", type=int, default=3, help="timed rounds (after the warm-up)")
    p.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="rounds run first and discarded (the --settle step before each timed one already "
        "absorbs a case's first-step costs: optimiser state, allocator growth)",
    )
    p.add_argument(
        "--settle",
        type=int,
        default=1,
        help="untimed steps of a case right before each of its timed ones (0: none)",
    )
    p.add_argument("--interval", type=int, default=2, help="lazy's interval N")
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument(
        "--precision",
        default="32-true",
        help="32-true, bf16-mixed or 16-mixed (GPU only): every step, eval pass and memory "
        "subprocess under the autocast Lightning's trainer.precision of that name uses",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (0: the CPUs this process may use)",
    )
    p.add_argument(
        "--loader-images", type=int, default=256, help="images in the data-loader test (0: skip)"
    )
    p.add_argument("--workers", type=int, default=2, help="data-loader workers")
    p.add_argument("--plain", action="store_true", help="also time the plain (unfused) paths")
    p.add_argument(
        "--grad-norm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the train/grad_norm diagnostic on the first adapter's `none` step",
    )
    p.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the memory subprocesses"
    )
    p.add_argument(
        "--memory-jobs",
        type=int,
        default=0,
        help="memory subprocesses run at once (0: 2 on CPU, where each process's RSS is its own, "
        "1 on a GPU, where they would share the device)",
    )
    p.add_argument(
        "--pinned-malloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CPU memory: pin glibc's mmap threshold in the memory subprocesses so the RSS "
        "follows the live tensors (--no-pinned-malloc: glibc's defaults, history-dependent)",
    )
    p.add_argument(
        "--profile",
        default="",
        metavar="ADAPTER:MODE",
        help="write a torch.profiler table of this case",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for bench.json/bench.md (default logs/bench/<time>)",
    )
    p.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)  # the subprocess side
    args = p.parse_args(argv)
    args.adapters = [a for a in args.adapters.split(",") if a]
    args.modes = [m for m in args.modes.split(",") if m]
    return args


def validate(args: argparse.Namespace) -> None:
    from src.adapters import SCHEMAS
    from src.errors import UserError, check_choice
    from src.run.precision import BENCH_PRECISIONS, precision_problem

    for name in args.adapters:
        check_choice("adapter", name, SCHEMAS)
    for mode in args.modes:
        check_choice("pace mode", mode, MODES)
    check_choice("--precision", args.precision, BENCH_PRECISIONS)
    problem = precision_problem(args.precision, resolve_device(args.device).type)
    if problem:
        raise UserError(problem.replace("trainer.precision=", "--precision "))
    if "none" not in args.modes:
        raise UserError("--modes must include none: every ratio is relative to it")
    for key in ("settle", "warmup", "memory_jobs"):
        if getattr(args, key) < 0:
            raise UserError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(args, key)}")
    for key in ("img_size", "batch", "steps", "interval"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")


# ----------------------------------------------------------------------------------- one case
class TrainingCase:
    """One case made ready to train on its fixed batch (model, regulariser, optimiser): ``steps``
    trains, ``timed_unit`` times one unit of steps. Plain PyTorch steps, no Lightning loop."""

    def __init__(self, args: argparse.Namespace, case: Case, device):
        import torch
        from timm.optim import create_optimizer_v2

        from src.adapters import SCHEMAS, use_fused_paths
        from src.finetuner import FineTuner
        from src.network import build_model
        from src.pace import build_regulariser
        from src.run.precision import autocast

        fields = {f.name for f in dataclasses.fields(SCHEMAS[case.adapter])}
        extra = {"rank": args.rank} if "rank" in fields else {}
        torch.manual_seed(0)
        self.num_classes = 100
        self.model = (
            build_model(
                self.num_classes,
                args.backbone,
                case.adapter,
                img_size=args.img_size,
                drop_path=args.drop_path,
                **extra,
            )
            .to(device)
            .train()
        )
        self.regulariser = build_regulariser(
            self.model, case.mode, sigma=args.sigma, lam=1.0, interval=args.interval
        ).to(device)
        self.regulariser.prepare(args.batch, self.num_classes)
        if case.plain:
            use_fused_paths(self.model, False)
            self.regulariser.share_prefix = False
        self.optimizer = create_optimizer_v2(self.model, "adamw", lr=1e-4, weight_decay=1e-4)
        # As Lightning's precision plugins: the forward under autocast, and for float16 the
        # loss scaled (GradScaler) so that small gradients do not flush to zero.
        self.autocast = lambda: autocast(args.precision, device.type)
        self.scaler = torch.amp.GradScaler(device.type) if args.precision == "16-mixed" else None
        # The FineTuner's own diagnostic, so its measured cost is the real one.
        self.grad_norm = FineTuner(self.model, self.regulariser, self.num_classes)._ce_grad_norm
        self.case = case
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=gen).to(device)
        self.y = torch.randint(0, self.num_classes, (args.batch,), generator=gen).to(device)
        self.index = torch.arange(args.batch, device=device)
        # Lazy alternates PACE steps and single passes: a unit is one whole cycle of them.
        self.steps_per_unit = args.interval if case.mode == "lazy" else 1
        self.step_count = 0
        self.device = device
        self.args = args

    def memory_steps(self) -> int:
        """Steps every case runs for its memory measurement, whatever its mode: one that creates
        the optimiser state, then one whole lazy cycle (so lazy's PACE step runs with it too)."""
        return 1 + self.args.interval

    def unit(self) -> None:
        self.steps(self.steps_per_unit)

    def steps(self, count: int) -> None:
        from src.adapters.sparse import set_loss_scale

        for _ in range(count):
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                parts = self.regulariser(self.model, self.x, self.y, self.index, self.step_count)
                if self.case.grad_norm:
                    self.grad_norm(parts.ce)
            if self.scaler is None:
                parts.loss.backward()
                self.optimizer.step()
            else:
                set_loss_scale(self.model, self.scaler.get_scale())  # GRFT's penalty gradient
                self.scaler.scale(parts.loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.step_count += 1

    def timed_unit(self) -> float:
        """Seconds per training step, averaged over one unit."""
        synchronize(self.device)
        start = time.perf_counter()
        self.unit()
        synchronize(self.device)
        return (time.perf_counter() - start) / self.steps_per_unit


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def set_threads(args: argparse.Namespace) -> int:
    import torch

    from src.run.threads import allowed_cpus

    threads = args.threads or allowed_cpus()
    torch.set_num_threads(threads)
    return threads


# ---------------------------------------------------------------------------------- memory
def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def measure_memory(args: argparse.Namespace, case: Case) -> int:
    """Bytes added by training (after building the model): runs in its own fresh process.

    The peak over the same number of steps for every case (``TrainingCase.memory_steps``).
    """
    import gc

    import torch

    set_threads(args)
    device = resolve_device(args.device)
    training = TrainingCase(args, case, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        training.steps(training.memory_steps())
        return torch.cuda.max_memory_allocated(device) - base
    # Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    base = _proc_status_bytes("VmRSS")
    training.steps(training.memory_steps())
    return _proc_status_bytes("VmHWM") - base


def memory_in_subprocess(args: argparse.Namespace, case: Case, threads: int = 0) -> int | None:
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "measure_memory")}
    settings["threads"] = threads or args.threads
    payload = json.dumps({"args": settings, "case": dataclasses.asdict(case)})
    env = dict(os.environ)
    if args.pinned_malloc:
        env = {**PINNED_MALLOC, **env}
    result = subprocess.run(
        [sys.executable, "-m", "src.bench", "--measure-memory", payload],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
    )
    if result.returncode != 0:
        print(
            f"memory of {case.adapter}/{case.label} not measured: {result.stderr.strip()[-300:]}",
            file=sys.stderr,
        )
        return None
    return int(result.stdout.strip().splitlines()[-1])


def measure_memory_of(args: argparse.Namespace, cases: list[Case], device) -> dict:
    """Each case's memory in its own subprocess, ``--memory-jobs`` of them at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from src.run.threads import allowed_cpus

    jobs = args.memory_jobs or (1 if device.type == "cuda" else 2)
    # Processes side by side share the cores: more threads than cores would make each one's
    # OpenMP barriers wait on the other (README, "CPU threads"). The RSS does not depend on it.
    threads = max(1, (args.threads or allowed_cpus()) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        measured = pool.map(lambda c: memory_in_subprocess(args, c, threads), cases)
        return dict(zip(cases, measured, strict=True))


# ------------------------------------------------------------------- eval, loader, profile
def eval_throughput(args: argparse.Namespace, training: TrainingCase, rounds: int = 3) -> float:
    """Images/s of inference with merged weights (no noise), the median of ``rounds``."""
    import torch

    model = training.model.eval()
    times = []
    with torch.no_grad(), training.autocast():  # Lightning validates under autocast too
        for _ in range(rounds + 1):
            synchronize(training.device)
            start = time.perf_counter()
            model(training.x)
            synchronize(training.device)
            times.append(time.perf_counter() - start)
    model.train()
    return args.batch / statistics.median(times[1:])


def loader_throughput(args: argparse.Namespace) -> dict:
    """Images/s of one training epoch from the decoded cache (decoding itself timed apart)."""
    from src.data.synthetic import write_vtab_task
    from src.data.vtab import VTABDataModule

    with tempfile.TemporaryDirectory() as root:
        write_vtab_task(Path(root), "bench", 4, args.loader_images, 8, 8, img_size=args.img_size)
        dm = VTABDataModule(
            root,
            "bench",
            protocol="tune",
            batch_size=args.batch,
            num_workers=args.workers,
            img_size=args.img_size,
            num_classes=4,
        )
        start = time.perf_counter()
        dm.setup("fit")
        decode = time.perf_counter() - start
        loader = dm.train_dataloader()
        for _ in loader:  # workers start and warm up
            pass
        start = time.perf_counter()
        images = sum(len(batch[0]) for batch in loader)
        seconds = time.perf_counter() - start
    return {
        "images": images,
        "workers": args.workers,
        "images_per_s": images / seconds,
        "decode_images_per_s": images / decode,
    }


def write_profile(args: argparse.Namespace, device, out: Path) -> Path:
    from torch.profiler import ProfilerActivity, profile

    adapter, _, mode = args.profile.partition(":")
    training = TrainingCase(args, Case(adapter, mode or "pace"), device)
    training.unit()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            training.unit()
    path = out / f"profile_{adapter}_{mode}.txt"
    path.write_text(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return path


def machine_info(device, threads: int) -> dict:
    import timm
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------------------------ run
def plan(args: argparse.Namespace) -> list[Case]:
    cases = [Case(a, m) for a in args.adapters for m in args.modes]
    if args.plain:
        cases += [Case(a, m, plain=True) for a in args.adapters for m in args.modes if m != "none"]
    if args.grad_norm:
        cases += [Case(args.adapters[0], m, grad_norm=True) for m in ("none",) if m in args.modes]
    return cases


def run(args: argparse.Namespace) -> dict:
    phases = Phases()
    threads = set_threads(args)
    device = resolve_device(args.device)
    cases = plan(args)
    print(
        f"building {len(cases)} cases: {args.backbone} at {args.img_size}px, batch {args.batch}, "
        f"{threads} threads, {device}",
        flush=True,
    )
    prepared = [TrainingCase(args, case, device) for case in cases]
    phases.done("build")
    times: dict[Case, list[float]] = {case: [] for case in cases}
    for r in range(args.warmup + args.steps):
        # Rotate the order each round so no case always runs right after the same neighbour.
        order = prepared[r % len(prepared) :] + prepared[: r % len(prepared)]
        for training in order:
            # A timed step right after another case's steps pays for that case's allocations
            # (the heap glibc trimmed or fragmented for it); in a training run a step follows a
            # step of the same model, so the bench times one that does (docs/bench.md).
            for _ in range(args.settle):
                training.unit()
            seconds = training.timed_unit()
            if r >= args.warmup:
                times[training.case].append(seconds)
        print(
            f"round {r + 1}/{args.warmup + args.steps}" + (" (warm-up)" if r < args.warmup else ""),
            flush=True,
        )
    phases.done("timed rounds")
    evals = {}
    for training in prepared:
        if training.case.mode == "none" and not training.case.grad_norm:
            evals[training.case.adapter] = eval_throughput(args, training)
    del prepared
    phases.done("eval")
    memory = {}
    if args.memory:
        memory = measure_memory_of(args, [c for c in cases if not c.grad_norm], device)
        phases.done("memory")
    loader = loader_throughput(args) if args.loader_images else None
    if loader:
        phases.done("loader")
    result = summarise(args, device, threads, cases, times, memory, evals, loader)
    result["phases_s"] = phases.seconds
    return result


class Phases:
    """Wall seconds of each part of the bench, so a user sees where its own time goes."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._start
        self._start = now


def summarise(args, device, threads, cases, times, memory, evals, loader) -> dict:
    rows = []
    for case in cases:
        step = statistics.median(times[case])
        base = Case(case.adapter, "none")
        base_step = statistics.median(times[base])
        mem, base_mem = memory.get(case), memory.get(base)
        paper = PAPER_TABLE9[case.mode] if not case.plain and not case.grad_norm else {}
        rows.append(
            {
                "adapter": case.adapter,
                "mode": case.mode,
                "label": case.label,
                "plain": case.plain,
                "grad_norm": case.grad_norm,
                "step_s": step,
                "steps_s": times[case],
                "images_per_s": args.batch / step,
                "time_ratio": step / base_step,
                "memory_added_mb": None if mem is None else mem / 2**20,
                "memory_ratio": None if mem is None or not base_mem else mem / base_mem,
                "paper_time_ratio": paper.get("time"),
                "paper_memory_ratio": paper.get("memory"),
            }
        )
    settings = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("measure_memory",)
    }
    return {
        "command": "python -m src.bench " + " ".join(sys.argv[1:]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(device, threads),
        "settings": settings,
        "rows": rows,
        "eval_images_per_s": evals,
        "loader": loader,
    }


def fmt(value, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def precision_note(precision: str) -> str:
    if precision == "32-true":
        return ", float32."
    dtype = "float16 with loss scaling" if precision == "16-mixed" else "bfloat16"
    return f", precision {precision} ({dtype} autocast, float32 weights; eval too)."


def markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        f"# `make bench` — {result['date']}",
        "",
        f"`{result['command']}`",
        "",
        f"{s['backbone']} at {s['img_size']} px, batch {s['batch']}, random weights, σ = "
        f"{s['sigma']}, drop-path {s['drop_path']}, median of {s['steps']} interleaved rounds "
        f"({s['warmup']} warm-up discarded), each timed step right after "
        f"{s.get('settle', 0)} untimed one(s) of the same case; forward + backward + AdamW step"
        + precision_note(s.get("precision", "32-true")),
        f"Machine: {m['cpu']}"
        + (f", GPU {m['gpu']}" if m["gpu"] else "")
        + f", {m['threads']} threads, torch {m['torch']}, timm {m['timm']}, "
        f"load average {fmt(m['load_average'], '.2f')} at the start.",
    ]
    if s.get("memory"):
        if m["gpu"]:
            how = "CUDA peak allocated"
        elif s.get("pinned_malloc"):
            threshold = PINNED_MALLOC["MALLOC_MMAP_THRESHOLD_"]
            how = f"peak RSS, glibc's mmap threshold pinned (MALLOC_MMAP_THRESHOLD_={threshold})"
        else:
            how = "peak RSS, glibc's malloc defaults"
        lines.append(
            f"Memory: {how}, minus the built model's, over the same {1 + s['interval']} steps "
            "for every case, each case in a fresh process."
        )
    lines += [
        "",
        "| adapter | mode | step (s) | images/s | time × none | paper time × | "
        "memory added (MB) | memory × none | paper memory × |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| `{r['adapter']}` | {r['label']} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | "
            f"{r['time_ratio']:.2f} | {fmt(r['paper_time_ratio'], '.2f')} | "
            f"{fmt(r['memory_added_mb'], '.0f')} | {fmt(r['memory_ratio'], '.2f')} | "
            f"{fmt(r['paper_memory_ratio'], '.2f')} |"
        )
    lines += [
        "",
        "Eval (merged weights, no noise): "
        + ", ".join(f"`{a}` {v:.1f} images/s" for a, v in result["eval_images_per_s"].items()),
    ]
    by_key = {(r["adapter"], r["label"]): r for r in result["rows"]}
    for mode in MODES:
        with_norm = by_key.get((s["adapters"][0], f"{mode} + grad_norm"))
        plain = by_key.get((s["adapters"][0], mode))
        if with_norm and plain:
            extra = with_norm["step_s"] / plain["step_s"] - 1
            lines.append(
                f"train/grad_norm on a `{mode}` step: +{100 * extra:.0f} % for that step "
                f"(+{10 * extra:.1f} % averaged at every 10 steps)."
            )
    if result["loader"]:
        d = result["loader"]
        lines.append(
            f"Data loader from the decoded cache: {d['images_per_s']:.0f} images/s "
            f"({d['workers']} workers; decoding JPEGs into the cache: "
            f"{d['decode_images_per_s']:.0f} images/s, once per run)."
        )
    if result.get("wall_s") is not None:
        phases = result.get("phases_s") or {}
        where = ", ".join(f"{name} {sec:.0f} s" for name, sec in phases.items())
        where = f" ({where})." if where else "."
        lines.append(f"Wall time of the bench: {result['wall_s']:.0f} s{where}")
    return "\n".join(lines) + "\n"


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure_memory:
        payload = json.loads(args.measure_memory)
        inner = argparse.Namespace(**payload["args"])
        print(measure_memory(inner, Case(**payload["case"])))
        return 0
    return bench(args)


def bench(args: argparse.Namespace) -> int:
    validate(args)
    out = args.out or Path("logs/bench") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = run(args)
    if args.profile:
        result["profile"] = str(write_profile(args, resolve_device(args.device), out))
    result["wall_s"] = time.perf_counter() - start
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / "bench.md").write_text(text)
    print("\n" + text + f"\nwritten: {out / 'bench.json'}, {out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
