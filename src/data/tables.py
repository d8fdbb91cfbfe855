"""The benchmarks' task tables, free of heavy imports (src.report reads them too)."""

from __future__ import annotations

VTAB_GROUPS: dict[str, list[str]] = {
    "Natural": [
        "cifar",
        "caltech101",
        "dtd",
        "oxford_flowers102",
        "oxford_iiit_pet",
        "svhn",
        "sun397",
    ],
    "Specialized": ["patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"],
    "Structured": [
        "clevr_count",
        "clevr_dist",
        "dmlab",
        "kitti",
        "dsprites_loc",
        "dsprites_ori",
        "smallnorb_azi",
        "smallnorb_ele",
    ],
}

VTAB_TASKS: dict[str, int] = {
    "cifar": 100,
    "caltech101": 102,
    "dtd": 47,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
}

FGVC_TASKS: dict[str, int] = {
    "cub": 200,
    "nabirds": 555,
    "oxford_flowers": 102,
    "stanford_dogs": 120,
    "stanford_cars": 196,
}

FEWSHOT_TASKS: dict[str, int] = {
    "fgvc-aircraft": 100,
    "food101": 101,
    "oxford-flowers102": 102,
    "oxford-pets": 37,
    "stanford-cars": 196,
}

SHOTS = (1, 2, 4, 8, 16)
SPLIT_SEEDS = (0, 1, 2)

# ImageNet domain shift: test-set name -> its key in DOMAIN_FOLDERS (imagenet: the source's val).
DOMAIN_TEST_SETS: dict[str, str] = {
    "imagenet": "imagenet",
    "v2": "v2",
    "sketch": "sketch",
    "a": "a",
    "r": "r",
}

# ------------------------------------------------------------------------- folder names on disk
# The one table of folder names, read by the datamodules and by src.data.check alike. Each
# community's preparation spells some folders its own way; every spelling below loads as is.
#
# Benchmark folders ("containers") searched under data.root, in this order, before data.root
# itself (RepAdapter's VTAB zip and NOAH's scripts keep task folders directly under data/):
CONTAINERS: dict[str, tuple[str, ...]] = {
    "vtab": ("vtab-1k",),  # NOAH's get_vtab1k.py, the official PACE code
    "fgvc": ("fgvc",),
    "fewshot": ("few-shot",),  # NOAH's repository, the official PACE code
    # NOAH's repository: ImageNet under few-shot/imagenet, the shifted sets under
    # domain-generalization/; this project's earlier name domain-adaptation/ still works.
    "domain": ("domain-generalization", "few-shot", "domain-adaptation"),
}

# Task -> accepted folder names, the project's own name first, then (source) the other spellings.
TASK_FOLDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "vtab": {task: (task,) for task in VTAB_TASKS},  # everyone uses NOAH's 19 names
    "fgvc": {
        "cub": ("cub", "CUB_200_2011"),  # VPT: the datasets' own archive folders
        "nabirds": ("nabirds",),
        "oxford_flowers": ("oxford_flowers", "OxfordFlower"),
        "stanford_dogs": ("stanford_dogs", "Stanford-dogs"),
        "stanford_cars": ("stanford_cars", "Stanford-cars"),
    },
    "fewshot": {
        # NOAH's repository and the official PACE code / NOAH's training scripts
        "fgvc-aircraft": ("fgvc-aircraft", "fgvc_aircraft"),
        "food101": ("food101", "food-101"),
        "oxford-flowers102": ("oxford-flowers102", "oxford_flowers102"),
        "oxford-pets": ("oxford-pets", "oxford_pets"),
        "stanford-cars": ("stanford-cars", "standford-cars", "stanford_cars"),
    },
    # Domain shift reads several folders: the source set (the task) and the four shifted sets.
    "domain": {"imagenet": ("imagenet",)},
}

# The shifted test sets: this project's names first, then NOAH's.
DOMAIN_FOLDERS: dict[str, tuple[str, ...]] = {
    "v2": ("imagenetv2",),
    "sketch": ("imagenet-sketch",),
    "a": ("imagenet-a", "imagenet-adversarial"),
    "r": ("imagenet-r", "imagenet-rendition"),
}


def task_folders(benchmark: str, task: str) -> tuple[str, ...]:
    """Folder names ``task`` of ``benchmark`` may have on disk (a custom task: its own name)."""
    return TASK_FOLDERS[benchmark].get(task, (task,))


def claimed_folders() -> set[str]:
    """Every folder name some benchmark reads (src.data.check lists the others as unknown)."""
    names = {name for tasks in TASK_FOLDERS.values() for names in tasks.values() for name in names}
    return names | {name for names in DOMAIN_FOLDERS.values() for name in names}
