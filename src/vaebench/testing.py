"""The conformance kit a plugin's own tests call: the contract of ``docs/plugins.md``, run.

::

    from vaebench.testing import check_dataset, check_metric, check_model, plugin_manager
    import my_pkg.plugin

    def test_my_model():
        manager = plugin_manager(my_pkg.plugin)
        check_model(manager.model("my_vae"), manager=manager)

Each ``check_*`` builds the smallest real thing (a model on a batch of 4 images, a metric
on 300 observations, a dataset's 16 samples, a backend's 4 training steps), checks
shapes, dtypes, units, determinism under a seed, finite losses, metric key names and
the spec's own fields, and raises ``AssertionError`` with a message that says what to
change. They return what they built, for a test to check more. The built-in plugin
passes the same kit (``tests/test_testing_kit.py``).

:func:`plugin_manager` is an in-process plugin manager (the built-in plugin plus the
plugin objects given), so a test needs no installed entry point.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from vaebench import hookimpl
from vaebench.plugins.datasets.base import DatasetError, FactorDataset, check_sample
from vaebench.plugins.manager import PluginManager
from vaebench.plugins.metrics.context import EvaluationContext
from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.specs import BackendSpec, DatasetSpec, MetricResult, MetricSpec, ModelSpec

__all__ = [
    "plugin_manager", "SpecsPlugin", "check_model", "check_metric", "check_dataset", "check_backend", "tiny_context",
]



def _fail(message: str) -> None:
    raise AssertionError(message)


class SpecsPlugin:
    """A plugin object for tests that registers the specs it is given:
    ``plugin_manager(SpecsPlugin(models=[spec], metrics=[spec]))``. An item may also be a
    zero-argument callable making the spec, so that a spec refusing to be made fails inside
    the hook, as it would in a real plugin."""

    def __init__(self, models: Any = (), metrics: Any = (), datasets: Any = (), backends: Any = (),
                 executors: Any = (), presets: Any = (), references: Any = (), loggers: Any = ()) -> None:
        self.models, self.metrics = list(models), list(metrics)
        self.datasets, self.backends = list(datasets), list(backends)
        self.executors = list(executors)
        self.presets, self.references = list(presets), list(references)
        self.loggers = list(loggers)

    @staticmethod
    def _each(register: Any, specs: list[Any]) -> None:
        for spec in specs:
            register(spec() if callable(spec) else spec)

    @hookimpl
    def vaebench_register_models(self, register: Any) -> None:
        self._each(register, self.models)

    @hookimpl
    def vaebench_register_metrics(self, register: Any) -> None:
        self._each(register, self.metrics)

    @hookimpl
    def vaebench_register_datasets(self, register: Any) -> None:
        self._each(register, self.datasets)

    @hookimpl
    def vaebench_register_backends(self, register: Any) -> None:
        self._each(register, self.backends)

    @hookimpl
    def vaebench_register_executors(self, register: Any) -> None:
        self._each(register, self.executors)

    @hookimpl
    def vaebench_register_presets(self, register: Any) -> None:
        self._each(register, self.presets)

    @hookimpl
    def vaebench_register_references(self, register: Any) -> None:
        self._each(register, self.references)

    @hookimpl
    def vaebench_register_loggers(self, register: Any) -> None:
        self._each(register, self.loggers)


def plugin_manager(*plugins: object, builtin: bool = True) -> PluginManager:
    """A fresh in-process :class:`PluginManager` with the built-in plugin (unless
    ``builtin=False``) and each of ``plugins`` (a module or any object with
    ``@hookimpl`` functions) registered, named after its module. A plugin that fails to
    register is an ``AssertionError`` carrying the manager's reason."""
    manager = PluginManager()
    if builtin:
        from vaebench.plugins import builtin as builtin_plugin

        manager.register_plugin(builtin_plugin, name="builtin", package="vaebench")
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        info = manager.register_plugin(plugin, name=name)
        if info.status != "ok":
            _fail(f"plugin {name!r} did not register: {info.error}")
    return manager


