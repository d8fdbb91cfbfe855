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

# Test-set name -> its folder; the source domain's folder is the task folder (imagenet).
DOMAIN_TEST_SETS: dict[str, str] = {
    "imagenet": "",
    "v2": "imagenetv2",
    "sketch": "imagenet-sketch",
    "a": "imagenet-a",
    "r": "imagenet-r",
}

# Benchmark name -> datamodule class name (src.report tells a run's benchmark by data._target_).
DATAMODULES = {
    "vtab": "VTABDataModule",
    "fgvc": "FGVCDataModule",
    "fewshot": "FewShotDataModule",
    "domain": "DomainDataModule",
}
