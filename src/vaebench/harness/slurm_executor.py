"""The built-in ``slurm`` executor: a grid's points as one Slurm job array, through submitit.

``vaebench run --executor slurm --partition gpu --gpus-per-task 1 --mem 16G --time 8:00:00``
splits the planned specs into tasks (``harness.tasks.split_tasks``: one array task per grid
point, or per vectorized group with ``--per group``) and submits ONE array with submitit's
``SlurmExecutor.map_array``. What submitit pickles is only the callable :class:`SlurmTask`
(a reference to this module's class, no state) and each task's JSON string
(``PointsTask.to_json``): the job's Python imports vaebench and calls
``vaebench.harness.tasks.run_task(payload_json)``, which claims each point right before it
trains, picks it up from its periodic checkpoint (``--checkpoint-every``) and records it in
the registry (which the job's node must reach). The registry, not submitit's result
pickle, is where results are read from.

Preemption and time limits: submitit asks Slurm for ``--signal=USR2@signal_delay`` (its
``SUBMITIT_PREEMPT_SIGNAL``) and its job handler catches it in the job's Python (under
``srun``, so the job step receives it); it calls :meth:`SlurmTask.checkpoint`, which
releases this process's point claims and returns the same call, and submitit requeues the
array task (``scontrol requeue``). The requeued task claims the point again and continues
from its last periodic checkpoint: a point is trained once, never twice. A task that died
without releasing its claims (a node failure, ``kill -9``) and was requeued, perhaps onto
another node, finds its earlier run's claim still live (up to the lease): each claim names
the task's run (:func:`incarnation`: ``ARRAYJOB_TASK`` and ``SLURM_RESTART_COUNT``), and
Slurm runs one run of a task at a time, so the requeued run takes over a claim of the same
task with a lower restart count at once (``registry.claims.Incarnation``).

Scheduler reads: :meth:`SlurmExecutor.states` (``squeue``; ``scontrol show job`` for tasks
that left the queue; ``sacct`` where accounting is on), :meth:`~SlurmExecutor.cancel`
(``scancel``), :meth:`~SlurmExecutor.log_tail` (the task's submitit ``.out`` and ``.err``).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from vaebench.plugins.contract import ExecutorResult, GridJob, TaskRef, TaskState, tail_of
from vaebench.plugins.runspec import RunSpec

INSTALL = "pip install 'vaebench[slurm]'"
#: Slurm job state -> the contract's task state (``contract.TASK_STATES``); a state not
#: listed is ``failed`` when it ends a job, see :data:`FAILED`.
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED",
          "STOPPED", "RESIZING"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}
FAILED = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "TIMEOUT", "CANCELLED", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
          "SPECIAL_EXIT", "REVOKED"}
#: How long one scheduler command may take (seconds) before it counts as not answering.
COMMAND_TIMEOUT = 60


def incarnation(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Which run of which Slurm task ``environ`` (a job's environment) is:
    ``{"task": "ARRAYJOB_TASK", "restart": N}`` (``SLURM_ARRAY_JOB_ID`` and
    ``SLURM_ARRAY_TASK_ID``, else ``SLURM_JOB_ID`` for a job that is no array, as submitit
    submits a one-task grid; ``N``:
    ``SLURM_RESTART_COUNT``, absent or 0 for the first run), or ``None`` outside Slurm."""
    array, index = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    task = f"{array}_{index}" if array and index else environ.get("SLURM_JOB_ID")
    if not task:
        return None
    try:
        restart = int(environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restart = 0
    return {"task": task, "restart": restart}


class SlurmTask:
    """The callable each array task runs: ``SlurmTask()(payload_json)`` ->
    ``run_task(payload_json)`` with the claims' writer set to ``slurm job ARRAY_TASK`` and
    their incarnation to this run of the task (:func:`incarnation`).
    submitit sees :meth:`checkpoint` and so requeues the task on preemption / time limit."""

    def __call__(self, payload: str) -> str:
        import json

        from vaebench.harness.tasks import run_task

        run = incarnation(os.environ)
        if run is not None:
            data = json.loads(payload)
            data["writer"] = f"slurm job {run['task']}"
            data["incarnation"] = run
            payload = json.dumps(data, sort_keys=True)
        return run_task(payload)

    def checkpoint(self, payload: str) -> Any:
        """Called by submitit's signal handler in the job: release the point claims this
        process holds (the requeued task claims them again) and resubmit the same call."""
        from submitit.helpers import DelayedSubmission

        from vaebench.registry.claims import KEEPER

        for claim in KEEPER.held():
            try:
                claim.release()
            except Exception:  # noqa: BLE001 - the lease runs out instead
                pass
        sys.stderr.write("vaebench: preempted or at the time limit: claims released, requeueing\n")
        sys.stderr.flush()
        return DelayedSubmission(self, payload)


def minutes(value: str | int | float) -> int:
    """A Slurm time limit -> whole minutes (rounded up): ``90``, ``"90"`` (minutes),
    ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"``, ``"D-HH:MM:SS"``."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match or not text:
        raise ValueError(f"time {text!r} is not minutes or Slurm's time format (e.g. 90, 1:30:00, 2-00:00:00)")
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # MM
        seconds = a * 60
    if seconds <= 0:
        raise ValueError(f"time {text!r} must be more than 0")
    return math.ceil(seconds / 60)


def sbatch_options(text: str | None) -> dict[str, Any]:
    """Extra sbatch options (``"--exclusive --nice=10"`` or ``';'``-separated) -> submitit's
    ``additional_parameters`` (``{"exclusive": True, "nice": "10"}``)."""
    parsed: dict[str, Any] = {}
    if not text:
        return parsed
    for part in (p for chunk in text.split(";") for p in shlex.split(chunk)):
        if not part.startswith("--") or len(part) < 3:
            raise ValueError(f"sbatch option {part!r}: write it as --NAME or --NAME=VALUE")
        name, eq, value = part[2:].partition("=")
        parsed[name] = value if eq else True
    return parsed


def setup_lines(text: str | None) -> list[str]:
    """``"module load cuda; source env/bin/activate"`` -> one shell line each."""
    return [line.strip() for line in (text or "").split(";") if line.strip()]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class SlurmExecutor:
    """Submits a grid as one Slurm job array (submitit) and reads its tasks' states."""

    detaches = True
    remote = True

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        self.timeout_min = minutes(self.options.get("time") or 60)
        self.extra = sbatch_options(self.options.get("sbatch"))
        self.setup = setup_lines(self.options.get("setup"))
        if self.options.get("per", "point") not in ("point", "group"):
            raise ValueError(f"per must be point or group, not {self.options.get('per')!r}")

    # ------------------------------------------------------------- submitting

    def folder(self, registry: str) -> Path:
        """Where submitit writes job files and logs: ``--folder``, else ``<registry>/jobs``
        for a registry on this file system, else ``~/.cache/vaebench/slurm``."""
        from vaebench.registry.location import is_remote, local_path

        if self.options.get("folder"):
            return Path(self.options["folder"]).expanduser().absolute()
        if not is_remote(registry):
            return local_path(registry).absolute() / "jobs"
        return Path.home() / ".cache" / "vaebench" / "slurm"

    def parameters(self) -> dict[str, Any]:
        """submitit ``SlurmExecutor.update_parameters`` keyword arguments."""
        o = self.options
        params: dict[str, Any] = {"time": self.timeout_min, "job_name": "vaebench"}
        for key in ("partition", "account", "qos", "constraint", "mem", "cpus_per_task", "gpus_per_task",
                    "array_parallelism"):
            if o.get(key) not in (None, ""):
                params[key] = o[key]
        if o.get("signal_delay") is not None:
            params["signal_delay_s"] = int(o["signal_delay"])
        if self.setup:
            params["setup"] = list(self.setup)
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params

    def run(self, specs: Sequence[RunSpec], job: GridJob) -> ExecutorResult:
        """Submit ``specs`` as one array (one task per point or vectorized group); returns at
        once with the array's job id and each task's ``ARRAY_TASK`` id, run ids and log."""
        import submitit

        from vaebench.harness.tasks import split_tasks

        tasks = split_tasks(specs, job, per=self.options.get("per") or "point", writer="slurm job")
        if job.execution.threads is None:  # the CPUs Slurm grants a task, not the node's cores (no oversubscription)
            for task in tasks:
                task.execution["threads"] = int(self.options.get("cpus_per_task") or 1)
        strategy = "vectorized" if any(t.strategy == "vectorized" for t in tasks) else "sequential"
        if not tasks:
            return ExecutorResult(strategy=strategy)
        folder = self.folder(job.registry)
        folder.mkdir(parents=True, exist_ok=True)
        executor = submitit.SlurmExecutor(folder=folder, python=self.options.get("python") or sys.executable)
        executor.update_parameters(**self.parameters())
        jobs = executor.map_array(SlurmTask(), [t.to_json() for t in tasks])
        refs = [TaskRef(job=str(j.job_id), run_ids=t.run_ids, log=str(j.paths.stderr)) for j, t in zip(jobs, tasks)]
        array = str(jobs[0].job_id).split("_")[0]
        return ExecutorResult(strategy=strategy, jobs=[array], tasks=refs)

    # ------------------------------------------------------------- checks and reads

    def check(self, specs: Sequence[RunSpec]) -> None:
        """``sbatch --test-only`` with this grid's options: an unknown partition, more memory
        or GPUs than a node has, a bad account / qos / constraint -> one-line ``ValueError``."""
        if not specs:
            return
        o = self.options
        cmd = ["sbatch", "--test-only", "--job-name=vaebench-check", f"--time={self.timeout_min}",
               "--output=/dev/null"]
        flags = {"partition": "partition", "mem": "mem", "cpus_per_task": "cpus-per-task",
                 "gpus_per_task": "gpus-per-task", "account": "account", "qos": "qos", "constraint": "constraint"}
        for key, flag in flags.items():
            if o.get(key) not in (None, ""):
                cmd.append(f"--{flag}={o[key]}")
        cmd += [f"--{k}" if v is True else f"--{k}={v}" for k, v in self.extra.items()]
        cmd += ["--wrap", "true"]
        try:
            done = _run(cmd)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError(f"sbatch --test-only did not answer: {exc}") from None
        if done.returncode != 0:
            reason = _last_line(done.stderr) or _last_line(done.stdout) or f"exit {done.returncode}"
            reason = re.sub(r"^sbatch: error: (Batch job submission failed: )?", "", reason)
            raise ValueError(f"Slurm refuses these options: {reason}")

    def states(self, tasks: Sequence[TaskRef]) -> dict[str, TaskState]:
        """Each task's state by its ``ARRAY_TASK`` id: ``squeue`` for queued / running
        (a requeued task is queued), ``scontrol show job`` for one that left the queue
        (kept ``MinJobAge`` after it ended), ``sacct`` where accounting is on, else unknown."""
        wanted = [t.job for t in tasks]
        if not wanted:
            return {}
        arrays = sorted({j.split("_")[0] for j in wanted})
        found: dict[str, TaskState] = {}
        try:
            done = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(arrays)])
            for line in done.stdout.splitlines() if done.returncode == 0 else []:
                job_id, _, rest = line.strip().partition("|")
                state, _, reason = rest.partition("|")
                found[job_id] = self._state(state, reason)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for array in arrays:
            if all(j in found for j in wanted if j.split("_")[0] == array):
                continue
            try:
                done = _run(["scontrol", "-o", "show", "job", array])
            except (OSError, subprocess.TimeoutExpired):
                continue
            for line in done.stdout.splitlines() if done.returncode == 0 else []:
                fields = dict(re.findall(r"(\w+)=(\S*)", line))
                job_id = (f"{fields.get('ArrayJobId')}_{fields.get('ArrayTaskId')}" if fields.get("ArrayTaskId")
                          else fields.get("JobId", ""))
                if job_id in wanted and job_id not in found:
                    found[job_id] = self._state(fields.get("JobState", ""), fields.get("Reason", ""))
        missing = [j for j in wanted if j not in found]
        if missing:
            try:
                done = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)])
                for line in done.stdout.splitlines() if done.returncode == 0 else []:
                    job_id, _, state = line.strip().partition("|")
                    if job_id in missing:
                        found[job_id] = self._state(state.split()[0] if state else "", "")
            except (OSError, subprocess.TimeoutExpired):
                pass
        return {j: found.get(j, TaskState("unknown")) for j in wanted}

    @staticmethod
    def _state(state: str, reason: str) -> TaskState:
        state = state.strip().upper()
        reason = "" if reason.strip() in ("None", "(null)") else reason.strip()
        if state in QUEUED:
            return TaskState("queued", reason or state)
        if state in RUNNING:
            return TaskState("running", reason)
        if state == "COMPLETED":
            return TaskState("ended", reason)
        if state in FAILED:
            return TaskState("failed", state + (f" ({reason})" if reason and reason != state else ""))
        return TaskState("unknown", state)

    def cancel(self, tasks: Sequence[TaskRef]) -> list[str]:
        """``scancel`` each task; returns their ids (a ``ValueError`` if scancel refuses)."""
        ids = list(dict.fromkeys(t.job for t in tasks))
        if not ids:
            return []
        try:
            done = _run(["scancel", *ids])
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError(f"scancel did not answer: {exc}") from None
        if done.returncode != 0:
            raise ValueError(f"scancel failed: {_last_line(done.stderr) or done.returncode}")
        return ids

    def log_tail(self, task: TaskRef, lines: int = 20) -> str:
        """The last ``lines`` lines of the task's submitit log: stdout (``.out``) then
        stderr (``.err``, where the worker's progress and a traceback go)."""
        if not task.log:
            return ""
        err = task.log
        out = err[:-4] + ".out" if err.endswith(".err") else None
        parts = [tail_of(p, lines) for p in (out, err) if p]
        return "\n".join(p for p in parts if p).strip("\n")


def slurm_executor(options: Mapping[str, Any]) -> SlurmExecutor:
    """The ``slurm`` executor's factory: a one-line ``ValueError`` when submitit is not
    installed or Slurm's ``sbatch`` is not on PATH."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ValueError(f"the slurm executor needs submitit: install it with: {INSTALL}") from None
    if shutil.which("sbatch") is None:
        raise ValueError("Slurm's sbatch is not on PATH: run on a Slurm login node, or install Slurm's "
                         f"client commands (and submitit: {INSTALL})")
    return SlurmExecutor(options)