def _with_spec(kind: str, spec: Any, manager: PluginManager | None) -> PluginManager:
    """``manager`` (default: :func:`plugin_manager`) holding ``spec`` under its name."""
    manager = manager or plugin_manager()
    have = manager.specs[kind].get(spec.name)
    if have is spec:
        return manager
    if have is not None:
        _fail(f"{kind[:-1]} name {spec.name!r} is already registered by plugin {manager.owner(kind, spec.name)!r}; "
              f"choose another name")

    class _One:
        pass

    one = _One()
    hook = {"models": "vaebench_register_models", "metrics": "vaebench_register_metrics",
            "datasets": "vaebench_register_datasets", "backends": "vaebench_register_backends"}[kind]
    from vaebench import hookimpl

    setattr(one, hook, hookimpl(lambda register: register(spec)))
    info = manager.register_plugin(one, name=f"check-{kind}-{spec.name}")
    if info.status != "ok":
        _fail(f"{kind[:-1]} {spec.name!r} did not register: {info.error}")
    return manager


# ----------------------------------------------------------------- models


def _tiny_runspec(manager: PluginManager, model: str, backend: str, architecture: str, dataset: str,
                  batch_size: int, latent_dim: int, seed: int, hyperparameters: Mapping[str, Any]) -> RunSpec:
    from vaebench.harness.plan import plan_grid

    axes = {"steps": 4, "batch_size": batch_size, "latent_dim": latent_dim, "seed": seed, **hyperparameters}
    specs = plan_grid(manager, [model], axes=axes, datasets=(dataset,), backends=(backend,),
                      architectures=(architecture,))
    return specs[0]


def _scalar(value: Any, what: str, model: str) -> float:
    try:
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(f"model {model!r}: loss_terms()[{what!r}] must be a scalar tensor, got {type(value).__name__}")
    if arr.shape != ():
        _fail(f"model {model!r}: loss_terms()[{what!r}] must be a scalar (a batch mean), got shape {arr.shape}")
    if not math.isfinite(float(arr)):
        _fail(f"model {model!r}: loss_terms()[{what!r}] is {float(arr)} on a tiny batch at initialisation; "
              f"it must be finite")
    return float(arr)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in getattr(value, "shape", ()))


def check_model(spec: ModelSpec, backend: str = "torch", *, manager: PluginManager | None = None,
                architecture: str = "conv", dataset: str = "dsprites", batch_size: int = 4, latent_dim: int = 3,
                seed: int = 0, hyperparameters: Mapping[str, Any] | None = None) -> Any:
    """Build ``spec``'s ``backend`` model for a tiny run (``architecture``, ``latent_dim``,
    the model's default hyperparameters unless ``hyperparameters`` gives others) on a batch
    of ``batch_size`` ``dataset`` images and check the model protocol: ``latent_dim``;
    ``encode`` -> ``(mu, logvar)`` ``(B, D)``; ``decode`` -> logits ``(B, C, H, W)`` (JAX:
    ``(B, H, W, C)``); ``recon_errors`` -> ``(B,)`` finite; ``loss_terms`` -> finite scalar
    ``loss`` / ``recon`` / ``kl``, ``kl_per_dim`` ``(D,)``, ``capacity`` float or ``None``;
    torch: the loss has a gradient; JAX: ``loss_terms`` traces under ``jax.jit`` and its
    loss has a finite, non-zero gradient in the ``nnx.Param`` weights; the same seed gives
    the same weights and loss; a model given the β schedule's axes (the plain name ``"beta"``)
    applies them: its loss at step 1 differs between a constant β and a linear warm-up, same
    weights and batch (read β with ``vaebench.plugin.scheduled_beta``). Returns the model."""
    manager = _with_spec("models", spec, manager)
    if backend not in spec.backends:
        _fail(f"model {spec.name!r} has no {backend!r} factory: add it to ModelSpec.backends "
              f"(has: {', '.join(sorted(spec.backends)) or 'none'})")
    run = _tiny_runspec(manager, spec.name, backend, architecture, dataset, batch_size, latent_dim, seed,
                        dict(hyperparameters or {}))
    data = manager.dataset(dataset).loader()()
    images, factors = data.sample(batch_size, np.random.default_rng(seed))
    schedules = _schedule_pair(run) if _reads_beta_schedule(manager, spec) else None
    if backend == "jax":
        return _check_jax_model(spec, manager, run, data, images, factors, schedules)
    return _check_torch_model(spec, run, data, images, factors, schedules)


