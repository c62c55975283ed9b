"""The run record: one row per run, one Parquet file per row.

Typed columns hold what every run has; ``metrics`` is a map of metric key ->
value so a new metric plugin needs no schema change. ``metric_params`` (JSON)
holds the estimator parameters that produced each metric (sample size, bins,
seed, ...). Bump ``SCHEMA_VERSION`` when a column changes meaning; adding a
column is backwards compatible because readers use ``union_by_name``.
"""

from __future__ import annotations

import pyarrow as pa

#: 2: records carry an ``attempt`` (a rerun of a spec writes a new record beside the old one).
SCHEMA_VERSION = 2

#: The ``likelihood`` of a record written before models declared one (every model then was
#: Bernoulli); the ``runs`` view reads a null ``likelihood`` as this.
DEFAULT_LIKELIHOOD = "bernoulli"

#: Status values. ``ok``: trained and scored. ``diverged``: the loss became
#: NaN/inf; the record keeps the step it happened at. ``failed``: an exception
#: ended the run; ``error`` holds its one-line message.
STATUSES = ("ok", "diverged", "failed")
#: The statuses ``--resume`` counts as done (a ``failed`` run is retried).
DONE_STATUSES = ("ok", "diverged")

HISTORY_TYPE = pa.list_(
    pa.struct(
        [
            ("step", pa.int64()),
            ("loss", pa.float64()),
            ("recon", pa.float64()),
            ("kl", pa.float64()),
            ("capacity", pa.float64()),
        ]
    )
)

#: A model's training signals beyond the loss terms (scheduled β, TC estimate, codebook
#: perplexity, discriminator loss, ...), one row per signal per history point; SQL
#: unnests them: ``SELECT run_id, s.step, s.value FROM (SELECT run_id, unnest(signals)
#: AS s FROM runs) WHERE s.name = 'perplexity'``.
SIGNALS_TYPE = pa.list_(
    pa.struct(
        [
            ("step", pa.int64()),
            ("name", pa.string()),
            ("value", pa.float64()),
        ]
    )
)


def signal_rows(points: list[dict[str, float]] | None) -> list[dict[str, object]]:
    """``[{"step": s, "tc": x, "beta": b}, ...]`` (a backend's ``signals``) -> the
    ``signals`` column's long rows ``[{"step", "name", "value"}, ...]``, in step order."""
    rows: list[dict[str, object]] = []
    for point in points or ():
        step = int(point["step"])
        rows += [{"step": step, "name": str(k), "value": float(v)} for k, v in point.items() if k != "step"]
    return rows


