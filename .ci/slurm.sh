#!/usr/bin/env bash
# A one-node SLURM for the cluster tests (tests/cluster/test_slurm.py): Debian's slurm-wlm and munge,
# a slurm.conf of this host in DIR, munged, slurmctld and slurmd started by hand (no systemd).
#
#   .ci/slurm.sh start DIR   install if missing, write DIR/slurm.conf, start the daemons; prints
#                            the SLURM version; exit 0 even when they cannot start (the reason is
#                            in DIR/unavailable and the test skips with it)
#   .ci/slurm.sh stop DIR    cancel every job, stop the daemons by their process ids
#
# Use SLURM_CONF=DIR/slurm.conf for sinfo, sbatch, squeue and the tests.  No cgroup plugins:
# process tracking by the process tree (proctrack/linuxproc), no task binding, no accounting.
set -uo pipefail
cmd=${1:?start or stop}
dir=$(mkdir -p "${2:?directory}" && cd "$2" && pwd)
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"

unavailable() {
    echo "$*" > "$dir/unavailable"
    echo "slurm: unavailable: $*"
    exit 0
}

stop_pidfile() {
    local file=$1 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

if [ "$cmd" = stop ]; then
    if [ -s "$dir/slurmctld.pid" ] && command -v scancel >/dev/null; then
        timeout 10 scancel --user=root 2>/dev/null || true
    fi
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    stop_pidfile "$dir/munged.pid"
    exit 0
fi

rm -f "$dir/unavailable"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm: installing slurm-wlm and munge (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } \
            > "$dir/apt.log" 2>&1; then
        unavailable "apt-get install slurm-wlm munge failed: $(tail -1 "$dir/apt.log")"
    fi
fi
host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 700 "$dir/munge"
cat > "$conf" <<EOF
ClusterName=cotgd
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=8000 State=UNKNOWN
PartitionName=short Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
# munge: a key of this run, a socket of our own (root may run it with --force)
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed" \
    || unavailable "munged did not start: $(tail -1 "$dir/munged.log" 2>/dev/null)"
slurmctld -f "$conf" || unavailable "slurmctld did not start: $(tail -1 "$dir/slurmctld.log" 2>/dev/null)"
slurmd -f "$conf" || unavailable "slurmd did not start: $(tail -1 "$dir/slurmd.log" 2>/dev/null)"
for _ in $(seq 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -q -E '^(idle|mixed|allocated)'; then
        echo "slurm: $(sinfo -V) up: node $host, $cpus CPUs, SLURM_CONF=$conf"
        exit 0
    fi
    sleep 0.5
done
unavailable "the node did not become idle in 30 s: $(sinfo -h -N -o '%T %E' 2>&1 | head -1); $(tail -1 "$dir/slurmd.log" 2>/dev/null)"
