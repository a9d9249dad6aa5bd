#!/usr/bin/env bash
# A real Slurm cluster on this machine for the workflow test: Debian's slurm-wlm + munge, started
# without systemd, with SLURM_NODES (default 2) compute nodes. Each node is its own slurmd (node
# names vegtts-n1, vegtts-n2, ... on this host, each with its own port, spool, log and pid file);
# each advertises a fake GPU (gres gpu:1 backed by /dev/null), SLURM_NODE_CPUS CPUs (default: the
# host's) and SLURM_NODE_MEM_MB of memory (default 6000); SlurmdParameters=config_overrides lets a
# node advertise more than the host has, so a profile written for real nodes schedules unchanged.
#   tests/slurm/cluster.sh up     install (apt, as root) if missing, write the config, start, wait
#   tests/slurm/cluster.sh down   stop the daemons this script started (by their pid files)
# Different hardware per node: a TaskProlog exports VEGTTS_TEST_HARDWARE=<node name> into every job
# step, so vegtts on node vegtts-n1 reports another hardware identity than on vegtts-n2 (and than the
# submitting head process); see vegtts.io.HARDWARE_OVERRIDE_ENV.
# Needs root. It refuses to touch a slurm.conf it did not write, so it never reconfigures a real
# cluster.
set -euo pipefail

MARK="# written by vegtts tests/slurm/cluster.sh"
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
NODES=${SLURM_NODES:-2}
NODE_NAMES=()
for i in $(seq "$NODES"); do NODE_NAMES+=("vegtts-n$i"); done
PROLOG=/etc/slurm/vegtts-task-prolog.sh

log() { echo "[slurm-cluster] $*" >&2; }

pidfiles() {
  echo /run/slurm/slurmctld.pid
  for n in "${NODE_NAMES[@]}"; do echo "/run/slurm/slurmd-$n.pid"; done
  ls /run/slurm/slurmd-*.pid /run/slurm/slurmd.pid 2>/dev/null || true  # nodes of an earlier, larger cluster
  echo /run/munge/munged.pid
}

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
  local node_lines="" gres_lines="" port=6818 names
  for n in "${NODE_NAMES[@]}"; do
    node_lines+="NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$port CPUs=${SLURM_NODE_CPUS:-$(nproc)} RealMemory=${SLURM_NODE_MEM_MB:-6000} Gres=gpu:1 State=UNKNOWN"$'\n'
    gres_lines+="NodeName=$n Name=gpu File=/dev/null Count=1"$'\n'
    port=$((port + 1))
  done
  names=$(IFS=,; echo "${NODE_NAMES[*]}")
  # MinJobAge: how long squeue still lists finished jobs. The executor plugin's squeue status
  # command needs >= 3 x slurm-init-seconds-before-status-checks; the test reads every job of the
  # run back at the end. DefMemPerCPU: without it every job takes the whole node's memory.
  # SlurmdSpoolDir/PidFile/LogFile: %n is the node name, so the slurmds on this host stay apart.
  cat > "$CONF" <<CONF
$MARK
ClusterName=vegtts-ci
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$PROLOG
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=3600
SchedulerParameters=sched_interval=2
GresTypes=gpu
${node_lines}# the partition names of profiles/slurm, both on every node
PartitionName=cpu Nodes=$names Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$names MaxTime=INFINITE State=UP
CONF
  # File= is required: without a device the node drains with "gres/gpu count reported lower".
  printf '%s\n%s' "$MARK" "$gres_lines" > /etc/slurm/gres.conf
  cat > "$PROLOG" <<'PROLOG'
#!/bin/sh
# vegtts tests/slurm/cluster.sh: each node reports its own hardware identity to vegtts
echo "export VEGTTS_TEST_HARDWARE=${SLURMD_NODENAME:-unknown}"
PROLOG
  chmod 755 "$PROLOG"
}

stop_daemons() {
  local f pid
  for f in $(pidfiles); do
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
  local n
  mkdir -p /run/munge /run/slurm /var/spool/slurmctld /var/log/slurm
  chown munge:munge /run/munge
  chown slurm:slurm /var/spool/slurmctld /var/log/slurm
  [ -s /etc/munge/munge.key ] || { mungekey --create; chown munge:munge /etc/munge/munge.key; }
  # A fresh controller state each time: no jobs left over from an earlier test run.
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd
  su -s /bin/sh munge -c /usr/sbin/munged
  munge -n | unmunge >/dev/null || { log "munge does not work"; exit 5; }
  /usr/sbin/slurmctld
  for n in "${NODE_NAMES[@]}"; do
    mkdir -p "/var/spool/slurmd/$n"
    /usr/sbin/slurmd -N "$n"
  done
}

wait_for_idle_nodes() {
  local n state ready
  for _ in $(seq 60); do
    ready=0
    for n in "${NODE_NAMES[@]}"; do
      state=$(sinfo -h -n "$n" -o %T 2>/dev/null | head -n1 || true)
      case "$state" in
        idle*|mixed*|allocated*) ready=$((ready + 1)) ;;
        drain*|down*|inval*) scontrol update nodename="$n" state=resume 2>/dev/null || true ;;
      esac
    done
    if [ "$ready" = "${#NODE_NAMES[@]}" ]; then
      log "nodes ${NODE_NAMES[*]} are up"
      return 0
    fi
    sleep 0.5
  done
  log "not every node became idle; logs in /var/log/slurm"
  sinfo -N >&2 || true
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd-*.log >&2 || true
  exit 6
}

case "${1:-}" in
  up)
    [ "$(id -u)" = 0 ] || { log "must run as root"; exit 2; }
    install_packages
    write_config
    stop_daemons
    start_daemons
    wait_for_idle_nodes
    ;;
  down)
    stop_daemons
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
