#!/usr/bin/env bash
# Run the lines of a job file (one `src.train` override list per line: "<run-name> <overrides…>")
# two at a time, one torch thread each: on 2 cores that beats one job with two threads.
#   experiments/demo/queue.sh experiments/demo/tune.jobs logs/demo/tune
set -euo pipefail
cd "$(dirname "$0")/../.."
jobs_file=$1 out=$2 parallel=${PARALLEL:-2}
mkdir -p "$out"
grep -v '^\s*#' "$jobs_file" | grep . | while read -r name overrides; do
  [ -f "$out/$name/results.json" ] && continue   # finished earlier: keep it
  echo "$name $overrides"
done | xargs -P "$parallel" -L 1 bash -c '
  name=$0
  # flock: a job already running (another queue, an earlier call) is skipped, not started twice.
  exec 9>'"$out"'/$name.lock
  flock -n 9 || { echo "skipped $name: running elsewhere"; exit 0; }
  OMP_NUM_THREADS=1 .venv/bin/python -m src.train experiment=demo callbacks.progress_bar=null \
    hydra.run.dir='"$out"'/$name ckpt_path=last "$@" > '"$out"'/$name.log 2>&1 \
    && echo "done $name" || echo "FAILED $name (see '"$out"'/$name.log)"'
