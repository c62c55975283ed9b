"""Grid planning: the product of the lists, normalised and de-duplicated, with stable ids."""

from __future__ import annotations

import json

import pytest

from vaebench.harness.plan import PlanError, parse_list, plan_grid
from vaebench.plugins.runspec import RunSpec
from vaebench.plugins.manager import UnknownSpecError, get_manager


def test_grid_is_the_product_of_the_lists():
    specs = plan_grid(get_manager(), ["beta_vae"], {"beta": [1, 4, 8], "seed": [0, 1], "latent_dim": [6, 10]})
    assert len(specs) == 12
    assert sorted({(s.beta, s.seed, s.latent_dim) for s in specs}) == sorted(
        (float(b), s, d) for b in (1, 4, 8) for s in (0, 1) for d in (6, 10)
    )
    assert len({s.run_id for s in specs}) == 12


def test_unused_hyperparameters_are_cleared_and_deduplicated():
    specs = plan_grid(get_manager(), ["vae", "beta_vae"], {"beta": [1, 4]})
    vae = [s for s in specs if s.model == "vae"]
    assert len(vae) == 1 and vae[0].beta is None  # vae ignores β: one run, not two
    assert sorted(s.beta for s in specs if s.model == "beta_vae") == [1.0, 4.0]


def test_model_defaults_fill_what_is_not_given():
    (spec,) = plan_grid(get_manager(), ["beta_vae_capacity"], {"steps": [200]})
    assert (spec.capacity, spec.gamma, spec.capacity_steps, spec.beta) == (25.0, 1000.0, 200, None)
    (spec,) = plan_grid(get_manager(), ["beta_vae"], {})
    assert spec.beta == 4.0


def test_run_id_is_stable_and_content_addressed():
    a = RunSpec(model="beta_vae", beta=4.0)
    assert a.run_id == RunSpec(model="beta_vae", beta=4.0).run_id
    assert a.run_id != RunSpec(model="beta_vae", beta=4.0, seed=1).run_id
    assert a.run_id == RunSpec.from_dict(json.loads(a.to_json())).run_id
    # Pinned: changing the hash definition silently would orphan every recorded run for --resume.
    assert a.run_id == "a1b61ae31bb4de9d"


@pytest.mark.parametrize(
    "text,kind,expected",
    [("1,4,8", float, [1.0, 4.0, 8.0]), ("0, 1 ,2", int, [0, 1, 2]), ("1e-3", float, [0.001])],
)
def test_parse_list(text, kind, expected):
    assert parse_list(text, "--x", kind) == expected


@pytest.mark.parametrize("text,kind", [("1,x", float), ("1,,2", float), ("1.5", int), ("nan", float)])
def test_parse_list_rejects_bad_items(text, kind):
    with pytest.raises(PlanError, match="--x"):
        parse_list(text, "--x", kind)


def test_out_of_range_and_meaningless_axes_are_errors():
    m = get_manager()
    with pytest.raises(PlanError, match="beta: -1 is out of range"):
        plan_grid(m, ["beta_vae"], {"beta": [-1.0]})
    with pytest.raises(PlanError, match="no selected model reads 'capacity'"):
        plan_grid(m, ["beta_vae"], {"capacity": [5.0]})
    with pytest.raises(PlanError, match="lr"):
        plan_grid(m, ["beta_vae"], {"lr": [0.0]})
    with pytest.raises(UnknownSpecError, match="unknown model 'nope'"):
        plan_grid(m, ["nope"], {})
    with pytest.raises(UnknownSpecError, match="unknown dataset 'nope'"):
        plan_grid(m, ["beta_vae"], {}, datasets=["nope"])