def _reads_beta_schedule(manager: PluginManager, spec: ModelSpec) -> bool:
    """Whether the model is given the β schedule's axes (a plain ``"beta"`` brings them)."""
    from vaebench.harness.axes import axis_table

    return "beta_schedule" in axis_table(manager).reads.get(spec.name, {})


def _schedule_pair(run: RunSpec) -> tuple[RunSpec, RunSpec]:
    """``run`` under a constant β and under a linear warm-up from 0 over the run's steps (β at
    step 1: β / steps), with β > 0 so that the two differ."""
    constant = replace(run, beta=run.beta or 1.0, beta_schedule=None, beta_start=None, beta_warmup_steps=None,
                       beta_cycles=None)
    return constant, replace(constant, beta_schedule="linear", beta_start=0.0, beta_warmup_steps=run.steps)


def _check_schedule_applied(name: str, constant: dict[str, Any], linear: dict[str, Any]) -> None:
    """Fail when the loss is the same under a constant β and a linear warm-up (with a KL > 0)."""
    loss_c, loss_l = _scalar(constant["loss"], "loss", name), _scalar(linear["loss"], "loss", name)
    if loss_c == loss_l and _scalar(constant["kl"], "kl", name) > 0:
        _fail(f"model {name!r} declares 'beta', which gives it the β schedule (--beta-schedule, --beta-start, "
              f"--beta-warmup-steps, --beta-cycles), but its loss at step 1 is {loss_c} under a constant β and "
              f"under a linear warm-up alike: read β at each step with vaebench.plugin.scheduled_beta(spec, step) "
              f"in loss_terms, or declare its own Hyperparameter('beta', ...) so that no schedule is offered")


def _check_terms(name: str, terms: Any, latent_dim: int) -> dict[str, float]:
    if not isinstance(terms, Mapping):
        _fail(f"model {name!r}: loss_terms must return a dict with loss, recon, kl, kl_per_dim, capacity; "
              f"got {type(terms).__name__}")
    missing = [k for k in ("loss", "recon", "kl", "kl_per_dim", "capacity") if k not in terms]
    if missing:
        _fail(f"model {name!r}: loss_terms() lacks {', '.join(missing)} (return loss, recon, kl, kl_per_dim "
              f"and capacity; capacity None when the model has none)")
    out = {k: _scalar(terms[k], k, name) for k in ("loss", "recon", "kl")}
    if _shape(terms["kl_per_dim"]) != (latent_dim,):
        _fail(f"model {name!r}: loss_terms()['kl_per_dim'] must have shape (D,) = ({latent_dim},), "
              f"got {_shape(terms['kl_per_dim'])} (the batch mean of the KL per latent dimension)")
    if terms["capacity"] is not None:
        _scalar(terms["capacity"], "capacity", name)
    for group in ("signals", "aux_losses"):
        extra = terms.get(group)
        if extra is None:
            continue
        if not isinstance(extra, Mapping):
            _fail(f"model {name!r}: loss_terms()[{group!r}] must be a dict name -> scalar")
        for key, value in extra.items():
            _scalar(value, f"{group}.{key}", name)
    return out


def _latent_dim(name: str, model: Any) -> int:
    d = getattr(model, "latent_dim", None)
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        _fail(f"model {name!r}: set model.latent_dim to D, the width of what encode returns "
              f"(usually spec.latent_dim), got {d!r}")
    return d


