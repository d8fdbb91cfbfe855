#!/usr/bin/env bash
# Stop the one-node cluster that tools/slurm/up.sh started (slurmd, slurmctld, munged), by the
# pids in its state folder. Idempotent; keeps the state folder (key, config, logs) for the next up.
set -uo pipefail

STATE=${PACE_SLURM_DIR:-/tmp/pace-slurm}

stop() {  # stop NAME: TERM the daemon named by its pid file, then wait for it to exit
  local pidfile=$STATE/run/$1.pid pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
}

# Jobs still running would otherwise outlive their slurmd.
if [ -f "$STATE/slurm.conf" ] && command -v scancel >/dev/null; then
  SLURM_CONF=$STATE/slurm.conf scancel --user="$(id -un)" 2>/dev/null || true
fi
stop slurmd
stop slurmctld
[ -n "${PACE_SLURM_KEEP_MUNGE:-}" ] || stop munged
echo "SLURM is down (state kept in $STATE)"
