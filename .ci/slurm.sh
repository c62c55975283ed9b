#!/usr/bin/env bash
# Single-node Slurm cluster for CI (issue 24). Run as root on Debian; idempotent.
# Prints one line per phase with its time; exits non-zero with a one-line reason on failure.
# Re-run on a running cluster with an unchanged slurm.conf: no job is submitted, ~0.05 s
# (SLURM_CI_VERIFY=1 forces the verification array). A changed slurm.conf restarts both daemons.
#
# Findings (Debian 12 bookworm, slurm-wlm 22.05.8, munge 0.5.15, 2 CPUs, as root, no systemd):
# - Times: cold (packages not installed, .debs already in the apt cache) 7.7 s in all:
#   install 3.5 s, munge/config/daemons < 0.1 s, verify 4.2 s (the first allocation after
#   slurmctld starts waits ~3 s). A fresh CI machine also downloads ~4.5 MB of .debs (slurm*,
#   libslurm38, munge, libmunge2); add `apt-get update` (done only if the install fails).
#   Re-run with the cluster up: 0.05 s.
# - Works: sbatch --array (3 tasks in ~1-2 s); jobs run as root (SlurmUser=root, no other
#   user needed); squeue and `scontrol show job` (finished jobs stay visible MinJobAge=300 s);
#   `scontrol requeue JOB` and `scontrol requeue ARRAYJOB_TASK` of a running job (the task is
#   killed, output "CANCELLED ... DUE TO JOB REQUEUE", reruns with SLURM_RESTART_COUNT=1;
#   with --open-mode=append the log keeps both runs); `scontrol requeue` of a COMPLETED job
#   also works (back to PENDING) - so "signal -> checkpoint -> exit 0 -> requeue" is possible.
# - Requeue delay: a requeued job is held (Reason=BeginTime) for cred_expire+1 s, default 120 s;
#   AuthInfo=cred_expire=5 below makes it ~6 s.
# - Signals: plain `scancel --signal=USR1 JOB` does NOT reach the batch script (only job
#   steps); `scancel --batch --signal=USR1 JOB` signals the batch shell only (so the batch
#   script should `exec` the worker, or trap and forward); `scancel --full --signal=USR1`
#   signals every process of the job (children with default USR1 disposition die).
#   sbatch --signal=B:USR1@SECONDS is the preemption-before-time-limit form.
# - sacct does NOT work: "Slurm accounting storage is disabled"; only
#   accounting_storage/slurmdbd exists (needs slurmdbd + MariaDB; filetxt storage is gone).
#   Finished-job records instead: JobCompType=jobcomp/filetxt -> /var/log/slurm/jobcomp.log,
#   one line per job/array task (JobId, ArrayJobId, ArrayTaskId, JobState, ExitCode, times).
# - Host: SlurmctldHost/NodeAddr are pinned to 127.0.0.1, so `hostname -s` need not resolve.
#   RealMemory is 90% of MemTotal (above what slurmd sees -> node INVALID); DefMemPerCPU=512,
#   so jobs that need more must pass --mem. CR_Core_Memory: one CPU per task by default.
# - Daemons are reparented to PID 1; where PID 1 does not reap, finished slurmstepd processes
#   stay as harmless zombies. The mpi/pmix "can not load PMIx library" log error is harmless.
set -euo pipefail

