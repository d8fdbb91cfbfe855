#!/usr/bin/env bash
# Run the lines of a job file ("<run-name> <src.train overrides…>", one run a line) two at a
# time, one torch thread each: on 2 cores that beats one run with two threads. Each run goes to
# <out>/<run-name>/ (its log beside it); a finished run is skipped and an interrupted one resumes
# from its last checkpoint, so the same command continues a stopped queue (and, once every run
# has finished, starts nothing).
#   tools/queue.sh EXPERIMENT JOBS_FILE OUT_DIR       e.g.
#   tools/queue.sh demo experiments/demo/tune.jobs logs/demo/tune
set -euo pipefail
cd "$(dirname "$0")/.."
experiment=$1 jobs_file=$2 out=$3 parallel=${PARALLEL:-2}
mkdir -p "$out"
grep -v '^\s*#' "$jobs_file" | grep . | while read -r name overrides; do
  [ -f "$out/$name/results.json" ] && continue   # finished earlier: keep it
  echo "$name $overrides"
done | xargs -r -P "$parallel" -L 1 bash -c '
  name=$0
  # flock: a job already running (another queue, an earlier call) is skipped, not started twice.
  exec 9>'"$out"'/$name.lock
  flock -n 9 || { echo "skipped $name: running elsewhere"; exit 0; }
  .venv/bin/python -m src.train experiment='"$experiment"' cpu_threads=1 callbacks.progress_bar=null \
    hydra.run.dir='"$out"'/$name ckpt_path=last "$@" > '"$out"'/$name.log 2>&1 \
    && echo "done $name" || echo "FAILED $name (see '"$out"'/$name.log)"'
