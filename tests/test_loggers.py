"""Experiment trackers (``--log-to``): the real MLflow, TensorBoard and W&B libraries write
what a tiny real grid logs, read back with each library's own reader; a logger that fails
warns once and the runs are recorded ok; an unknown or missing logger stops the grid
before anything trains.

Costs (2 shared CPU cores): the three trackers' grid (one mlp run, 40 steps, MIG on 512
observations, all three loggers at once; W&B's offline service start is most of it)
~11-17 s, shared by the three read-back tests; the failing-logger grid (two seeds) ~5 s;
the bad MLflow store through the CLI (a fresh interpreter, two seeds) ~10 s; the refusals
~1.5 s; the continuation ~4 s; the task round trip < 0.1 s; four processes opening one new
MLflow store at once ~6 s; the off-interval last step ~3 s; MLflow's final.kl ~4 s; an MLflow
server that is down ~5 s. About 55 s in all.
"""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_vaebench
from vaebench import api
from vaebench.harness.loggers import LOG_EVERY, check_log_to, parse_log_to
from vaebench.harness.tasks import PointsTask, split_tasks
from vaebench.plugin import GridJob, LoggerSpec
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.registry import store
from vaebench.testing import SpecsPlugin, plugin_manager

#: A tiny real run: mlp, 40 steps, MIG on 512 observations, progress (and logging) every 10 steps.
TINY = dict(architectures="mlp", steps=40, batch_sizes=16, eval_samples=512, metrics=["mig"], device="cpu",
            threads=1, strategy="sequential")
LIVE_STEPS = [10, 20, 30, 40]


