#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (slurmctld + slurmd on localhost, munge auth),
# for tests and for trying the sweep without a cluster. Needs root and Debian's slurm-wlm + munge.
#
#   launchers/slurm_single_node.sh start DIR   # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   launchers/slurm_single_node.sh stop DIR    # stops what start started (pids in DIR)
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?state dir}")
mkdir -p "$dir"

if [ "$cmd" = stop ]; then
  for p in slurmd slurmctld; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
  exit 0
fi

command -v slurmctld >/dev/null || { echo "slurm-wlm is not installed (apt-get install slurm-wlm munge)" >&2; exit 3; }
[ "$(id -u)" = 0 ] || { echo "a local SLURM needs root" >&2; exit 3; }

# munge: one key, one daemon for the machine
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
  [ -s /etc/munge/munge.key ] || head -c 1024 /dev/urandom > /etc/munge/munge.key
  chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge 2>/dev/null || true
  chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
  /usr/sbin/munged --force
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/log"
cat > "$dir/slurm.conf" <<CONF
ClusterName=amqlocal
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmUser=root
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
/usr/sbin/slurmctld -f "$SLURM_CONF"
sleep 1
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then echo "SLURM_CONF=$SLURM_CONF"; exit 0; fi
  sleep 1
done
echo "slurm did not come up; logs in $dir/log" >&2
exit 1