def _check_torch_model(spec: ModelSpec, run: RunSpec, data: Any, images: np.ndarray, factors: np.ndarray,
                       schedules: tuple[RunSpec, RunSpec] | None = None) -> Any:
    import torch

    from vaebench.plugins.contract import capability

    name = spec.name
    h, w, c = data.image_shape
    b = len(images)

    def build(of: RunSpec = run) -> Any:
        torch.manual_seed(run.seed)
        model = spec.build("torch", of, data.image_shape, dataset=data)
        if not isinstance(model, torch.nn.Module):
            _fail(f"model {name!r}: the torch factory must return a torch.nn.Module, got {type(model).__name__}")
        return model

    def score(model: Any, step: int = 0) -> dict[str, Any]:
        torch.manual_seed(run.seed + 1)
        extra = {"factors": torch.from_numpy(factors)} if capability(model, "needs_factors") else {}
        return model.loss_terms(x, step, **extra)

    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    model = build()
    d = _latent_dim(name, model)
    with torch.no_grad():
        f = torch.from_numpy(factors) if capability(model, "needs_factors") else None
        out = model.encode(x, f) if f is not None else model.encode(x)
        if not (isinstance(out, tuple) and len(out) == 2):
            _fail(f"model {name!r}: encode(x) must return (mu, logvar), got {type(out).__name__}")
        mu, logvar = out
        for what, t in (("mu", mu), ("logvar", logvar)):
            if _shape(t) != (b, d):
                _fail(f"model {name!r}: encode(x) {what} must have shape (B, D) = ({b}, {d}), got {_shape(t)} "
                      f"(x is (B, C, H, W) = {tuple(x.shape)})")
        logits = model.decode(mu, f) if f is not None else model.decode(mu)
        if _shape(logits) != (b, c, h, w):
            _fail(f"model {name!r}: decode(z) must return pixel logits (B, C, H, W) = ({b}, {c}, {h}, {w}), "
                  f"got {_shape(logits)}")
        errors = model.recon_errors(x, logits)
        if _shape(errors) != (b,) or not torch.isfinite(errors).all():
            _fail(f"model {name!r}: recon_errors(x, logits) must be finite per-image NLL (B,) = ({b},) nats, "
                  f"got shape {_shape(errors)}")
    terms = score(model)
    first = _check_terms(name, terms, d)
    if not terms["loss"].requires_grad:
        _fail(f"model {name!r}: loss_terms()['loss'] has no gradient; compute it from the model's parameters")
    terms["loss"].backward()
    for key in terms.get("aux_losses") or {}:
        if key not in capability(model, "auxiliary_optimizers")():
            _fail(f"model {name!r}: aux_losses[{key!r}] has no optimizer in auxiliary_optimizers()")
    again = score(build())
    second = {k: _scalar(again[k], k, name) for k in ("loss", "recon", "kl")}
    if second != first:
        _fail(f"model {name!r}: not deterministic under a seed: loss_terms gave {first} then {second}; draw all "
              f"randomness from torch's global generator (the backend seeds it), not numpy/random or a clock")
    if schedules is not None:
        constant, linear = build(schedules[0]), build(schedules[1])
        linear.load_state_dict(constant.state_dict())  # the same weights: only β may differ
        with torch.no_grad():
            _check_schedule_applied(name, score(constant, 1), score(linear, 1))
    return model


