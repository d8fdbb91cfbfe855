"""Which pre-trained weights a backbone starts from: what a config names, where the file is found,
and what a run records about it.

``backbone.weights`` takes one of:

* ``timm:<arch>.<tag>`` — an exact timm pretrained tag, e.g.
  ``timm:vit_base_patch16_224.orig_in21k`` (the paper's ViT-B/16). Its file is looked up in the
  Hugging Face hub cache first (``HF_HUB_CACHE`` / ``HUGGINGFACE_HUB_CACHE`` / ``HF_HOME``, layout
  ``models--timm--<tag>/snapshots/<rev>/model.safetensors``), offline; only when it is not there
  is it downloaded, unless ``HF_HUB_OFFLINE`` is set;
* ``hub`` — timm's default tag for ``backbone.name`` (which is often *not* the paper's: for
  ``vit_base_patch16_224`` it is an ImageNet-1k fine-tune), resolved the same way;
* a local ``.npz`` (Google's layout) / ``.safetensors`` / ``.pth`` file;
* ``random`` — random initialisation, only when asked for by name.

``null`` is refused: it used to mean random init, which made the paper's commands fine-tune a
random ViT-B without a word. What a run used is recorded as :meth:`WeightsSource.record`: the
tag or the file, with the file's sha256.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from src.backbones.weights import SUPPORTED_EXTS, check_weights_path
from src.errors import UserError

RANDOM = "random"
HUB = "hub"
TIMM = "timm:"

# The file each tag's authors ship, for a machine without the hub (named in the offline error).
ORIGINAL_FILES = {
    "vit_base_patch16_224.orig_in21k": (
        "ViT-B_16.npz",
        "Google's original ImageNet-21k ViT-B/16, gs://vit_models/imagenet21k/ViT-B_16.npz",
    ),
    "swin_base_patch4_window7_224.ms_in22k": (
        "swin_base_patch4_window7_224_22k.pth",
        "Microsoft's ImageNet-22k Swin-B release",
    ),
}
# Hub files timm publishes a tag's weights in, in the order timm itself tries them.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class WeightsSource:
    """Resolved ``backbone.weights``: ``kind`` is ``random``, ``timm`` (a hub tag, ``path`` is the
    cached file) or ``file``."""

    kind: str
    tag: str | None = None
    path: Path | None = None
    revision: str | None = None  # the hub snapshot the file came from

    @property
    def identity(self) -> str:
        """What makes two runs' backbones the same: the tag, the file's content, or random."""
        if self.kind == "random":
            return RANDOM
        if self.kind == "timm":
            return f"{TIMM}{self.tag}"
        if self.kind == "transformers" and self.path is None:  # a model id in the HF cache
            return f"transformers:{self.tag}"
        return f"file:{self.path.name}@sha256:{self.sha256[:16]}"

    @property
    def sha256(self) -> str | None:
        return None if self.path is None else file_sha256(self.path)

    def record(self) -> dict:
        """results.json's ``weights`` entry (and the loggers' ``backbone.weights_*`` values)."""
        return {
            "source": self.identity,
            "tag": self.tag,
            "file": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "revision": self.revision,
        }

    def describe(self) -> str:
        """One phrase for the start of a run."""
        if self.kind == "random":
            return "random init (backbone.weights=random)"
        where = f" from {self.path}" if self.path is not None else ""
        return f"{self.identity}{where}"


def resolve_weights(name: str, weights) -> WeightsSource:
    """The weights ``backbone.weights`` names for timm model ``name``, found on disk (or
    downloaded); a one-line :class:`UserError` when they cannot be had."""
    if weights is None:
        raise UserError(
            f"backbone.weights is null; name the weights {name} starts from: "
            f"backbone.weights=timm:<arch>.<tag> (e.g. timm:vit_base_patch16_224.orig_in21k, the "
            f"paper's), hub (timm's default tag), a {'/'.join(SUPPORTED_EXTS)} file, or random"
        )
    weights = str(weights)
    if weights == RANDOM:
        return WeightsSource(RANDOM)
    if weights == HUB:
        return _from_hub(_default_tag(name))
    if weights.startswith(TIMM):
        tag = weights.removeprefix(TIMM)
        _check_tag(name, tag)
        return _from_hub(tag)
    return WeightsSource("file", path=check_weights_path(weights).resolve())


def resolve_text_weights(backbone_cfg) -> WeightsSource:
    """What a transformers backbone starts from (``src.backbones.text``): random, the weights file
    of a local model folder (hashed like any file), or a model id the HF cache holds."""
    from src.backbones.text import model_source

    if backbone_cfg.get("weights") == RANDOM:
        return WeightsSource(RANDOM, tag=backbone_cfg.get("name"))
    source = Path(model_source(backbone_cfg.get("name"), backbone_cfg.get("path")))
    if source.is_dir():
        files = [source / f for f in ("model.safetensors", "pytorch_model.bin")]
        found = next((f for f in files if f.is_file()), None)
        if found is not None:
            return WeightsSource("file", tag=backbone_cfg.get("name"), path=found.resolve())
    return WeightsSource("transformers", tag=str(source))


# ----------------------------------------------------------------------------- timm tags


def _arch(name: str) -> str:
    return name.split(".", 1)[0]


def _default_tag(name: str) -> str:
    """``name`` itself when it carries a tag, else timm's default tag for the architecture."""
    from timm.models import get_pretrained_cfg

    if "." in name:
        _check_tag(name, name)
        return name
    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.tag:
        raise UserError(
            f"timm has no pretrained weights for '{name}'; pass a local file via "
            "backbone.weights=/path/to/file, or backbone.weights=random"
        )
    return f"{name}.{cfg.tag}"