RECORD_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("run_id", pa.string()),
        # which attempt at the run this record is (``store.new_attempt``: UTC start time and a
        # random suffix, sortable, unique across machines); run_id + attempt is the record's id.
        # Null in records written before attempts were kept (one record per run_id then)
        ("attempt", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        # --- the run spec (what was asked for) ---
        ("model", pa.string()),
        ("backend", pa.string()),
        ("dataset", pa.string()),
        ("dataset_variant", pa.string()),
        ("dataset_digest", pa.string()),
        ("architecture", pa.string()),
        # the model's declared decoder likelihood (ModelSpec.likelihood): the unit of
        # `reconstruction`; null in records written before it was stored (read: bernoulli)
        ("likelihood", pa.string()),
        ("beta", pa.float64()),
        ("capacity", pa.float64()),
        ("gamma", pa.float64()),
        ("capacity_steps", pa.int64()),
        ("latent_dim", pa.int64()),
        ("seed", pa.int64()),
        ("steps", pa.int64()),
        ("batch_size", pa.int64()),
        ("lr", pa.float64()),
        ("spec_json", pa.string()),
        ("config_id", pa.string()),
        # the run this one continued from (`vaebench continue`); null for a run from step 0
        ("parent_run_id", pa.string()),
        # --- how it was executed ---
        ("device", pa.string()),
        ("device_name", pa.string()),
        ("amp", pa.string()),
        ("compiled", pa.bool_()),
        ("threads", pa.int64()),
        # how the grid ran it: sequential | processes | vectorized, and how many runs
        # trained at the same time as this one (itself included)
        ("strategy", pa.string()),
        ("concurrent_runs", pa.int64()),
        # --- what it cost ---
        ("steps_done", pa.int64()),
        ("train_seconds", pa.float64()),
        ("eval_seconds", pa.float64()),
        ("images_per_second", pa.float64()),
        ("seconds_per_epoch", pa.float64()),
        # --- what it scored ---
        ("final_loss", pa.float64()),
        ("metrics", pa.map_(pa.string(), pa.float64())),
        ("metric_params", pa.string()),
        # metric name -> its plugin's direction (higher | lower | none) and category
        # (MetricSpec.category), so a registry ranks and groups its metrics without the
        # plugins installed; null in older records (the installed plugins' are used)
        ("metric_directions", pa.map_(pa.string(), pa.string())),
        ("metric_categories", pa.map_(pa.string(), pa.string())),
        # who made the run: "vaebench" -> vaebench's version, and "model", "dataset", "backend",
        # "metric.<name>" -> "package==version" of the plugin that registered it; null in
        # records written before it was stored
        ("provenance", pa.map_(pa.string(), pa.string())),
        ("kl_per_dim", pa.list_(pa.float64())),
        ("history", HISTORY_TYPE),
        ("signals", SIGNALS_TYPE),
        ("artifacts", pa.map_(pa.string(), pa.string())),
        ("environment", pa.map_(pa.string(), pa.string())),
    ]
)

#: Columns a leaderboard may group by (identifiers cannot be SQL parameters, so
#: user-named columns are checked against this list, never interpolated raw).
GROUPABLE_COLUMNS = (
    "config_id",
    "model",
    "backend",
    "dataset",
    "dataset_variant",
    "architecture",
    "likelihood",
    "beta",
    "capacity",
    "gamma",
    "capacity_steps",
    "latent_dim",
    "steps",
    "batch_size",
    "lr",
    "device",
    "strategy",
    "seed",
)


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column read as ``actual`` holds what ``expected`` describes: the same type,
    or a narrower one of the same kind (int32 for int64, float32 or an integer for a
    float, another timestamp unit, a large string), recursively for lists, maps and
    structs (a struct may lack fields). A string where a number belongs is not."""
    if actual.equals(expected):
        return True
    t = pa.types
    if t.is_floating(expected):
        return t.is_floating(actual) or t.is_integer(actual)
    if t.is_integer(expected):
        return t.is_integer(actual)
    if t.is_timestamp(expected):
        return t.is_timestamp(actual)
    if t.is_string(expected):
        return t.is_string(actual) or t.is_large_string(actual)
    if t.is_map(expected):
        return t.is_map(actual) and _compatible(actual.key_type, expected.key_type) and _compatible(
            actual.item_type, expected.item_type)
    if t.is_list(expected):
        return (t.is_list(actual) or t.is_large_list(actual)) and _compatible(actual.value_type, expected.value_type)
    if t.is_struct(expected):
        if not t.is_struct(actual):
            return False
        fields = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        want = {expected.field(i).name: expected.field(i).type for i in range(expected.num_fields)}
        return all(name in want and _compatible(typ, want[name]) for name, typ in fields.items())
    return False


def schema_problem(schema: pa.Schema) -> str | None:
    """Why a record file with ``schema`` does not fit :data:`RECORD_SCHEMA`, or ``None``.

    Columns of the schema may be missing (an older writer's file: null when read) and
    unknown columns are kept (a newer writer's); a schema column present with another
    kind of type (``beta`` as text) is a problem.
    """
    for field in RECORD_SCHEMA:
        index = schema.get_field_index(field.name)
        if index < 0:
            continue
        actual = schema.field(index).type
        if not _compatible(actual, field.type):
            return f"column {field.name!r} is {actual}, expected {field.type}"
    return None
