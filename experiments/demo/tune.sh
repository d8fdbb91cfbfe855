#!/usr/bin/env bash
# Choose σ and λ for the demo task on the `tune` protocol (train800 -> val200), one seed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SWEEP=${SWEEP:-logs/demo/tune}
common=(experiment=demo data.protocol=tune test=false callbacks.progress_bar=null hydra.sweep.dir=$SWEEP)
$PY -m src.train "${common[@]}" pace=none -m
$PY -m src.train "${common[@]}" pace=pace sigma=0.5,1.0 lam=0.2,1.0 -m
