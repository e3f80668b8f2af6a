#!/usr/bin/env bash
# Starts a throw-away, single-node Slurm cluster on this machine: munged + slurmctld + slurmd,
# every file (config, munge key, sockets, state, spool, logs, pidfiles) under one directory, so
# nothing in /etc is touched and several instances can coexist. Meant for tests and for trying the
# batch template in scripts/slurm/train.sbatch; no systemd needed (works in containers).
#
# usage: start_local_slurm.sh DIR
#   then:  source DIR/env.sh          # exports SLURM_CONF=DIR/slurm.conf for sbatch/srun/sinfo
#   stop:  scripts/slurm/stop_local_slurm.sh DIR
#
# Installs Debian's slurm-wlm and munge when missing (needs root and apt-get). Running it again on
# the same DIR is harmless: a healthy cluster is left as it is, a half-dead one is restarted.
# Environment:
#   LOCAL_SLURM_CPUS     CPUs the node offers (default: nproc)
#   LOCAL_SLURM_MEM_MB   RealMemory of the node (default 1024; memory is not enforced)
#   LOCAL_SLURM_TIMEOUT  seconds to wait for the node to become idle (default 60)
#   LOCAL_SLURM_CTLD_PORT / LOCAL_SLURM_SLURMD_PORT   ports (default: two free ones)
set -euo pipefail

die() { echo "start_local_slurm: error: $*" >&2; exit 1; }
log() { echo "start_local_slurm: $*" >&2; }

[ $# -eq 1 ] || die "usage: start_local_slurm.sh DIR"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=$DIR/slurm.conf
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- already running? -------------------------------------------------------------------------
if [ -f "$CONF" ] && alive "$DIR/munged.pid" && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" &&
  SLURM_CONF=$CONF timeout 10 sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
  log "already running in $DIR"
  echo "export SLURM_CONF=$CONF"
  exit 0
fi
if [ -e "$DIR/munged.pid" ] || [ -e "$DIR/slurmctld.pid" ] || [ -e "$DIR/slurmd.pid" ]; then
  log "stale instance in $DIR: stopping it first"
  "$HERE/stop_local_slurm.sh" "$DIR" || true
fi

# --- packages --------------------------------------------------------------------------------
need_install=0
for tool in munged slurmctld slurmd sbatch sinfo scontrol; do
  command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null 2>&1 ||
    need_install=1
done
export PATH=$PATH:/usr/sbin:/sbin
if [ "$need_install" = 1 ]; then
  [ "$(id -u)" -eq 0 ] || die "slurm-wlm/munge are missing and installing them needs root"
  command -v apt-get >/dev/null || die "slurm-wlm/munge are missing and there is no apt-get"
  log "installing slurm-wlm and munge (apt-get)"
  # Debian's postinst may try to start the system munge/slurm services; in a container a
  # policy-rc.d usually denies that, and without /etc/slurm/slurm.conf they would not start anyway.
  timeout 600 apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
    slurm-wlm munge >"$DIR/apt.log" 2>&1 || { tail -20 "$DIR/apt.log" >&2; die "apt-get install failed"; }
fi

# --- layout ------------------------------------------------------------------------------------
# munged insists that its key, socket and log directories are not writable by others.
chmod 700 "$DIR"
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge"
chmod 700 "$DIR/munge"
RUN_USER=$(id -un)
HOST=$(hostname -s)
CPUS=${LOCAL_SLURM_CPUS:-$(nproc)}
MEM=${LOCAL_SLURM_MEM_MB:-1024}

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-$(free_port)}
SLURMD_PORT=${LOCAL_SLURM_SLURMD_PORT:-$(free_port)}
[ "$CTLD_PORT" != "$SLURMD_PORT" ] || SLURMD_PORT=$((CTLD_PORT + 1))

# --- munge -------------------------------------------------------------------------------------
KEY=$DIR/munge/munge.key
if [ ! -s "$KEY" ]; then
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$KEY" --force
  else
    dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
  fi
fi
chmod 400 "$KEY"
SOCK=$DIR/munge/munge.socket
munged --key-file="$KEY" --socket="$SOCK" --pid-file="$DIR/munged.pid" \
  --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" --force ||
  die "munged did not start; see $DIR/log/munged.log"
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || die "munged socket $SOCK did not appear; see $DIR/log/munged.log"
munge --socket="$SOCK" -n </dev/null | unmunge --socket="$SOCK" >/dev/null ||
  die "munge round trip failed; see $DIR/log/munged.log"

# --- slurm.conf --------------------------------------------------------------------------------
cat >"$CONF" <<EOF
# Written by scripts/slurm/start_local_slurm.sh: one node (this machine), no cgroups, no database.
ClusterName=dstrain-local
MailProg=/bin/true
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$RUN_USER
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Trust the CPUs below even where the hardware differs (LOCAL_SLURM_CPUS above nproc).
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=600
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# Slurm reads plugstack.conf and the like from the directory of slurm.conf; an empty one keeps
# the system's /etc/slurm/plugstack.conf.d out.
: >"$DIR/plugstack.conf"
echo "PlugStackConfig=$DIR/plugstack.conf" >>"$CONF"
echo "export SLURM_CONF=$CONF" >"$DIR/env.sh"
export SLURM_CONF=$CONF

# --- daemons -----------------------------------------------------------------------------------
# -i: ignore state left from an earlier run of this DIR (fresh queue); both daemonise and write
# their pidfiles themselves.
slurmctld -f "$CONF" -i || die "slurmctld did not start; see $DIR/log/slurmctld.log"
slurmd -f "$CONF" -N "$HOST" || die "slurmd did not start; see $DIR/log/slurmd.log"

deadline=$((SECONDS + TIMEOUT))
state=""
while [ $SECONDS -lt $deadline ]; do
  state=$(timeout 10 sinfo -h -n "$HOST" -o '%t' 2>/dev/null || true)
  case "$state" in
  idle*) break ;;
  drain* | down*)
    scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
if [ "$state" != idle ]; then
  {
    echo "node $HOST is not idle after ${TIMEOUT}s (sinfo state: '${state:-none}')"
    timeout 10 scontrol show node "$HOST" 2>&1 | sed 's/^/  /' || true
    echo "--- slurmctld.log"; tail -15 "$DIR/log/slurmctld.log" 2>/dev/null || true
    echo "--- slurmd.log"; tail -15 "$DIR/log/slurmd.log" 2>/dev/null || true
  } >&2
  "$HERE/stop_local_slurm.sh" "$DIR" || true
  die "local Slurm did not come up"
fi
log "node $HOST idle ($CPUS CPUs); slurmctld port $CTLD_PORT, slurmd port $SLURMD_PORT; dir $DIR"
echo "export SLURM_CONF=$CONF"