die() { echo "slurm.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
phase_start=$(now)
phase() {  # phase NAME: print how long the phase that just ended took
  local t; t=$(now)
  awk -v n="$1" -v a="$phase_start" -v b="$t" 'BEGIN { printf "slurm.sh: %-8s %6.1fs\n", n, b - a }'
  phase_start=$t
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
changed=0  # 1 once anything is installed or (re)started: then the verification job runs
export DEBIAN_FRONTEND=noninteractive
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
WORK=/var/tmp/slurm-ci

# --- install ------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  apt_log=$(mktemp)
  apt_install() { apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$apt_log" 2>&1; }
  apt_install || { apt-get update -q >>"$apt_log" 2>&1 && apt_install; } \
    || { tail -n 20 "$apt_log" >&2; die "apt-get install slurm-wlm munge failed"; }
  rm -f "$apt_log"
  changed=1
fi
phase install

# --- munge --------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  install -d -o munge -g munge -m 0700 /etc/munge
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  changed=1
  runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge credential round trip fails"
fi
phase munge

# --- slurm.conf ---------------------------------------------------------------------------
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
REAL_MEM=$(( MEM_MB * 9 / 10 ))   # a bit under the machine's, or slurmd marks the node INVALID
install -d -m 0755 /etc/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd "$WORK"
new_conf=$(cat <<EOF
# Written by .ci/slurm.sh: single-node cluster for CI.
ClusterName=ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
JobRequeue=1
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" >"$CONF"
  conf_changed=1
  changed=1
fi
phase config

# --- daemons ------------------------------------------------------------------------------
slurm_up() { pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; }
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1; }
if [ "$conf_changed" = 1 ] && slurm_up; then
  # a changed slurm.conf: stop both daemons (scontrol shutdown) and start them afresh below
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 100); do slurm_up || break; sleep 0.1; done
  slurm_up && die "slurmctld/slurmd still running 10s after scontrol shutdown"
fi
if ! pgrep -x slurmctld >/dev/null; then
  changed=1
  slurmctld || die "slurmctld failed to start (see /var/log/slurm/slurmctld.log)"
fi
if ! pgrep -x slurmd >/dev/null; then
  changed=1
  slurmd || die "slurmd failed to start (see /var/log/slurm/slurmd.log)"
fi
state=""
for _ in $(seq 120); do  # bounded: 60 s
  state=$(node_state)
  case "$state" in idle|mixed|allocated|completing) break ;; esac
  case "$state" in down*|drain*|fail*|inval*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;; esac
  sleep 0.5
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *) die "node $HOST not idle after 60s (state '${state:-none}'; $(sinfo -h -R -o '%E' 2>/dev/null | head -n1); see /var/log/slurm/)" ;;
esac
phase daemons

# --- verify: a 3-task array runs ----------------------------------------------------------
# Only when something was installed or (re)started: a re-run on a running cluster submits no
# job, so it stays quick even while the cluster is busy and adds nothing to squeue/jobcomp.log.
if [ "$changed" = 0 ] && [ "${SLURM_CI_VERIFY:-0}" != 1 ]; then
  echo "slurm.sh: cluster already up (node $HOST $state); verification skipped (SLURM_CI_VERIFY=1 forces it)"
  exit 0
fi
out="$WORK/verify.$$"
rm -rf "$out" && mkdir -p "$out"
# (not sbatch --wait: it polls every 2-10 s; squeue every 0.2 s makes this phase ~3x faster)
job=$(sbatch --parsable --array=0-2 --time=1 --mem=64 --output="$out/%a.out" \
  --wrap 'echo $SLURM_ARRAY_TASK_ID') || die "verification sbatch --array=0-2 failed"
for _ in $(seq 300); do  # bounded: 60 s
  [ -z "$(squeue -h -j "$job" -o %i 2>/dev/null)" ] && break
  sleep 0.2
done
[ -z "$(squeue -h -j "$job" -o %i 2>/dev/null)" ] \
  || { scancel "$job"; die "verification array $job not done after 60s: $(squeue -h -j "$job" -o '%i %T %r' | tr '\n' ';')"; }
got=$(cat "$out"/*.out 2>/dev/null | sort | tr '\n' ' ')
rm -rf "$out"
[ "$got" = "0 1 2 " ] || die "verification array printed '$got', expected '0 1 2 '"
phase verify
echo "slurm.sh: cluster up: node $HOST, $CPUS CPUs, ${REAL_MEM} MB, partition debug"
