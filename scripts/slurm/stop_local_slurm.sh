#!/usr/bin/env bash
# Stops the single-node Slurm started by scripts/slurm/start_local_slurm.sh DIR: cancels its jobs,
# ends slurmd, slurmctld and munged by their pidfiles (TERM, then KILL after a grace period), ends
# any job process still carrying this instance's SLURM_CONF, and removes the runtime files (state,
# spool, sockets, pidfiles, munge key). Logs and slurm.conf stay in DIR for a post-mortem unless
# --purge is given, which removes DIR. Safe to run twice, or on a DIR where nothing runs.
# usage: stop_local_slurm.sh DIR [--purge]
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: stop_local_slurm.sh DIR [--purge]" >&2; exit 2; }
[ -d "$1" ] || exit 0
DIR=$(cd "$1" && pwd)
PURGE=${2:-}
CONF=$DIR/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Cancel jobs first so slurmd ends their steps while it still runs.
if [ -f "$CONF" ] && alive "$DIR/slurmctld.pid"; then
  SLURM_CONF=$CONF timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 20); do
    jobs=$(SLURM_CONF=$CONF timeout 5 squeue -h -o %i 2>/dev/null) || break
    [ -z "$jobs" ] && break
    sleep 0.5
  done
fi

stop_pidfile() {
  local file=$1 pid
  [ -s "$file" ] || { rm -f "$file"; return; }
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$file"
}
stop_pidfile "$DIR/slurmd.pid"
stop_pidfile "$DIR/slurmctld.pid"
stop_pidfile "$DIR/munged.pid"

# Leftovers of this instance only: its slurmstepd processes (they inherit SLURM_CONF=DIR/slurm.conf
# from slurmd) and its job processes (SLURM_JOB_ID plus the SLURM_CONF they got from sbatch). A
# shell that merely exported SLURM_CONF, and this script's own ancestors, are left alone.
ancestors=" "
pid=$$
while [ -n "$pid" ] && [ "$pid" -gt 1 ] 2>/dev/null; do
  ancestors+="$pid "
  pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
done
leftovers=()
for env in /proc/[0-9]*/environ; do
  pid=${env#/proc/}; pid=${pid%/environ}
  case "$ancestors" in *" $pid "*) continue ;; esac
  vars=$({ tr '\0' '\n' <"$env"; } 2>/dev/null) || continue
  grep -qxF "SLURM_CONF=$CONF" <<<"$vars" || continue
  if grep -q '^SLURM_JOB_ID=' <<<"$vars" || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ]; then
    leftovers+=("$pid")
  fi
done
if [ ${#leftovers[@]} -gt 0 ]; then
  kill -TERM "${leftovers[@]}" 2>/dev/null || true
  sleep 1
  for pid in "${leftovers[@]}"; do  # still there and still ours (pids are not reused that fast)
    { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" &&
      kill -KILL "$pid" 2>/dev/null
  done
fi

rm -rf "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/env.sh"
[ "$PURGE" = --purge ] && rm -rf "$DIR"
exit 0
