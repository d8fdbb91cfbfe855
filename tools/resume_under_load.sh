#!/usr/bin/env bash
# The bit-identity resume tests, repeated beside CPU burners (one busy process per core, so the
# tests' runs share the cores with work they did not start): does "bit-identical whatever the
# load" hold? Prints one line per round and the count. Not part of `make test` (it takes
# rounds × ~6 min on 2 cores).
#   bash <checkout>/tools/resume_under_load.sh [rounds, default 3]
set -u
checkout=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
python=${PYTHON:-$checkout/.venv/bin/python}
tests=(
  "tests/test_cli_signals.py::test_stopped_run_resumes_to_the_uninterrupted_end"
  "tests/test_cli_signals.py::test_a_resume_from_an_epoch_end_checkpoint_is_bit_identical"
  "tests/test_cli_signals.py::test_a_run_stopped_mid_epoch_resumes_bit_identically"
  "tests/test_train.py::test_interrupted_run_resumes_from_last_ckpt_to_the_same_end"
)
burners=()
for _ in $(seq "$(nproc)"); do
  "$python" -c "while True: pass" &
  burners+=($!)
done
trap 'kill "${burners[@]}" 2>/dev/null' EXIT
passed=0
for round in $(seq "$rounds"); do
  start=$(date +%s)
  if (cd "$checkout" && "$python" -m pytest -q -p no:cacheprovider "${tests[@]}" > "/tmp/resume_under_load_$round.log" 2>&1); then
    passed=$((passed + 1)); verdict=passed
  else
    verdict="FAILED (/tmp/resume_under_load_$round.log)"
  fi
  printf 'round %d: %s — %s in %d s, load %s\n' "$round" "$(tail -1 "/tmp/resume_under_load_$round.log")" \
    "$verdict" "$(( $(date +%s) - start ))" "$(cut -d' ' -f1 /proc/loadavg)"
done
echo "$passed of $rounds rounds passed beside $(nproc) CPU burners"