def _installed(*names: str) -> list[str]:
    out = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            continue
        out.append(name)
    return out


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One real run logged to every installed tracker: ``(registry, record, loggers)``."""
    loggers = _installed("mlflow", "tensorboard", "wandb")
    if not loggers:
        pytest.skip("no tracker installed (pip install 'vaebench[mlflow,tensorboard,wandb]')")
    registry = tmp_path_factory.mktemp("tracked") / "reg"
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_DIR")}
    try:
        # a linear β warm-up: the scheduled β is a live value (the model's training signal)
        result = api.run_grid("beta_vae", registry=str(registry), seeds=[0], beta_schedule="linear",
                              log_to=[f"mlflow:{'exp one'}" if n == "mlflow" else n for n in loggers],
                              log_every=10, **TINY)
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
    (record,) = result.records
    assert record["status"] == "ok", record["error"]
    return registry, record, loggers


def test_mlflow_run_read_back_through_its_client(tracked):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    registry, record, _ = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{registry / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("exp one")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.run_id = '{record['run_id']}'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["config_id"] == record["config_id"]
    assert run.data.tags["status"] == "ok"
    spec = json.loads(record["spec_json"])
    assert run.data.params["beta"] == json.dumps(spec["beta"]) and run.data.params["steps"] == "40"
    assert run.data.params["architecture"] == "mlp"
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in loss] == LIVE_STEPS
    assert loss[-1].value == pytest.approx(record["final_loss"])
    beta = [m.value for m in client.get_metric_history(run.info.run_id, "beta")]
    assert len(beta) == len(LIVE_STEPS) and beta == sorted(beta) and beta[0] < beta[-1] == pytest.approx(4.0)
    assert run.data.metrics["mig"] == pytest.approx(record["metrics"]["mig"])
    assert run.data.metrics["eval.kl.dim0"] == pytest.approx(record["kl_per_dim"][0])
    # the KL per latent dimension over training, live at every --log-every step
    dims = [client.get_metric_history(run.info.run_id, f"kl.dim{d}") for d in range(record["latent_dim"])]
    assert all([m.step for m in h] == LIVE_STEPS for h in dims)
    kl = client.get_metric_history(run.info.run_id, "kl")
    assert [sum(h[i].value for h in dims) for i in range(len(LIVE_STEPS))] == pytest.approx([m.value for m in kl], rel=1e-4)
    names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"traversal.png", "reconstructions.png", "samples.png"} <= names


def test_tensorboard_events_read_back_with_its_reader(tracked):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    registry, record, _ = tracked
    events = EventAccumulator(str(registry / "tensorboard" / record["run_id"]), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == LIVE_STEPS
    assert events.Scalars("train/loss")[-1].value == pytest.approx(record["final_loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("train/beta")] == LIVE_STEPS
    assert [e.step for e in events.Scalars("train/kl.dim0")] == LIVE_STEPS  # KL per dimension over training
    assert events.Scalars("final/eval.kl.dim0")[0].value == pytest.approx(record["kl_per_dim"][0], rel=1e-6)
    assert events.Scalars("final/mig")[0].value == pytest.approx(record["metrics"]["mig"], rel=1e-6)
    (image,) = events.Images("traversal")
    assert image.step == 40 and image.width > 100 and image.height > 100
    assert image.encoded_image_string[:4] == b"\x89PNG"


def _wandb_records(path: str) -> list:
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log: a 7-byte header
    ``":W&B"``, magic 0xBEE1, version; 32 KiB blocks of chunks ``<crc u32, length u16,
    type u8>``: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    out, pos, parts, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def test_wandb_offline_run_directory(tracked):
    pytest.importorskip("wandb")
    registry, record, _ = tracked
    (run_dir,) = glob.glob(str(registry / "wandb" / "wandb" / "offline-run-*"))
    (log,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    records = _wandb_records(log)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == record["run_id"] and run.project == "vaebench"
    assert f"config_id:{record['config_id']}" in run.tags
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["steps"] == "40" and config["run_id"] == record["run_id"], config
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == LIVE_STEPS
    assert history[-1]["train/loss"] == pytest.approx(record["final_loss"])
    assert history[-1]["traversal/_type"] == "image-file"
    summary = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
               for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert summary["final/mig"] == pytest.approx(record["metrics"]["mig"])
    assert glob.glob(os.path.join(run_dir, "files", "media", "images", "traversal_40_*.png"))


class FullDisk:
    """A real logger whose ``log`` fails as a full disk would; counts its calls."""

    calls: dict[str, int] = {}

    def __init__(self, context):
        FullDisk.calls = {"start_run": 0, "log": 0, "end_run": 0, "close": 0}

    def start_run(self, spec, context):
        FullDisk.calls["start_run"] += 1

    def log(self, run_id, step, values):
        FullDisk.calls["log"] += 1
        raise OSError(28, "No space left on device")

    def end_run(self, record, artifacts):
        FullDisk.calls["end_run"] += 1

    def close(self):
        FullDisk.calls["close"] += 1


def test_a_failing_logger_warns_once_and_the_runs_are_recorded(tmp_path, capfd):
    manager = plugin_manager(SpecsPlugin(loggers=[LoggerSpec(name="full_disk", description="fails", logger=FullDisk)]))
    result = api.run_grid("beta_vae", registry=str(tmp_path / "reg"), seeds=[0, 1], log_to=["full_disk"],
                          log_every=10, manager=manager, **{**TINY, "metrics": ["kl"], "steps": 30})
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    assert [r["error"] for r in result.records] == [None, None]
    assert FullDisk.calls == {"start_run": 1, "log": 1, "end_run": 0, "close": 0}  # dropped at its first failure
    warnings = [line for line in capfd.readouterr().err.splitlines() if "logger full_disk" in line]
    assert warnings == ["warning: logger full_disk failed (OSError: [Errno 28] No space left on device); "
                        "not logging to it for the rest of this grid"]


class Steps:
    """A real logger that keeps the steps it was sent, per run."""

    sent: dict[str, list[int]] = {}

    def __init__(self, context):
        Steps.sent = {}

    def start_run(self, spec, context):
        Steps.sent[spec.run_id] = []

    def log(self, run_id, step, values):
        Steps.sent[run_id].append(step)

    def end_run(self, record, artifacts):
        pass

    def close(self):
        pass


def test_a_runs_last_step_is_logged_live_when_off_the_interval(tmp_path):
    """35 steps, reports every 10 (and at the last step), values every 20: sent at 10, 30 and
    the last report, 35 (the run's end was left out when off the interval)."""
    manager = plugin_manager(SpecsPlugin(loggers=[LoggerSpec(name="steps", description="keeps steps", logger=Steps)]))
    result = api.run_grid("beta_vae", registry=str(tmp_path / "reg"), log_to=["steps"], log_every=20,
                          manager=manager, **{**TINY, "metrics": ["kl"], "steps": 35})
    (record,) = result.records
    assert Steps.sent == {record["run_id"]: [10, 30, 35]}


def test_mlflow_keeps_the_held_out_kl_apart_from_the_training_kl(tmp_path):
    """The record's ``kl`` metric (held-out set) shares its name with the live training KL: it
    goes under ``final.kl``, so the ``kl`` series is the training batch's alone."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    registry = tmp_path / "reg"
    result = api.run_grid("beta_vae", registry=str(registry), log_to=["mlflow"], log_every=10,
                          **{**TINY, "metrics": ["kl"], "steps": 20})
    (record,) = result.records
    client = MlflowClient(tracking_uri=f"sqlite:///{registry / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string=f"tags.run_id = '{record['run_id']}'")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "kl")] == [10, 20]
    assert run.data.metrics["final.kl"] == pytest.approx(record["metrics"]["kl"])
    assert run.data.metrics["final.images_per_second"] == pytest.approx(record["images_per_second"])
    assert "final.kl.dim0" not in run.data.metrics and "eval.kl.dim0" in run.data.metrics


def test_an_mlflow_server_that_is_down_warns_once_without_holding_the_grid(tmp_path, monkeypatch, capfd):
    """A tracking URI nobody listens on: the logger fails at once (one warning), the run is
    recorded ok, and the grid's end is not held by MLflow's retries (2 min before)."""
    pytest.importorskip("mlflow")
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    result = api.run_grid("beta_vae", registry=str(tmp_path / "reg"), log_to=["mlflow"],
                          **{**TINY, "metrics": ["kl"], "steps": 20})
    assert time.monotonic() - started < 60  # a hang bound, not a speed claim
    assert [r["status"] for r in result.records] == ["ok"]
    warnings = [line for line in capfd.readouterr().err.splitlines() if "logger mlflow" in line]
    assert warnings == [f"warning: logger mlflow failed (ConnectionError: the MLflow server at 127.0.0.1:{port} did not "
                        "answer within 5 s (ConnectionRefusedError)); not logging to it for the rest of this grid"]


def test_an_mlflow_store_that_cannot_be_written_warns_once(tmp_path):
    pytest.importorskip("mlflow")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    registry = tmp_path / "reg"
    proc = run_vaebench("run", "--model", "beta_vae", "--architecture", "mlp", "--steps", "20", "--batch-size", "16",
                        "--eval-samples", "512", "--metrics", "kl", "--device", "cpu", "--threads", "1",
                        "--seeds", "0,1", "--strategy", "sequential", "--registry", str(registry),
                        "--log-to", "mlflow", env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{blocker}/mlflow.db"})
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "logger mlflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: logger mlflow failed ("), proc.stderr
    records = [store.read_record(str(registry), p.name.removesuffix(".parquet")) for p in (registry / "runs").iterdir()]
    assert sorted(r["status"] for r in records) == ["ok", "ok"]


OPEN_STORE = """
import os, sys, time
from vaebench.plugins.contract import LoggerContext
from vaebench.plugins.loggers.mlflow_logger import MlflowLogger
go = sys.argv[2]
open(f"{go}.{os.getpid()}", "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
try:
    MlflowLogger(LoggerContext(target=None, grid_id="g", registry=sys.argv[1]))
    print("ok")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_tasks_opening_one_new_mlflow_store_at_once_all_log(tmp_path):
    """A grid's tasks (Slurm array tasks, Ray workers) each open the registry's MLflow store;
    on a new store, MLflow's table migrations failed when two ran at once ("duplicate column
    name"), which dropped a task's MLflow run (1 of 4 in a real Slurm grid)."""
    pytest.importorskip("mlflow")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(tmp_path / "reg"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(4)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < 4 and time.monotonic() < deadline:  # all imported: start together
        time.sleep(0.05)
    go.touch()
    said = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert said == ["ok"] * 4, said


def test_unknown_logger_exits_2_before_anything_trains(tmp_path):
    registry = tmp_path / "reg"
    proc = run_vaebench("run", "--architecture", "mlp", "--steps", "20", "--device", "cpu", "--registry", str(registry),
                        "--log-to", "nosuch:exp")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --log-to: unknown logger 'nosuch' (available: mlflow, "
                                                "tensorboard, wandb)"]
    assert not (registry / "runs").exists()
    config = tmp_path / "grid.toml"
    config.write_text('[run]\narchitecture = "mlp"\nsteps = 20\nlog_to = ["nosuch"]\n')
    proc = run_vaebench("run", "--config", str(config), "--device", "cpu", "--registry", str(registry))
    assert proc.returncode == 2 and "unknown logger 'nosuch'" in proc.stderr
    assert not (registry / "runs").exists()


def test_a_logger_whose_package_is_missing_is_refused_with_its_install_line(manager):
    missing = plugin_manager(SpecsPlugin(loggers=[LoggerSpec(
        name="absent", description="needs a package", logger="vaebench_no_such_tracker.mod:make",
        install="pip install vaebench-no-such-tracker")]))
    with pytest.raises(ValueError, match=r"^--log-to absent: not installed: .*vaebench_no_such_tracker.* "
                                         r"\(pip install vaebench-no-such-tracker\)$"):
        check_log_to(["absent"], missing)
    with pytest.raises(ValueError, match="--log-every"):
        check_log_to([], manager, log_every=0)
    assert parse_log_to("mlflow:my exp:2") == ("mlflow", "my exp:2") and parse_log_to("wandb") == ("wandb", None)
    assert LOG_EVERY == 50


def test_a_remote_task_carries_the_loggers(manager):
    specs = api.plan_grid("beta_vae", seeds=[0, 1], steps=20, architectures="mlp", manager=manager)
    job = GridJob(manager=manager, registry="reg", execution=ExecutionOptions(), metric_names=None,
                  metric_options=None, strategy="sequential", resume=False, reporter=None, datasets=lambda s: None,
                  claims=None, grid_id="g", log_to=("mlflow:exp",), log_every=25)
    (task, _) = split_tasks(specs, job)
    back = PointsTask.from_json(task.to_json())
    assert back.log_to == ["mlflow:exp"] and back.log_every == 25


class Recorder:
    """A real logger that keeps what it is sent."""

    events: list[tuple] = []

    def __init__(self, context):
        Recorder.events = [("made", context.target)]

    def start_run(self, spec, context):
        Recorder.events.append(("start_run", spec.run_id))

    def log(self, run_id, step, values):
        Recorder.events.append(("log", run_id, step))

    def end_run(self, record, artifacts):
        Recorder.events.append(("end_run", record["run_id"], record["status"], "traversal_png" in artifacts))

    def close(self):
        Recorder.events.append(("close",))


def test_continue_logs_the_continuation(tmp_path):
    """~4 s: a 20-step parent, continued 20 steps with ``log_to``."""
    manager = plugin_manager(SpecsPlugin(loggers=[LoggerSpec(name="recorder", description="keeps", logger=Recorder)]))
    registry = str(tmp_path / "reg")
    (parent,) = api.run_grid("beta_vae", registry=registry, seeds=[0], manager=manager,
                             **{**TINY, "metrics": ["kl"], "steps": 20}).records
    assert Recorder.events == []  # no --log-to: no logger made
    prepared = api.prepare_continue(parent["run_id"], 20, registry=registry, metrics=["kl"], device="cpu",
                                    threads=1, eval_samples=512, manager=manager, log_to=["recorder:t"], log_every=10)
    child = api.continue_prepared(prepared)
    rid = child["run_id"]
    assert Recorder.events == [("made", "t"), ("start_run", rid), ("log", rid, 30), ("log", rid, 40),
                               ("end_run", rid, "ok", True), ("close",)]
