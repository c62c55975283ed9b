"""The JAX backend: conformance with the backend contract, and equivalence with torch.

Equivalence: a torch model's weights copied into the JAX model (``copy_torch_weights``)
give the same posterior, the same logits, the same loss terms and the same
gradients for the same batch and reparameterisation noise.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX backend needs jax (pip install 'vaebench[jax]')")
pytest.importorskip("flax.nnx", reason="the JAX backend needs flax >= 0.10 (pip install 'vaebench[jax]')")
pytest.importorskip("optax", reason="the JAX backend needs optax (pip install 'vaebench[jax]')")

import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from vaebench.plugins.runspec import RunSpec  # noqa: E402
from vaebench.harness.runner import run_grid  # noqa: E402
from vaebench.plugins.backends.base import ExecutionOptions  # noqa: E402
from vaebench.plugins.backends.jax import models as jm  # noqa: E402
from vaebench.plugins.backends.jax.backend import (  # noqa: E402
    DeviceError,
    JaxBackend,
    flat_state,
    loss_and_grads,
    resolve_device,
)
from vaebench.plugins.backends.jax.nets import ConvTranspose2x  # noqa: E402
from vaebench.plugins.backends.torch import models as tm  # noqa: E402
from vaebench.plugins.datasets.dsprites import ProceduralDSprites  # noqa: E402
from vaebench.plugins.manager import get_manager  # noqa: E402

DATA = ProceduralDSprites()
SHAPE = DATA.image_shape
MODELS = ("vae", "beta_vae", "beta_vae_capacity")
#: One β for the training tests, so they share one compiled step.
BETA_SPEC = dict(model="beta_vae", beta=4.0, batch_size=16)


@pytest.fixture
def torch_cpu_state():
    """For tests that train with TorchBackend (on one thread, as tests/test_training.py does:
    2 OpenMP threads on a busy 2-core machine can be 10x slower). TorchBackend.train on CPU
    also calls torch.set_flush_denormal(True), which stays on for the process (numpy too:
    tests/test_mig.py's denormal check then fails); both are restored afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def _execution(**kw) -> ExecutionOptions:
    return ExecutionOptions(**{"device": "cpu", "progress_every": 5, "eval_samples": 200, **kw})


def _train(spec: RunSpec, **kw):
    return JaxBackend().train(spec, DATA, _execution(**kw))


def _images(n: int, seed: int = 0) -> np.ndarray:
    return DATA.sample(n, np.random.default_rng(seed))[0]


# -- conformance ----------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu").device == "cpu"
    assert resolve_device(" CPU ").device == "cpu"
    assert resolve_device("auto").device in ("cpu", "cuda:0")
    with pytest.raises(DeviceError, match="cuda:N|no GPU"):
        resolve_device("cuda:x")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu-ish")
    with pytest.raises(ValueError, match="cuda:99|no GPU"):
        resolve_device("cuda:99")


# Shapes, loss falling, determinism, checkpoint round trip and the record schema of every
# JAX model: tests/test_backend_conformance.py. Here what is JAX's own.


def test_progress_compile_cache_and_seed():
    spec = RunSpec(**BETA_SPEC, steps=20, lr=1e-3, seed=3)
    seen: list[tuple[int, dict]] = []
    trained = JaxBackend().train(spec, DATA, _execution(), on_progress=lambda s, v: seen.append((s, v)))
    assert trained.compiled and trained.amp == "off" and trained.train_seconds > 0 and trained.compile_seconds >= 0
    assert [s for s, _ in seen] == [5, 10, 15, 20]
    dims = {f"kl.dim{d}" for d in range(spec.latent_dim)}  # the live KL per latent dimension
    assert set(seen[0][1]) == {"loss", "recon", "kl", "images_per_second"} | dims
    assert sum(seen[0][1][d] for d in dims) == pytest.approx(seen[0][1]["kl"], rel=1e-5)
    # same graph and batch shape: compiled once; another seed, another training
    other = JaxBackend().train(RunSpec(**BETA_SPEC, steps=20, lr=1e-3, seed=4), DATA, _execution())
    assert other.compile_seconds == 0.0
    assert [h["loss"] for h in trained.history] != [h["loss"] for h in other.history]


def test_divergence_is_recorded_and_records_have_the_torch_schema(tmp_path, torch_cpu_state):
    # β = 1e308 overflows float32: β·KL is inf on the first step, a real non-finite loss.
    specs = [
        RunSpec(model="beta_vae", beta=1e308, steps=20, batch_size=16, backend="jax"),
        RunSpec(**BETA_SPEC, steps=4, backend="jax"),
        RunSpec(**BETA_SPEC, steps=4, backend="torch"),
    ]
    metrics = ["reconstruction", "kl"]
    result = run_grid(specs, get_manager(), str(tmp_path), _execution(threads=1), metric_names=metrics)
    diverged, ok_jax, ok_torch = result.records
    assert diverged["status"] == "diverged" and diverged["steps_done"] == 1
    assert not math.isfinite(diverged["final_loss"]) and "non-finite" in diverged["error"]
    assert ok_jax["status"] == "ok", ok_jax.get("error")
    assert ok_torch["status"] == "ok", ok_torch.get("error")
    assert ok_jax["backend"] == "jax" and ok_jax["compiled"] is True and ok_jax["amp"] == "off"
    # ``error`` holds an ok run's notes (e.g. posterior collapse after 4 steps): run-dependent.
    filled = lambda r: {k for k, v in r.items() if v is not None} - {"error"}  # noqa: E731
    assert filled(ok_jax) == filled(ok_torch)
    assert set(ok_jax["metrics"]) == set(ok_torch["metrics"])
    assert [set(h) for h in ok_jax["history"]] == [set(h) for h in ok_torch["history"]]
    assert len(ok_jax["kl_per_dim"]) == 10 and set(ok_jax["artifacts"]) == set(ok_torch["artifacts"])


def test_cli_help_does_not_import_jax():
    code = (
        "import sys\n"
        "from vaebench.harness.cli import main\n"
        "import vaebench.plugins.backends\n"
        "sys.argv = ['vaebench', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('JAX-IMPORTED' if 'jax' in sys.modules or 'flax' in sys.modules else 'JAX-NOT-IMPORTED')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "JAX-NOT-IMPORTED" in out.stdout, out.stdout + out.stderr


# -- equivalence with torch ------------------------------------------------------------


def _spec(model: str, arch: str) -> RunSpec:
    hp = {
        "vae": {},
        "beta_vae": {"beta": 4.0},
        "beta_vae_capacity": {"capacity": 20.0, "gamma": 10.0, "capacity_steps": 10},
    }[model]
    return RunSpec(model=model, architecture=arch, latent_dim=6, **hp)


def _pair(model: str, arch: str, mu_offset: float = 1.0):
    """A torch model (seed 0) and a JAX model holding the same weights. The encoder's
    mean outputs are shifted by ``mu_offset · linspace(-3, 3, D)`` so the KL is
    ~13·mu_offset² nats, not the ~0 of an untrained encoder."""
    spec = _spec(model, arch)
    torch.manual_seed(0)
    t = getattr(tm, f"build_{model}")(spec, SHAPE)
    last = [m for m in t.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    d = spec.latent_dim
    with torch.no_grad():
        last.weight[:d].mul_(8.0)
        last.bias[:d].add_(mu_offset * torch.linspace(-3.0, 3.0, d))
    j = jm.copy_torch_weights(t, getattr(jm, f"build_{model}")(spec, SHAPE))
    return t, j


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("model", MODELS)
def test_same_weights_same_noise_same_loss_terms(model, arch, monkeypatch):
    t, j = _pair(model, arch)
    x = _images(8, seed=2)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    eps = np.random.default_rng(5).standard_normal((8, 6)).astype(np.float32)
    monkeypatch.setattr(torch, "randn_like", lambda like: torch.from_numpy(eps).to(like.dtype))
    step = 5  # capacity model: C = 20 · 5/10 = 10 nats

    with torch.no_grad():
        mu_t, logvar_t = t.encode(xt)
        logits_t = t.decode(mu_t).permute(0, 2, 3, 1).numpy()
        terms_t = t.loss_terms(xt, step)
    mu_j, logvar_j = j.encode(jnp.asarray(x))
    logits_j = j.decode(mu_j)
    terms_j = j.loss_terms(jnp.asarray(x), step, eps=jnp.asarray(eps))

    assert np.abs(np.asarray(mu_j) - mu_t.numpy()).max() < 1e-5 * max(1.0, np.abs(mu_t.numpy()).max())
    assert np.abs(np.asarray(logvar_j) - logvar_t.numpy()).max() < 1e-5 * max(1.0, np.abs(logvar_t.numpy()).max())
    assert np.abs(np.asarray(logits_j) - logits_t).max() < 1e-5 * max(1.0, np.abs(logits_t).max())
    assert float(terms_t["kl"]) > 1.0  # a KL worth comparing
    for key in ("loss", "recon", "kl"):
        assert _rel(terms_j[key], terms_t[key].item()) < 1e-4, (key, float(terms_j[key]), terms_t[key].item())
    assert _rel(terms_j["kl_per_dim"], terms_t["kl_per_dim"].numpy()) < 1e-4
    assert terms_j["capacity"] == terms_t["capacity"]


@pytest.mark.parametrize("model,mu_offset", [("beta_vae", 1.0), ("beta_vae_capacity", 1.5), ("beta_vae_capacity", 0.5)])
def test_same_weights_same_noise_same_gradients(model, mu_offset, monkeypatch):
    # capacity model (C = 10 nats at step 5): KL above C and below it, both signs of |KL − C|.
    t, j = _pair(model, "conv", mu_offset)
    x = _images(8, seed=3)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    eps = np.random.default_rng(6).standard_normal((8, 6)).astype(np.float32)
    monkeypatch.setattr(torch, "randn_like", lambda like: torch.from_numpy(eps).to(like.dtype))
    step = 5
    terms_t = t.loss_terms(xt, step)
    if model == "beta_vae_capacity":
        assert (terms_t["kl"].item() > terms_t["capacity"]) == (mu_offset > 1)
    t.zero_grad()
    terms_t["loss"].backward()

    graphdef, params, others = nnx.split(j, nnx.Param, ...)
    grads, _, values = loss_and_grads(graphdef, params, others, jnp.asarray(x), jnp.int32(step), eps=jnp.asarray(eps))
    assert _rel(values["loss"], terms_t["loss"].item()) < 1e-4

    # Map torch's gradients through the same weight copy, then compare tensor by tensor.
    t_grads = copy.deepcopy(t)
    with torch.no_grad():
        for p, q in zip(t_grads.parameters(), t.parameters()):
            p.copy_(q.grad)
    expected = flat_state(jm.copy_torch_weights(t_grads, getattr(jm, f"build_{model}")(_spec(model, "conv"), SHAPE)))
    got_model = getattr(jm, f"build_{model}")(_spec(model, "conv"), SHAPE)
    nnx.update(got_model, grads)
    got = flat_state(got_model)
    assert set(got) == set(expected)
    for name in expected:
        assert _rel(got[name], expected[name]) < 1e-4, name


def test_same_start_same_batches_same_noise_same_training(monkeypatch, torch_cpu_state):
    # End to end: the torch model's initial weights copied into the JAX model, the same
    # batches (both draw them from default_rng(seed)) and torch fed the JAX backend's noise
    # (normal(fold_in(key(seed), step)))): the two Adam trainings follow each other to
    # float rounding (measured: ~1e-7 relative over the first 10 steps; rounding
    # differences grow chaotically to ~1e-3 by step 25).
    spec = RunSpec(**BETA_SPEC, steps=10, seed=0)
    torch.manual_seed(0)
    t = tm.build_beta_vae(spec, SHAPE)
    j = jm.copy_torch_weights(t, jm.build_beta_vae(spec, SHAPE))
    key, calls = jax.random.key(spec.seed), []

    def jax_noise(like):
        calls.append(1)
        eps = jax.random.normal(jax.random.fold_in(key, len(calls)), tuple(like.shape), jnp.float32)
        return torch.from_numpy(np.array(eps))

    monkeypatch.setattr(torch, "randn_like", jax_noise)
    from vaebench.plugins.backends.torch.backend import TorchBackend

    torch_history = TorchBackend().train(spec, DATA, _execution(threads=1), model=t).history
    monkeypatch.undo()
    jax_history = JaxBackend().train(spec, DATA, _execution(), model=j).history
    assert len(calls) == 10 and len(torch_history) == len(jax_history) == 10
    for a, b in zip(torch_history, jax_history):
        assert a["step"] == b["step"]
        for k in ("loss", "recon", "kl"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-4), (a["step"], k, a[k], b[k])


# -- schedules: written once, traced by jit ---------------------------------------------

SCHEDULES = [
    {"beta": 4.0, "beta_schedule": "linear", "beta_start": 1.0, "beta_warmup_steps": 10, "steps": 40},
    {"beta": 4.0, "beta_schedule": "linear", "beta_start": 0.0, "beta_warmup_steps": None, "steps": 40},
    {"beta": 6.0, "beta_schedule": "cyclical", "beta_start": 0.5, "beta_cycles": 3, "steps": 100},
    {"beta": 4.0, "beta_schedule": None, "steps": 40},
]


@pytest.mark.parametrize("hp", SCHEDULES)
def test_schedules_are_the_same_on_python_ints_and_traced_steps(hp):
    from vaebench.plugins.objectives import beta_at, capacity_at

    traced = jax.jit(lambda s: (beta_at(s, hp), capacity_at(s, 25.0, 30)))
    for step in (1, 2, 5, 9, 10, 11, 17, 33, 34, 35, 40, 67, 99, 100, 250):
        beta, capacity = traced(jnp.int32(step))
        assert float(beta) == pytest.approx(beta_at(step, hp), rel=1e-6, abs=1e-6), step
        assert float(capacity) == pytest.approx(capacity_at(step, 25.0, 30), rel=1e-6), step
    assert isinstance(beta_at(5, hp), float) and isinstance(capacity_at(5, 25.0, 30), float)


def test_jitted_step_mid_warm_up_gives_the_torch_loss_terms(monkeypatch, torch_cpu_state):
    # β rises 1 -> 4 over 10 steps; at step 4 it is 2.2, so a β held at its target (or at
    # its start) would give a different loss. The JAX step is jitted with the step traced.
    spec = RunSpec(model="beta_vae", beta=4.0, beta_schedule="linear", beta_start=1.0, beta_warmup_steps=10,
                   steps=40, latent_dim=6)
    torch.manual_seed(0)
    t = tm.build_beta_vae(spec, SHAPE)
    with torch.no_grad():
        t.encoder.dense[-1].bias[:6].add_(torch.linspace(-3.0, 3.0, 6))
    j = jm.copy_torch_weights(t, jm.build_beta_vae(spec, SHAPE))
    x = _images(8, seed=4)
    eps = np.random.default_rng(7).standard_normal((8, 6)).astype(np.float32)
    monkeypatch.setattr(torch, "randn_like", lambda like: torch.from_numpy(eps).to(like.dtype))
    step_fn = jax.jit(loss_and_grads, static_argnums=0)
    graphdef, params, others = nnx.split(j, nnx.Param, ...)
    for step in (4, 7):
        with torch.no_grad():
            terms_t = t.loss_terms(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), step)
        _, _, terms_j = step_fn(graphdef, params, others, jnp.asarray(x), jnp.int32(step), eps=jnp.asarray(eps))
        beta = 1.0 + 3.0 * step / 10
        assert terms_t["signals"]["beta"] == pytest.approx(beta)
        assert float(terms_j["signals"]["beta"]) == pytest.approx(beta, rel=1e-6)
        for key in ("loss", "recon", "kl"):
            assert _rel(terms_j[key], terms_t[key].item()) < 1e-4, (step, key)
        assert terms_t["loss"].item() == pytest.approx(terms_t["recon"].item() + beta * terms_t["kl"].item(), rel=1e-6)


def test_scheduled_beta_trains_on_jax_and_is_recorded_as_a_signal():
    spec = RunSpec(model="beta_vae", beta=4.0, beta_schedule="cyclical", beta_start=0.0, beta_cycles=2,
                   steps=12, batch_size=16)
    trained = _train(spec)
    assert [s["step"] for s in trained.signals] == [h["step"] for h in trained.history] == list(range(1, 13))
    for s in trained.signals:  # period 6: β rises over steps 1-3 of each cycle, then holds
        tau = ((s["step"] - 1) % 6) / 6
        assert s["beta"] == pytest.approx(4.0 * min(1.0, tau / 0.5), abs=1e-6)


def test_subpixel_transposed_conv_is_flax_conv_transpose():
    layer = ConvTranspose2x(32, 3, nnx.Rngs(0))
    ref = nnx.ConvTranspose(32, 3, (4, 4), (2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True, rngs=nnx.Rngs(1))
    ref.kernel[...], ref.bias[...] = layer.kernel[...], layer.bias[...]
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 32))
    y = layer(x)
    assert y.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)


