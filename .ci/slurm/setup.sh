#!/bin/bash
# A single-node SLURM cluster on this machine for `make test-slurm` (Debian 12 packages
# slurm-wlm and munge, Slurm 22.05), run as root without systemd: munged, slurmctld and slurmd
# started as daemons, state under $SLURM_ROOT.
#
#   bash .ci/slurm/setup.sh          # install, configure, start; waits for the node to be idle
#   bash .ci/slurm/setup.sh stop     # stop the daemons this script started (by their pid files)
#
# Accounting is NOT set up (AccountingStorageType=accounting_storage/none: `sacct` exits 1), as on
# many small clusters; the profile polls with squeue (slurm-status-command in
# profiles/slurm/config.v8+.yaml). MinJobAge=3600 keeps every finished job in `squeue` and
# `scontrol show job` for an hour, which is where tests/test_slurm_cluster.py reads what each job
# was given; jobcomp/filetxt also writes one line per finished job to $SLURM_ROOT/log/jobcomp.txt.
#
# Env: SLURM_ROOT (default /tmp/slurm-ci), SLURM_PARTITIONS (default "cpu gpu", the profile's
# partition names; the first is the default partition), SLURM_MEM_MB (default: RealMemory minus
# 1 GiB), SLURM_FAKE_GPUS (default 2; N > 0 gives the node N fake GPUs as GRES backed by
# character devices nothing opens, so --gpus=1 jobs are scheduled and get CUDA_VISIBLE_DEVICES;
# torch there still finds no CUDA device and runs on the CPU).
set -euo pipefail

SLURM_ROOT=${SLURM_ROOT:-/tmp/slurm-ci}
PARTITIONS=${SLURM_PARTITIONS:-cpu gpu}
FAKE_GPUS=${SLURM_FAKE_GPUS:-2}

stop() {
    for name in slurmd slurmctld munged; do
        pidfile=$SLURM_ROOT/run/$name.pid
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            if kill -0 "$pid" 2>/dev/null; then
                kill "$pid"
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
            rm -f "$pidfile"
        fi
    done
}

if [ "${1:-}" = stop ]; then
    stop
    exit 0
fi

start=$(date +%s)

# 1. packages (munge's post-install creates /etc/munge/munge.key)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. munge key and daemon (munged runs as the munge user)
if [ ! -s /etc/munge/munge.key ]; then
    /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 600 /etc/munge/munge.key
mkdir -p "$SLURM_ROOT"/{run,spool/ctld,spool/d,log} /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 "$SLURM_ROOT/run"
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$SLURM_ROOT/run/munged.pid"
    for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n </dev/null | unmunge >/dev/null

# 3. slurm.conf for this one node
HOST=$(hostname -s)
read -r CPUS REAL_MEM < <(slurmd -C | awk '/^NodeName/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["CPUs"], v["RealMemory"] }')
MEM=${SLURM_MEM_MB:-$((REAL_MEM - 1024))}
mkdir -p /etc/slurm
NODE_GRES=""
if [ "$FAKE_GPUS" -gt 0 ]; then
    [ "$FAKE_GPUS" -le 5 ] || { echo "SLURM_FAKE_GPUS: at most 5" >&2; exit 1; }
    NODE_GRES=" Gres=gpu:$FAKE_GPUS"
    {
        echo "AutoDetect=off"
        # any distinct character devices will do: nothing opens them (at most 5 fake GPUs)
        set -- /dev/null /dev/zero /dev/full /dev/random /dev/urandom
        for dev in $(printf '%s\n' "$@" | head -n "$FAKE_GPUS"); do
            echo "NodeName=$HOST Name=gpu File=$dev"
        done
    } >/etc/slurm/gres.conf
else
    rm -f /etc/slurm/gres.conf
fi
{
    cat <<EOF
ClusterName=test
$([ "$FAKE_GPUS" -gt 0 ] && echo GresTypes=gpu)
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without --mem gets this per CPU, not the whole node
DefMemPerCPU=1000
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$SLURM_ROOT/spool/ctld
SlurmdSpoolDir=$SLURM_ROOT/spool/d
SlurmctldPidFile=$SLURM_ROOT/run/slurmctld.pid
SlurmdPidFile=$SLURM_ROOT/run/slurmd.pid
SlurmctldLogFile=$SLURM_ROOT/log/slurmctld.log
SlurmdLogFile=$SLURM_ROOT/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_ROOT/log/jobcomp.txt
# keep finished jobs visible to squeue and scontrol for an hour (the plugin polls squeue
# without accounting; the tests read each job's record there)
MinJobAge=3600
MaxArraySize=1001
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM$NODE_GRES State=UNKNOWN
EOF
    default=YES
    for p in $PARTITIONS; do
        echo "PartitionName=$p Nodes=ALL Default=$default MaxTime=INFINITE State=UP OverSubscribe=NO"
        default=NO
    done
} >/etc/slurm/slurm.conf

# 4. daemons (as root; they daemonize and write their pid files)
stop_slurm_only() {
    for name in slurmd slurmctld; do
        pidfile=$SLURM_ROOT/run/$name.pid
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    sleep 1
}
stop_slurm_only
# a fresh controller: no job of an earlier run (job ids start again at 1)
rm -rf "${SLURM_ROOT:?}"/spool/ctld/*
/usr/sbin/slurmctld -i   # -i: ignore saved state of an earlier run
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
/usr/sbin/slurmd
for _ in $(seq 150); do
    sinfo -h -N -o '%t' 2>/dev/null | grep -qx idle && break
    sleep 0.2
done
if ! sinfo -h -N -o '%t' | grep -qx idle; then
    scontrol update NodeName="$HOST" State=RESUME || true
    sleep 2
fi
sinfo -o '%P %a %l %D %t %N %G'
srun -N1 -n1 hostname
if [ "$FAKE_GPUS" -gt 0 ]; then
    srun -N1 -n1 --gpus=1 -p "${PARTITIONS##* }" sh -c 'echo "GPU job sees CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"'
fi
echo "single-node SLURM up in $(($(date +%s) - start)) s (logs: $SLURM_ROOT/log)"
