"""``--log-to mlflow[:EXPERIMENT]``: one MLflow run per grid point.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else a SQLite store
``<registry>/mlflow.db`` with the artifacts in ``<registry>/mlartifacts`` (``./`` instead of
``<registry>/`` beside a remote registry; MLflow 3 refuses a plain file store unless
``MLFLOW_ALLOW_FILE_STORE=true``). Browse it with ``mlflow ui --backend-store-uri
sqlite:///<registry>/mlflow.db`` (``mlflow ui`` needs the full ``mlflow`` package). The
experiment is ``EXPERIMENT``, else ``vaebench <grid id>``. Each run: params = the RunSpec's fields,
tags ``run_id`` / ``config_id`` / ``grid_id`` (``mlflow.search_runs(filter_string="tags.run_id =
'…'")`` finds the vaebench record) and ``status``, live metrics (``loss``, ``recon``, ``kl``,
``capacity``, ``beta``, ...) at their steps, the record's final metrics
(``common.final_values``) at the last step under their own names (``mig``, ``dci.*`` ...), or
``final.<name>`` for one whose name is also a live series of the run (``kl``: the held-out
KL beside the training batch's; ``images_per_second``), so no series mixes two quantities;
the images as artifacts under ``figures/``.

A tracking server (``http(s)://``) that does not answer within :data:`PROBE_SECONDS` fails the
logger at once (warned once, the grid goes on), instead of MLflow's own retries holding
the grid's end for minutes.

A SQLite store is opened under an exclusive lock on ``<db>.lock`` (:func:`store_lock`): the
grid's tasks (Slurm array tasks, Ray workers) each open the store, and MLflow creates a new
database's tables by migrations that fail when two processes run them at once ("duplicate
column name"), which used to drop a task's MLflow run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator

import mlflow  # noqa: F401 - the extra is checked when the grid is
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vaebench.plugins.contract import LoggerContext
from vaebench.plugins.loggers.common import final_values, home, images, run_params


#: Seconds a tracking server has to answer (any HTTP status) before the logger gives up on it.
PROBE_SECONDS = 5.0


def tracking_uri(registry: str) -> tuple[str, str | None]:
    """``(tracking URI, artifact location for a new experiment)``: ``MLFLOW_TRACKING_URI`` (the
    store's own artifact location), else ``sqlite:///<registry>/mlflow.db`` and
    ``<registry>/mlartifacts``."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        return given, None
    db = home(registry, "mlflow.db").resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}", home(registry, "mlartifacts").resolve().as_uri()


def probe(uri: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise ``ConnectionError`` when the ``http(s)://`` tracking server ``uri`` gives no HTTP
    answer within ``timeout`` seconds (any status counts: the server is there); nothing for
    another store. The message names the host only (a URI may hold credentials)."""
    if not uri.startswith(("http://", "https://")):
        return
    parsed = urllib.parse.urlsplit(uri)
    host = f"[{parsed.hostname}]" if ":" in (parsed.hostname or "") else parsed.hostname
    where = f"{host}:{parsed.port}" if parsed.port else f"{host}"
    try:
        urllib.request.urlopen(f"{parsed.scheme}://{where}{parsed.path.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:  # an answer: the server is there
        return
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"the MLflow server at {where} did not answer within {timeout:g} s "
                              f"({type(reason).__name__})") from None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<db>.lock`` beside a ``sqlite:///<db>`` store while
    the block runs (its tables are created, its experiment looked up or made); nothing for
    another store (a tracking server serialises its own writes)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with open(f"{uri.removeprefix('sqlite:///')}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MlflowLogger:
    """The :class:`~vaebench.plugins.contract.Logger` of MLflow (see the module)."""

    def __init__(self, context: LoggerContext) -> None:
        for chatty in ("mlflow.store.db.utils", "alembic"):  # the store's table creation, once per database
            logging.getLogger(chatty).setLevel(logging.WARNING)
        uri, artifacts = tracking_uri(context.registry)
        name = context.target or f"vaebench {context.grid_id}"
        probe(uri)
        with store_lock(uri):
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    found = self.client.get_experiment(self.client.create_experiment(name, artifact_location=artifacts))
                except Exception:  # another task of the grid created it meanwhile (a tracking server)
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
        self.experiment = found.experiment_id
        self.runs: dict[str, str] = {}
        self.live: dict[str, set[str]] = {}  # per vaebench run: the names logged as live series

    def start_run(self, spec: Any, context: LoggerContext) -> None:
        tags = {"run_id": spec.run_id, "config_id": spec.config_id, "grid_id": context.grid_id}
        run = self.client.create_run(self.experiment, run_name=spec.label() if hasattr(spec, "label") else spec.run_id,
                                     tags=tags)
        self.runs[spec.run_id] = run.info.run_id
        self.live[spec.run_id] = set()
        params = [Param(k, v[:6000]) for k, v in run_params(spec).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])

    def log(self, run_id: str, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.live.setdefault(run_id, set()).update(values)
        self.client.log_batch(self.runs[run_id], metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def end_run(self, record: dict[str, Any], artifacts: dict[str, str]) -> None:
        mlrun = self.runs.pop(record["run_id"])
        live = self.live.pop(record["run_id"], set())
        now, step = int(time.time() * 1000), int(record.get("steps_done") or 0)
        metrics = [Metric(f"final.{k}" if k in live else k, v, now, step) for k, v in final_values(record).items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(mlrun, metrics=metrics[i:i + 1000])
        self.client.log_batch(mlrun, tags=[RunTag("status", str(record.get("status"))),
                                           RunTag("attempt", str(record.get("attempt")))])
        for path in images(artifacts).values():
            self.client.log_artifact(mlrun, path, artifact_path="figures")
        self.client.set_terminated(mlrun, status="FINISHED" if record.get("status") == "ok" else "FAILED")

    def close(self) -> None:
        for mlrun in self.runs.values():  # runs never ended (an interrupt)
            self.client.set_terminated(mlrun, status="KILLED")
        self.runs.clear()


def make(context: LoggerContext) -> MlflowLogger:
    return MlflowLogger(context)
