#!/usr/bin/env bash
# Real single-node SLURM cluster test (issue: "One DAG, three ways to run it").
#
# Installs Debian's slurm-wlm and munge when missing, writes /etc/slurm/slurm.conf (the plugin's job step drops
# SLURM_CONF, so the default path is used), starts munged, slurmctld and slurmd on this host, runs a small slice of
# the demo (data steps and two training jobs) through `snakemake --executor slurm --workflow-profile
# workflow/profiles/slurm`, checks that the jobs went through sbatch and that the results equal a local run, and
# stops the daemons it started, by PID. Needs root. Bounded in time; on failure it prints the Slurm logs.
#
#   bash tests/cluster/slurm_cluster.sh            (from the repository root, with .venv installed)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV_BIN="$REPO/.venv/bin"
export PATH="$VENV_BIN:$PATH"
WORK=$(mktemp -d /tmp/augmem-slurm.XXXXXX)
# mktemp makes the folder 0700; the Slurm daemons run as root but munged runs as the munge user and must reach it.
chmod 0755 "$WORK"
STATE="$WORK/slurm"
PIDS=()
CONF=/etc/slurm/slurm.conf
CONF_BACKUP=""

log() { printf '[slurm-test] %s\n' "$*"; }

dump_logs() {
  log "---- slurmctld.log"; tail -n 60 "$STATE/slurmctld.log" 2>/dev/null || true
  log "---- slurmd.log"; tail -n 60 "$STATE/slurmd.log" 2>/dev/null || true
  log "---- job logs"; { find "$WORK/cluster/logs/slurm" -type f 2>/dev/null || true; } | head -20 | while read -r f; do
    echo "== $f"; tail -n 30 "$f"; done
  log "---- snakemake log"; tail -n 80 "$WORK/cluster.log" 2>/dev/null || true
}

cleanup() {
  rc=$?
  set +e
  if [ $rc -ne 0 ]; then log "FAILED (exit $rc)"; dump_logs; fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [ -n "$CONF_BACKUP" ]; then mv -f "$CONF_BACKUP" "$CONF"; else rm -f "$CONF"; fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "needs root (installs packages, starts daemons)"; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -q >/dev/null
  timeout 900 apt-get install -y -q slurm-wlm munge >/dev/null
fi

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge "$STATE/spool" "$STATE/state"
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  # The PID file lives in munge's own run folder: munged drops to the munge user and checks its PID-file folder.
  rm -f /run/munge/augmem-munged.pid
  runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/augmem-munged.pid --socket=/run/munge/munge.socket.2
  for _ in $(seq 20); do [ -s /run/munge/augmem-munged.pid ] && break; sleep 0.5; done
  PIDS+=("$(cat /run/munge/augmem-munged.pid)")
fi
munge -n | unmunge >/dev/null

# ---------------------------------------------------------------- slurm.conf + daemons
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
if [ -e "$CONF" ]; then CONF_BACKUP="$CONF.augmem-backup"; cp -p "$CONF" "$CONF_BACKUP"; fi
mkdir -p /etc/slurm
cat > "$CONF" <<CONFEOF
ClusterName=augmemtest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONFEOF
/usr/sbin/slurmctld -f "$CONF"
/usr/sbin/slurmd -f "$CONF"
for _ in $(seq 30); do [ -s "$STATE/slurmctld.pid" ] && [ -s "$STATE/slurmd.pid" ] && break; sleep 1; done
PIDS+=("$(cat "$STATE/slurmctld.pid")" "$(cat "$STATE/slurmd.pid")")
for _ in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o %t | grep -q idle || { log "node never became idle"; exit 1; }
log "cluster up: $(sinfo -h -o '%P %D %t %N')"

# ---------------------------------------------------------------- the slice, locally and on the cluster
cat > "$WORK/slice.yaml" <<'YAMLEOF'
datasets: [core50_demo]
scenarios: [class_iid]
fidelities: [reference]
runs: 1
train:
  datasets: [core50_demo]
  scenarios: [class_iid]
  agents: [lower_bound, augmem]
  runs: 1
  device: cpu
  threads: 1
  seed_base: 0
YAMLEOF
for d in local cluster; do
  mkdir -p "$WORK/$d"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/$d")
done

log "local run"
(cd "$WORK/local" && timeout 900 snakemake --cores 2 --configfile "$WORK/slice.yaml" --workflow-profile none \
   > "$WORK/local.log" 2>&1) || { tail -n 60 "$WORK/local.log"; exit 1; }

log "cluster run"
(cd "$WORK/cluster" && timeout 1200 snakemake --workflow-profile workflow/profiles/slurm --configfile "$WORK/slice.yaml" \
   --jobs 4 --slurm-no-account --slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 3 \
   --latency-wait 10 > "$WORK/cluster.log" 2>&1)

# every job of the slice went through sbatch: one job log per submitted job, and slurmctld allocated them
n_submitted=$(grep -c "has been submitted with SLURM jobid" "$WORK/cluster.log" || true)
# the main and the backfill scheduler log their starts differently; count distinct job ids
n_alloc=$(grep -oE "(Allocate|Started) JobId=[0-9]+" "$STATE/slurmctld.log" | grep -oE "[0-9]+$" | sort -u | wc -l)
n_logs=$(find "$WORK/cluster/logs/slurm" -type f -name '*.log' | wc -l)
log "submitted=$n_submitted allocated=$n_alloc job-logs=$n_logs"
[ "$n_submitted" -ge 6 ] || { log "expected the data and training jobs to be submitted"; exit 1; }
[ "$n_alloc" -ge "$n_submitted" ] || { log "slurmctld allocated fewer jobs than submitted"; exit 1; }
grep -q "rule train" "$WORK/cluster.log" || { log "no training job ran on the cluster"; exit 1; }

# results equal the local run (timings and the device field aside)
python - "$WORK/local" "$WORK/cluster" <<'PYEOF'
import json, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(p.relative_to(a) for p in a.glob("results/*/*/*/*/run*/metrics.json"))
assert len(files) == 2, files
def strip(m):
    m = dict(m); m.pop("timing", None); m["meta"] = {k: v for k, v in m["meta"].items() if k != "device"}
    return m
for f in files:
    ma, mb = json.loads((a / f).read_text()), json.loads((b / f).read_text())
    assert strip(ma) == strip(mb), f"{f}: cluster result differs from the local run"
print(f"[slurm-test] {len(files)} metrics files identical to the local run")
PYEOF
log "PASSED"