def _check_jax_model(spec: ModelSpec, manager: PluginManager, run: RunSpec, data: Any, images: np.ndarray,
                     factors: np.ndarray, schedules: tuple[RunSpec, RunSpec] | None = None) -> Any:
    import jax
    import jax.numpy as jnp

    from vaebench.plugins.contract import capability

    name = spec.name
    h, w, c = data.image_shape
    b = len(images)
    x = jnp.asarray(images)

    def score(model: Any, step: int = 0) -> dict[str, Any]:
        f = jnp.asarray(factors) if capability(model, "needs_factors") else None
        return model.loss_terms(x, jnp.int32(step), key=jax.random.PRNGKey(run.seed), factors=f)

    model = spec.build("jax", run, data.image_shape, dataset=data)
    d = _latent_dim(name, model)
    f = jnp.asarray(factors) if capability(model, "needs_factors") else None
    out = model.encode(x, f)
    if not (isinstance(out, tuple) and len(out) == 2):
        _fail(f"model {name!r}: encode(x) must return a tuple (mu, logvar), got {type(out).__name__}")
    mu, logvar = out
    if _shape(mu) != (b, d) or _shape(logvar) != (b, d):
        _fail(f"model {name!r}: encode(x) must return (mu, logvar), (B, D) = ({b}, {d}) each, got "
              f"{_shape(mu)}, {_shape(logvar)} (x is (B, H, W, C) = {tuple(x.shape)})")
    logits = model.decode(mu, f)
    if _shape(logits) != (b, h, w, c):
        _fail(f"model {name!r}: decode(z) must return pixel logits (B, H, W, C) = ({b}, {h}, {w}, {c}), "
              f"got {_shape(logits)}")
    errors = model.recon_errors(x, logits)
    if _shape(errors) != (b,) or not bool(jnp.isfinite(errors).all()):
        _fail(f"model {name!r}: recon_errors(x, logits) must be finite per-image NLL (B,) = ({b},) nats, "
              f"got shape {_shape(errors)}")
    terms = score(model)
    first = _check_terms(name, terms, d)
    if "signals" not in terms:
        _fail(f"model {name!r}: a JAX model's loss_terms must always return 'signals' (an empty dict when none)")
    _check_jax_gradient(name, model, x, f, jax.random.PRNGKey(run.seed))
    again = score(spec.build("jax", run, data.image_shape, dataset=data))
    second = {k: _scalar(again[k], k, name) for k in ("loss", "recon", "kl")}
    if second != first:
        _fail(f"model {name!r}: not deterministic under a seed: loss_terms gave {first} then {second}; "
              f"initialise from spec.seed and draw noise from the key you are given")
    if schedules is not None:
        # weights from the schedules' seed = run.seed: only β may differ
        _check_schedule_applied(name, score(spec.build("jax", schedules[0], data.image_shape, dataset=data), 1),
                                score(spec.build("jax", schedules[1], data.image_shape, dataset=data), 1))
    return model


