#!/usr/bin/env bash
# A real one-node Slurm cluster for the workflow test: Debian's slurm-wlm + munge, started without
# systemd, one node that advertises a fake GPU (gres gpu:1 backed by /dev/null).
#   tests/slurm/cluster.sh up     install (apt, as root) if missing, write the config, start, wait
#   tests/slurm/cluster.sh down   stop the daemons this script started (by their pid files)
# Needs root. It refuses to touch a slurm.conf it did not write, so it never reconfigures a real
# cluster.
set -euo pipefail

MARK="# written by vegtts tests/slurm/cluster.sh"
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
PIDFILES=(/run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/munge/munged.pid)

log() { echo "[slurm-cluster] $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || { log "slurm is not installed and there is no apt-get"; exit 3; }
  log "installing slurm-wlm and munge with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    log "$CONF exists and was not written by this script; refusing to replace it"
    exit 4
  fi
  getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
  mkdir -p /etc/slurm
  # MinJobAge: how long squeue still lists finished jobs. The executor plugin's squeue status
  # command needs >= 3 x slurm-init-seconds-before-status-checks; the test reads every job of the
  # run back at the end. DefMemPerCPU: without it every job takes the whole node's memory.
  cat > "$CONF" <<CONF
$MARK
ClusterName=vegtts-ci
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=none
ReturnToService=2
MinJobAge=3600
SchedulerParameters=sched_interval=2
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${SLURM_NODE_MEM_MB:-6000} Gres=gpu:1 State=UNKNOWN
# the partition names of workflow/profiles/slurm, both on the one node
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
CONF
  echo "$MARK" > /etc/slurm/gres.conf
  # File= is required: without a device the node drains with "gres/gpu count reported lower".
  echo "NodeName=$HOST Name=gpu File=/dev/null Count=1" >> /etc/slurm/gres.conf
}

stop_daemons() {
  local f pid
  for f in "${PIDFILES[@]}"; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$f"
  done
}

start_daemons() {
  mkdir -p /run/munge /run/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown munge:munge /run/munge
  chown slurm:slurm /var/spool/slurmctld /var/log/slurm
  [ -s /etc/munge/munge.key ] || { mungekey --create; chown munge:munge /etc/munge/munge.key; }
  # A fresh controller state each time: no jobs left over from an earlier test run.
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
  su -s /bin/sh munge -c /usr/sbin/munged
  munge -n | unmunge >/dev/null || { log "munge does not work"; exit 5; }
  /usr/sbin/slurmctld
  /usr/sbin/slurmd
}

wait_for_idle_node() {
  local state
  for _ in $(seq 60); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    case "$state" in
      idle*|mixed*|allocated*) log "node $HOST is $state"; return 0 ;;
      drain*|down*|inval*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  log "node $HOST never became idle (state: ${state:-none}); logs in /var/log/slurm"
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 6
}

case "${1:-}" in
  up)
    [ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }
    install_packages
    write_config
    stop_daemons
    start_daemons
    wait_for_idle_node
    ;;
  down)
    stop_daemons
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
