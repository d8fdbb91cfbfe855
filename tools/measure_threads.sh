#!/usr/bin/env bash
# `make train` wall time under torch's default threads (cpu_threads=2 on a 2-core machine) and
# under cpu_threads=auto, first on an idle machine, then beside a second training job that keeps
# torch's default. Run from an empty folder: it writes data/ and logs/ there.
#   bash <checkout>/tools/measure_threads.sh [idle rounds, default 3] [loaded rounds, default 2]
set -u
checkout=$(cd "$(dirname "$0")/.." && pwd)
idle_rounds=${1:-3}
loaded_rounds=${2:-2}
default=$(nproc)
train() { make -f "$checkout/Makefile" train RUN_ARGS="cpu_threads=$1" > "train_$1.log" 2>&1; }
timed() {
  local start end
  start=$(date +%s.%N); train "$2"; end=$(date +%s.%N)
  printf '%-7s cpu_threads=%-5s %6.1f s  (%s)  load %s\n' "$1" "$2" "$(echo "$end - $start" | bc)" \
    "$(grep -o 'torch uses [0-9]* CPU thread(s)' "train_$2.log" | head -1)" "$(cut -d' ' -f1 /proc/loadavg)"
}
train auto  # data and caches, untimed
for _ in $(seq "$idle_rounds"); do timed idle "$default"; timed idle auto; done
mkdir -p other
(cd other && while [ ! -f ../stop-other ]; do train "$default"; done) &
sleep 15  # the other job is past its start-up
for _ in $(seq "$loaded_rounds"); do timed loaded "$default"; timed loaded auto; done
touch stop-other; wait; rm -f stop-other