def test_initialisation_matches_torch_defaults():
    # U(±1/sqrt(fan_in)) as torch, including torch's fan-in for transposed convolutions.
    spec = _spec("beta_vae", "conv")
    torch.manual_seed(0)
    from_torch = flat_state(jm.copy_torch_weights(tm.build_beta_vae(spec, SHAPE), jm.build_beta_vae(spec, SHAPE)))
    native = flat_state(jm.build_beta_vae(spec, SHAPE))
    for name, value in from_torch.items():
        if value.size >= 256:
            assert np.abs(native[name]).max() <= np.abs(value).max() * 1.05, name
            assert native[name].std() == pytest.approx(value.std(), rel=0.15), name


# -- the model zoo on JAX: cvae and vq_vae against torch --------------------------------


def _zoo_spec(model: str, arch: str = "conv", **hp) -> RunSpec:
    from vaebench.harness.plan import plan_grid

    axes = {"latent_dim": [4], **{k: [v] for k, v in hp.items()}}
    (spec,) = plan_grid(get_manager(), [model], axes, architectures=[arch], backends=["jax"])
    return spec


def _torch_batch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_cvae_same_weights_same_noise_same_loss_terms_and_inferred_labels(arch, monkeypatch):
    spec = _zoo_spec("cvae", arch, beta=2.0, condition="shape")
    torch.manual_seed(0)
    t = tm.build_cvae(spec, SHAPE, dataset=DATA)
    last = t.encoder.dense[-1] if arch == "conv" else t.encoder.net[-1]
    with torch.no_grad():  # a KL worth comparing, and labels that matter to the encoder
        last.bias[:4].add_(torch.linspace(-2.0, 2.0, 4))
    j = jm.copy_torch_weights(t, jm.build_cvae(spec, SHAPE, dataset=DATA))
    assert (j.factor_index, j.num_classes, j.num_factors) == (0, 3, 5)
    images, factors = DATA.sample(8, np.random.default_rng(8))
    eps = np.random.default_rng(9).standard_normal((8, 4)).astype(np.float32)
    monkeypatch.setattr(torch, "randn_like", lambda like: torch.from_numpy(eps).to(like.dtype))
    xt, ft = _torch_batch(images), torch.from_numpy(factors.astype(np.int64))
    with torch.no_grad():
        terms_t = t.loss_terms(xt, 3, factors=ft)
        inferred_t = t.infer_factors(xt).numpy()
        decoded_t = t.decode(t.encode(xt, ft)[0]).permute(0, 2, 3, 1).numpy()  # uniform condition
    terms_j = j.loss_terms(jnp.asarray(images), 3, factors=jnp.asarray(factors, jnp.int32), eps=jnp.asarray(eps))
    assert float(terms_t["kl"]) > 1.0
    for key in ("loss", "recon", "kl"):
        assert _rel(terms_j[key], terms_t[key].item()) < 1e-4, key
    np.testing.assert_array_equal(np.asarray(j.infer_factors(jnp.asarray(images))), inferred_t)
    mu_j = j.encode(jnp.asarray(images), jnp.asarray(factors, jnp.int32))[0]
    assert _rel(j.decode(mu_j), decoded_t) < 1e-4
    # labels change the loss: the condition really reaches both networks
    other = factors.copy()
    other[:, 0] = (other[:, 0] + 1) % 3
    moved = j.loss_terms(jnp.asarray(images), 3, factors=jnp.asarray(other, jnp.int32), eps=jnp.asarray(eps))
    assert abs(float(moved["recon"]) - float(terms_j["recon"])) > 1e-3


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_vq_vae_same_weights_same_codes_same_terms_same_codebook_after_a_step(update):
    spec = _zoo_spec("vq_vae", codebook_size=16, codebook_dim=4, codebook_update=update)
    torch.manual_seed(0)
    t = tm.build_vq_vae(spec, SHAPE)
    with torch.no_grad():  # codes spread over the encodings' range, so several are chosen
        t.codebook.copy_(torch.randn(16, 4) * 0.05)
        if update == "ema":
            t.ema_sum.copy_(t.codebook)
    j = jm.copy_torch_weights(t, jm.build_vq_vae(spec, SHAPE))
    x = _images(16, seed=5)
    xt = _torch_batch(x)
    t.train()
    initial = t.codebook.detach().clone().numpy()
    _, idx_t = t.quantise(t.encoder(xt).float().view(-1, 4, 4))
    terms_t = t.loss_terms(xt, 1)
    t.zero_grad()
    terms_t["loss"].backward()

    _, idx_j = j.quantise(j._encode_slots(jnp.asarray(x)))
    np.testing.assert_array_equal(np.asarray(idx_j), idx_t.numpy())
    assert len(np.unique(idx_t.numpy())) >= 3
    graphdef, params, others = nnx.split(j, nnx.Param, ...)
    grads, new_others, terms_j = loss_and_grads(graphdef, params, others, jnp.asarray(x), jnp.int32(1))
    for key in ("loss", "recon"):
        assert _rel(terms_j[key], terms_t[key].item()) < 1e-4, key
    for key in ("commitment", "codebook", "perplexity", "code_usage"):
        assert _rel(terms_j["signals"][key], float(torch.as_tensor(terms_t["signals"][key]).detach())) < 1e-4, key
    nnx.update(j, new_others)
    np.testing.assert_array_equal(np.asarray(j.last_used[...]), t.last_used.numpy())
    if update == "ema":  # the EMA step moved the codebook the same way
        assert np.abs(t.codebook.numpy() - initial).max() > 1e-3
        assert _rel(j.codebook[...], t.codebook.numpy()) < 1e-5
        assert _rel(j.ema_count[...], t.ema_count.numpy()) < 1e-6
    else:  # the codebook's gradient (codebook loss) matches
        got = np.asarray(grads["codebook"][...])
        assert np.abs(got).max() > 0 and _rel(got, t.codebook.grad.numpy()) < 1e-4
    # the encoder's gradient carries recon (straight-through) and the commitment term
    assert _rel(grads["encoder"]["fc3"]["kernel"][...], t.encoder.dense[-1].weight.grad.numpy().T) < 1e-4


