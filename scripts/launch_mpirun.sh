#!/usr/bin/env bash
# Launches dstrain under OpenMPI's mpirun on one or several hosts, after checking the hostfile:
# every host must resolve and (unless it is this machine) accept a non-interactive ssh login
# within DST_SSH_TIMEOUT seconds. A bad host is one line naming the hostfile, its line and the
# host, and exit code 2, instead of mpirun's page of text or a hang on an unreachable address.
#
# usage: scripts/launch_mpirun.sh [mpirun options] -- DSTRAIN_ARGS...
#   scripts/launch_mpirun.sh -np 16 --hostfile hosts --map-by ppr:8:node -- \
#       train configs/x.yaml parallel.dp=16 train.output_dir=/shared/runs/x
# Environment: DSTRAIN (default: build/dstrain beside this script), DST_SSH_TIMEOUT (default 5).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DSTRAIN=${DSTRAIN:-$here/../build/dstrain}
TIMEOUT=${DST_SSH_TIMEOUT:-5}

die() { echo "launch_mpirun: error: $*" >&2; exit 2; }

mpirun_args=()
hostfile=
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    --hostfile | -hostfile | --machinefile | -machinefile)
      [ $# -ge 2 ] || die "$1 needs a file"
      hostfile=$2
      mpirun_args+=("$1" "$2")
      shift 2 ;;
    *) mpirun_args+=("$1"); shift ;;
  esac
done
[ $# -gt 0 ] || die "no dstrain arguments (put them after --)"
[ -x "$DSTRAIN" ] || die "dstrain binary '$DSTRAIN' not found (set DSTRAIN)"

is_local() {
  case "$1" in
    localhost | 127.* | ::1 | "$(hostname)" | "$(hostname -f 2> /dev/null || hostname)") return 0 ;;
  esac
  return 1
}

if [ -n "$hostfile" ]; then
  [ -r "$hostfile" ] || die "$hostfile: cannot read the hostfile"
  line_number=0
  hosts=0
  while IFS= read -r line || [ -n "$line" ]; do
    line_number=$((line_number + 1))
    line=${line%%#*}
    read -r host options <<< "$line" || true
    [ -n "${host:-}" ] || continue
    hosts=$((hosts + 1))
    for option in $options; do
      case "$option" in
        slots=[0-9]* | max_slots=[0-9]* | max-slots=[0-9]*) ;;
        *) die "$hostfile:$line_number: unknown option '$option' for host '$host' (expected slots=N)" ;;
      esac
    done
    getent ahosts "$host" > /dev/null ||
      die "$hostfile:$line_number: host '$host' cannot be resolved"
    if ! is_local "$host"; then
      ssh -o BatchMode=yes -o ConnectTimeout="$TIMEOUT" -o StrictHostKeyChecking=accept-new \
        "$host" true < /dev/null > /dev/null 2>&1 ||
        die "$hostfile:$line_number: host '$host' is unreachable (no non-interactive ssh login within ${TIMEOUT} s)"
    fi
  done < "$hostfile"
  [ "$hosts" -gt 0 ] || die "$hostfile: no hosts listed"
fi

source "$here/mpi_env.sh"
# mpirun's own ssh must not wait forever either.
exec mpirun --bind-to none --mca plm_rsh_args "-o BatchMode=yes -o ConnectTimeout=$TIMEOUT" \
  "${mpirun_args[@]}" "$DSTRAIN" "$@"