def _check_jax_gradient(name: str, model: Any, x: Any, factors: Any, key: Any) -> None:
    """``loss_terms`` traced under ``jax.jit`` and differentiated with respect to the
    model's ``nnx.Param`` leaves, as the JAX backend's training step does: it must trace,
    and its gradient must be finite and not all zero."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vaebench.plugins.backends.jax.backend import loss_and_grads

    graphdef, params, others = nnx.split(model, nnx.Param, ...)
    try:
        grads, _, _ = jax.jit(loss_and_grads, static_argnums=0)(graphdef, params, others, x, jnp.int32(0), key, factors)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is the author's to fix
        first = (str(exc).strip().splitlines() or [""])[0]
        _fail(f"model {name!r}: loss_terms does not trace under jax.jit as training runs it "
              f"({type(exc).__name__}: {first}); use jnp operations, no float()/.item()/Python if on array values")
    leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
    if not leaves or not any(np.any(g != 0) for g in leaves):
        _fail(f"model {name!r}: loss_terms()['loss'] has no gradient with respect to the model's nnx.Param "
              f"weights; keep the weights in nnx.Param (nnx.Linear, nnx.Conv) and compute the loss from them")
    if not all(np.isfinite(g).all() for g in leaves):
        _fail(f"model {name!r}: the gradient of loss_terms()['loss'] is not finite at initialisation")


# ----------------------------------------------------------------- metrics


def tiny_context(n: int = 300, latent_dim: int = 4, seed: int = 0, dataset: Any = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> EvaluationContext:
    """A small, fully populated :class:`EvaluationContext`: ``n`` observations of ``dataset``
    (default: procedural dSprites), latents a fixed noisy linear function of the factors
    (so disentanglement metrics see structure), ``encode`` / ``decode`` cheap fixed random
    projections, every field a metric may need set."""
    if dataset is None:
        from vaebench.plugins.datasets.dsprites import ProceduralDSprites

        dataset = ProceduralDSprites()
    rng = np.random.default_rng(seed)
    images, factors = dataset.sample(n, rng)
    k = factors.shape[1]
    scaled = factors / np.maximum(np.asarray(dataset.factor_sizes) - 1, 1)
    mixing = rng.normal(size=(k, latent_dim))
    means = (scaled @ mixing + 0.1 * rng.normal(size=(n, latent_dim))).astype(np.float32)
    logvars = np.full((n, latent_dim), -1.0, np.float32)
    pixels = int(np.prod(dataset.image_shape))
    enc = rng.normal(size=(pixels, latent_dim)).astype(np.float32) / math.sqrt(pixels)
    dec = rng.normal(size=(latent_dim, pixels)).astype(np.float32)

    def encode(x: np.ndarray, factors: Any = None) -> np.ndarray:
        return (np.asarray(x, np.float32).reshape(len(x), -1) @ enc).astype(np.float32)

    def decode(z: np.ndarray, factors: Any = None) -> np.ndarray:
        logits = np.asarray(z, np.float32) @ dec
        return (1.0 / (1.0 + np.exp(-logits))).reshape(len(z), *dataset.image_shape).astype(np.float32)

    recon = decode(means)
    errors = -(images * np.log(recon + 1e-6) + (1 - images) * np.log(1 - recon + 1e-6)).reshape(n, -1).sum(1)
    return EvaluationContext(
        means=means, logvars=logvars, recon_errors=errors.astype(np.float32), factors=factors,
        factor_names=tuple(dataset.factor_names), factor_sizes=tuple(dataset.factor_sizes), dataset=dataset,
        encode=encode, seed=seed, options={k: dict(v) for k, v in (options or {}).items()}, images=images,
        reconstructions=recon, decode=decode,
    )


def check_metric(spec: MetricSpec, ctx: EvaluationContext | None = None) -> MetricResult:
    """Check ``spec``'s fields (options; ``MetricSpec`` itself refuses a bad direction, needs
    item, tiers or min_factors when it is made) and compute
    it twice on ``ctx`` (default: :func:`tiny_context`): a :class:`MetricResult` or a dict
    of finite floats keyed ``name`` (the headline, required) or ``name.sub``,
    JSON-serialisable params, the same values both times. Returns the result. A metric
    that raises :class:`MetricUnavailable` here passes it through (``pytest.skip`` it)."""
    name = spec.name  # direction, needs, tiers, min_factors: MetricSpec refuses bad ones when it is made
    try:
        fn = spec.function()
    except (ImportError, AttributeError, ValueError) as exc:
        _fail(f"metric {name!r}: compute={spec.compute!r} does not import ({exc}); use 'package.module:function'")
    if spec.options is not None:
        checked = spec.check_options({})
        if not isinstance(checked, dict):
            _fail(f"metric {name!r}: options({name!r}, {{}}) must return the options dict with defaults filled in")
    ctx = ctx if ctx is not None else tiny_context()
    first = _metric_values(spec, fn(ctx))
    second = _metric_values(spec, fn(ctx))
    if json.dumps(first.values, sort_keys=True) != json.dumps(second.values, sort_keys=True):
        _fail(f"metric {name!r}: not deterministic: {first.values} then {second.values} on the same context; "
              f"draw randomness from np.random.default_rng(ctx.seed)")
    return first


def _metric_values(spec: MetricSpec, result: Any) -> MetricResult:
    name = spec.name
    if not isinstance(result, MetricResult):
        if not isinstance(result, Mapping):
            _fail(f"metric {name!r}: compute must return MetricResult({{{name!r}: value}}) or "
                  f"{{{name!r}: value}}, not a bare {type(result).__name__}")
        result = MetricResult(dict(result))
    if name not in result.values:
        _fail(f"metric {name!r}: its values lack the headline key {name!r} (got {sorted(result.values)}); "
              f"store the headline under the metric's own name")
    for key, value in result.values.items():
        if key != name and not key.startswith(name + "."):
            _fail(f"metric {name!r}: key {key!r} must be {name!r} or start with {name + '.'!r} "
                  f"(a record column belongs to the metric that names it)")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            _fail(f"metric {name!r}: value of {key!r} must be a float, got {type(value).__name__}")
        if not math.isfinite(float(value)):
            _fail(f"metric {name!r}: value of {key!r} is {float(value)} on a well-formed context; return finite "
                  f"values (raise MetricUnavailable when the metric cannot be computed)")
    try:
        json.dumps(result.params)
    except (TypeError, ValueError) as exc:
        _fail(f"metric {name!r}: params must be JSON-serialisable (plain numbers, strings, lists, dicts): {exc}")
    return MetricResult({k: float(v) for k, v in result.values.items()}, dict(result.params))


# ----------------------------------------------------------------- datasets


def check_dataset(spec: DatasetSpec, path: str | None = None, n: int = 16, seed: int = 0) -> FactorDataset:
    """Load ``spec`` (``path`` as ``--dataset-path``) and check the dataset protocol: names,
    ``factor_names`` / ``factor_sizes`` / ``num_factors`` agree, ``image_shape`` ``(H, W, C)``;
    ``sample(n, rng)`` gives images ``(n, H, W, C)`` float32 in [0, 1] and factors ``(n, K)``
    integer indices in range, the same for the same seed; ``observations`` renders those
    factors' images (``has_sampler``); ``digest()`` a stable hex string. Returns the dataset."""
    name = spec.name
    loader = spec.loader()
    data = loader() if path is None else loader(path)
    if not isinstance(data, FactorDataset):
        missing = [m for m in ("name", "variant", "factor_names", "factor_sizes", "image_shape", "digest",
                               "observations", "sample_factors", "sample") if not hasattr(data, m)]
        _fail(f"dataset {name!r}: load() must return a FactorDataset; it lacks {', '.join(missing)}")
    if not isinstance(data.variant, str) or not data.variant:
        _fail(f"dataset {name!r}: variant must be a non-empty string naming which pixels these are")
    names, sizes = tuple(data.factor_names), tuple(data.factor_sizes)
    if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
        _fail(f"dataset {name!r}: factor_sizes must be ints >= 1, got {sizes}")
    shape = tuple(data.image_shape)
    if len(shape) != 3 or any(not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
        _fail(f"dataset {name!r}: image_shape must be (H, W, C), three positive ints, got {shape}; "
              f"a grey image has C = 1")
    try:  # what a run checks before training (shapes, [0, 1], factor columns and ranges)
        check_sample(data, spec.num_factors, n)
    except DatasetError as exc:
        _fail(str(exc))
    images, factors = data.sample(n, np.random.default_rng(seed))
    images, factors = np.asarray(images), np.asarray(factors)
    if images.dtype != np.float32:
        _fail(f"dataset {name!r}: images must be float32, got {images.dtype}")
    if factors.dtype.kind not in "iu":
        _fail(f"dataset {name!r}: factors must be integer indices, got {factors.dtype}")
    again_images, again_factors = data.sample(n, np.random.default_rng(seed))
    if not (np.array_equal(images, again_images) and np.array_equal(factors, again_factors)):
        _fail(f"dataset {name!r}: sample(n, rng) must depend only on rng (the same seed gave other draws)")
    if spec.has_sampler:
        drawn = np.asarray(data.sample_factors(n, np.random.default_rng(seed)))
        if drawn.shape != (n, len(sizes)):
            _fail(f"dataset {name!r}: sample_factors({n}, rng) must return (n, K) = {(n, len(sizes))}")
        rendered = np.asarray(data.observations(factors))
        if rendered.shape != images.shape or not (0.0 <= float(rendered.min()) <= float(rendered.max()) <= 1.0):
            _fail(f"dataset {name!r}: observations(factors) must return images {images.shape} in [0, 1], "
                  f"got {rendered.shape}")
        from vaebench.plugins.contract import capability

        if not capability(data, "nuisance") and not np.allclose(rendered, images):
            _fail(f"dataset {name!r}: has_sampler=True but observations(factors) does not render the images "
                  f"sample() returned for those factors (declare nuisance = ('name', ...) if a variable that "
                  f"is not a factor is drawn per observation)")
    digest = data.digest()
    if not isinstance(digest, str) or not digest or digest != data.digest():
        _fail(f"dataset {name!r}: digest() must return the same non-empty hex string each time, got {digest!r}")
    try:
        int(digest, 16)
    except ValueError:
        _fail(f"dataset {name!r}: digest() must be a hex string, got {digest!r}")
    return data


# ----------------------------------------------------------------- backends


def check_backend(spec: BackendSpec, *, manager: PluginManager | None = None, model: str = "vae",
                  architecture: str = "mlp", steps: int = 4, batch_size: int = 4, seed: int = 0) -> Any:
    """Construct ``spec``'s backend with the manager, resolve ``cpu`` (a ``DeviceInfo``) and
    refuse a device that does not exist (``ValueError``); train ``model`` (a model with a
    factory for the backend's model protocol) for ``steps`` steps twice and check the
    :class:`TrainedModel`: ``steps_done``, a finite ``final_loss``, ``history`` points, the
    shapes of ``evaluate`` / ``encode`` / ``decode``, the same loss for the same seed, and a
    checkpoint that loads back to the same latents. Returns the trained model."""
    from vaebench.plugins.backends.base import DeviceInfo, ExecutionOptions

    manager = _with_spec("backends", spec, manager)
    name = spec.name
    try:
        cls = spec.backend_class()
    except ImportError as exc:
        _fail(f"backend {name!r}: {spec.backend!r} does not import ({exc})"
              f"{'; install: ' + spec.install if spec.install else ''}")
    backend = cls(manager)
    if getattr(backend, "name", None) != name:
        _fail(f"backend {name!r}: the class's name attribute must be {name!r}, got {getattr(backend, 'name', None)!r}")
    device = backend.resolve_device("cpu")
    if not isinstance(device, DeviceInfo):
        _fail(f"backend {name!r}: resolve_device('cpu') must return a DeviceInfo, got {type(device).__name__}")
    try:
        backend.resolve_device("no-such-device")
    except ValueError:
        pass
    else:
        _fail(f"backend {name!r}: resolve_device('no-such-device') must raise a ValueError subclass with one line")
    protocol = spec.model_protocol or name
    mspec = manager.model(model)
    if protocol not in mspec.backends:
        _fail(f"backend {name!r}: model {model!r} has no {protocol!r} factory; pass model= one that has")
    run = replace(_tiny_runspec(manager, model, name, architecture, "dsprites", batch_size, 3, seed, {}), steps=steps)
    data = manager.dataset("dsprites").loader()()
    options = ExecutionOptions(device="cpu", threads=1, eval_samples=16, figures=False)
    trained = backend.train(run, data, options)
    if trained.steps_done != steps:
        _fail(f"backend {name!r}: trained {trained.steps_done} steps, asked for {steps}")
    if not math.isfinite(float(trained.final_loss)) or trained.diverged:
        _fail(f"backend {name!r}: final_loss {trained.final_loss} on {steps} steps; it must be finite, not diverged")
    if not trained.history or not all({"step", "loss"} <= set(p) for p in trained.history):
        _fail(f"backend {name!r}: history must hold points {{step, loss, recon, kl, capacity}}")
    images, _ = data.sample(8, np.random.default_rng(seed))
    out = trained.evaluate(images)
    if len(out) < 3 or out[0].shape != (8, 3) or out[1].shape != (8, 3) or out[2].shape != (8,):
        _fail(f"backend {name!r}: evaluate(images) must return means (N, D), logvars (N, D), NLL (N,); "
              f"got {[getattr(o, 'shape', None) for o in out]}")
    latents = np.asarray(trained.encode(images))
    if latents.shape != (8, 3):
        _fail(f"backend {name!r}: encode(images) must return (N, D) = (8, 3), got {latents.shape}")
    decoded = np.asarray(trained.decode(latents))
    if decoded.shape != images.shape or decoded.min() < 0 or decoded.max() > 1:
        _fail(f"backend {name!r}: decode(latents) must return images (N, H, W, C) in [0, 1] = {images.shape}")
    again = cls(manager).train(run, data, options)
    if float(again.final_loss) != float(trained.final_loss):
        _fail(f"backend {name!r}: not deterministic: final_loss {trained.final_loss} then {again.final_loss} for "
              f"seed {seed}; seed every generator from spec.seed")
    with tempfile.TemporaryDirectory() as directory:
        trained.save(directory)
        loaded = spec.checkpoint_loader()(directory, manager)
        if not np.allclose(np.asarray(loaded.encode(images)), latents, atol=1e-5):
            _fail(f"backend {name!r}: a saved and loaded checkpoint encodes differently; save every weight")
    return trained