def test_vq_vae_dead_codes_are_reset_to_encodings_of_the_batch():
    spec = _zoo_spec("vq_vae", codebook_size=16, codebook_dim=4, dead_code_steps=2)
    j = jm.build_vq_vae(spec, SHAPE)
    x = jnp.asarray(_images(8, seed=6))
    j.last_used[...] = jnp.asarray([5] * 8 + [1] * 8, jnp.int32)  # codes 8-15 unused since step 1
    before = np.asarray(j.codebook[...]).copy()
    j.before_step(x, jnp.int32(5), jax.random.key(0))
    after = np.asarray(j.codebook[...])
    np.testing.assert_array_equal(after[:8], before[:8])
    encodings = np.asarray(j._encode_slots(x)).reshape(-1, 4)
    for row in after[8:]:
        assert np.abs(encodings - row).sum(1).min() < 1e-6  # each reset code is one of the batch's encodings
    assert int(j.codes_reset[...]) == 8 and np.all(np.asarray(j.last_used[...])[8:] == 5)


def test_cvae_and_vq_vae_train_on_jax_with_signals_and_notes(tmp_path):
    vq = _zoo_spec("vq_vae", codebook_size=64, codebook_update="ema", dead_code_steps=5, steps=12, batch_size=16)
    trained = _train(vq)
    assert len(trained.signals) == 12
    for s in trained.signals:
        assert 1.0 <= s["perplexity"] <= 64 and 0.0 < s["code_usage"] <= 1.0 and s["codebook"] == 0.0
    assert trained.signals[-1]["codes_reset"] > 0  # 64 codes, 40 encodings a step: some go unused
    cv = _zoo_spec("cvae", beta_schedule="linear", steps=12, batch_size=16)
    trained = _train(cv)
    assert [s["beta"] for s in trained.signals] == pytest.approx([step / 12 for step in range(1, 13)])
    images, factors = DATA.sample(6, np.random.default_rng(3))
    means_given = trained.evaluate(images, factors=factors)[0]
    np.testing.assert_allclose(trained.encode(images, factors=factors), means_given, rtol=1e-6)
    labels = np.asarray(trained.model.infer_factors(jnp.asarray(images)))
    np.testing.assert_allclose(trained.encode(images), trained.encode(images, factors=labels), rtol=1e-6)