def _check_tag(name: str, tag: str) -> None:
    import timm

    if "." not in tag or tag not in timm.list_pretrained(f"{_arch(tag)}.*"):
        known = timm.list_pretrained(f"{_arch(tag)}.*")[:8]
        raise UserError(
            f"unknown timm pretrained tag '{tag}' in backbone.weights; available for "
            f"{_arch(tag)}: {', '.join(known) or 'none'} (written timm:<arch>.<tag>)"
        )
    if _arch(tag) != _arch(name):
        raise UserError(
            f"backbone.weights=timm:{tag} is for {_arch(tag)}, but backbone.name is {name}; set "
            f"backbone.weights to a tag of {_arch(name)} "
            f"(timm.list_pretrained('{_arch(name)}.*')), a file, or random"
        )


def _hub_repo(tag: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(tag)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise UserError(
            f"timm's tag {tag} is not on the Hugging Face hub (timm downloads it from its own "
            f"URL); download it once and pass the file: backbone.weights=/path/to/file"
        )
    # timm writes "timm/" for "timm/<tag>": the repo is named after the tag.
    return f"{repo}{tag}" if repo.endswith("/") else repo


def _from_hub(tag: str) -> WeightsSource:
    repo = _hub_repo(tag)
    cached = find_in_hub_cache(repo)
    if cached is not None:
        path, revision = cached
        return WeightsSource("timm", tag=tag, path=path, revision=revision)
    if hub_offline():
        raise _offline_error(tag, repo, "HF_HUB_OFFLINE is set")
    path = _download(tag, repo)
    return WeightsSource("timm", tag=tag, path=path, revision=_snapshot_of(path))


def _offline_error(tag: str, repo: str, why: str) -> UserError:
    file, what = ORIGINAL_FILES.get(tag, (HUB_FILES[0], f"from https://huggingface.co/{repo}"))
    return UserError(
        f"the pretrained weights timm:{tag} are not in the Hugging Face cache "
        f"({', '.join(map(str, hub_cache_dirs()))}) and cannot be downloaded ({why}); pass the "
        f"file: backbone.weights=/path/{file} ({what}), or put the hub cache where HF_HOME "
        "points, or train from scratch with backbone.weights=random"
    )


# ----------------------------------------------------------------------------- the hub cache


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE")
    return (env.strip().lower() in _TRUE) if env is not None else bool(constants.HF_HUB_OFFLINE)


def hub_cache_dirs() -> list[Path]:
    """Where a hub cache may be, as huggingface_hub would look now (first set wins), plus
    huggingface_hub's own idea of it (it parsed the variables at import)."""
    from huggingface_hub import constants

    env = os.environ
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    first = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    dirs = [Path(first).expanduser(), Path(constants.HF_HUB_CACHE).expanduser()]
    return list(dict.fromkeys(dirs))


def find_in_hub_cache(repo: str) -> tuple[Path, str] | None:
    """``(file, revision)`` of ``repo``'s weights in a hub cache, without the network: the
    snapshot ``refs/main`` names, else the newest snapshot that holds a weights file."""
    folder = "models--" + repo.replace("/", "--")
    for cache in hub_cache_dirs():
        repo_dir = cache / folder
        snapshots = repo_dir / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo_dir / "refs" / "main"
        preferred = [snapshots / ref.read_text().strip()] if ref.is_file() else []
        others = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for snapshot in [*preferred, *others]:
            for name in HUB_FILES:
                if (snapshot / name).is_file():
                    return snapshot / name, snapshot.name
    return None


def _download(tag: str, repo: str) -> Path:
    """The tag's weights from the hub; any failure to reach it is the offline error."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    _probe_hub(tag, repo)
    for name in HUB_FILES:
        try:
            return Path(hf_hub_download(repo, name))
        except RemoteEntryNotFoundError:
            continue  # the repo has the other format
        except Exception as e:  # noqa: BLE001  (connection, proxy, HTTP and cache errors alike)
            raise _offline_error(tag, repo, f"{type(e).__name__}: {_first_line(e)}") from e
    raise _offline_error(tag, repo, f"the hub repo has none of {', '.join(HUB_FILES)}")


def _probe_hub(tag: str, repo: str) -> None:
    """One request to the hub's endpoint, through huggingface_hub's own session (its proxy and
    endpoint settings): without a network it fails in well under a second, while a download
    retries five times with back-off (25 s here) before giving up."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=10)
    except Exception as e:  # noqa: BLE001  (DNS, connection, proxy and timeout errors alike)
        why = f"{constants.ENDPOINT} unreachable: {_first_line(e)}"
        raise _offline_error(tag, repo, why) from e


def _snapshot_of(path: Path) -> str | None:
    return path.parent.name if path.parent.parent.name == "snapshots" else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


# ----------------------------------------------------------------------------- file identity


def file_sha256(path: str | Path) -> str:
    """The file's sha256. A hub cache file is named by it (``blobs/<sha256>``); anything else is
    hashed once per process (350 MB: 0.6 s here idle, 1.8 s under load)."""
    p = Path(path)
    blob = p.resolve().name
    if p.is_symlink() and re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    st = p.stat()
    return _hash(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _hash(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["HUB", "RANDOM", "TIMM", "WeightsSource", "file_sha256", "resolve_weights"]
