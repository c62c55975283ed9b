"""The training loop written once (``backends.loop.train_loop``), filled with a step in
plain Python: its cadence, divergence per member, checkpoints and multi-step calls."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

from vaebench.plugins.backends.base import ExecutionOptions, ResumePoint
from vaebench.plugins.backends.loop import GroupStart, Readout, TrainedRecord, train_loop
from vaebench.plugins.runspec import RunSpec


class Record(TrainedRecord):
    def save(self, directory: str) -> dict[str, str]:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "state.json")
        with open(path, "w") as fh:
            json.dump({"state": self.training_state, "history": len(self.history)}, fh)
        return {"checkpoint": path}


class Arithmetic:
    """Member ``i``'s loss after step ``t`` is ``i + 1 / t``; member 1's turns NaN from
    ``nan_from``. Counts the steps it trained and the looks the loop took."""

    def __init__(self, members: int, per_call: int, nan_from: int | None = None) -> None:
        self.steps_per_call, self.members, self.nan_from = per_call, members, nan_from
        self.step = 0
        self.calls: list[tuple[int, int]] = []
        self.reads: list[int] = []
        self.kept: dict[int, int] = {}

    def run(self, step: int, count: int, live: Sequence[int]) -> None:
        assert step == self.step + 1 and 1 <= count <= self.steps_per_call
        self.calls.append((step, count))
        self.step = step + count - 1

    def loss(self, i: int) -> float:
        return math.nan if i == 1 and self.nan_from and self.step >= self.nan_from else i + 1 / self.step

    def read(self) -> Readout:
        self.reads.append(self.step)
        loss = [self.loss(i) for i in range(self.members)]
        return Readout(loss, loss, [0.0] * self.members, [None] * self.members,
                       [{"beta": float(self.step)} if i == 0 else {} for i in range(self.members)])

    def keep(self, i: int) -> None:
        self.kept[i] = self.step

    def state(self, i: int, step: int, progress: dict[str, Any] | None) -> dict[str, Any]:
        return {"member": i, "step": step, "partial": progress is not None}

    def sync(self) -> None:
        pass


def _train(steps: Arithmetic, total: int, **options: Any) -> tuple[list[Record], dict[int, list[int]]]:
    spec = RunSpec(model="beta_vae", steps=total, batch_size=4)
    trained = [Record(spec, "cpu", "off", False) for _ in range(steps.members)]
    reports: dict[int, list[int]] = {i: [] for i in range(steps.members)}
    callbacks = [lambda step, values, i=i: reports[i].append(step) for i in range(steps.members)]
    execution = ExecutionOptions(device="cpu", progress_every=options.pop("progress_every", 5), **options)
    begin = GroupStart.of(None, None, steps.members)
    train_loop(steps, trained, begin, total, 4, execution, callbacks)
    return trained, reports


def test_cadence_divergence_per_member_and_final_state():
    steps = Arithmetic(members=3, per_call=1, nan_from=12)
    (a, b, c), reports = _train(steps, total=30)
    assert [h["step"] for h in a.history] == list(range(1, 31))  # 30 steps: every step a history point
    assert a.final_loss == 0 + 1 / 30 and a.steps_done == 30 and not a.diverged
    assert a.signals[-1] == {"step": 30, "beta": 30.0} and not c.signals
    assert b.diverged and b.steps_done == 12 and math.isnan(b.final_loss) and steps.kept == {1: 12}
    assert b.history[-1]["step"] == 12 and b.training_state is None
    assert reports[0] == [5, 10, 15, 20, 25, 30] and reports[1] == [5, 10]
    assert a.training_state == {"member": 0, "step": 30, "partial": False}


def test_several_steps_a_call_read_only_at_the_cadence_and_record_the_same():
    one, many = Arithmetic(members=2, per_call=1, nan_from=703), Arithmetic(members=2, per_call=64, nan_from=703)
    (a1, b1), r1 = _train(one, total=1000, progress_every=250)
    (a2, b2), r2 = _train(many, total=1000, progress_every=250)
    assert a1.history == a2.history and b1.history[:-1] == b2.history[:-1] and r1 == r2
    assert math.isnan(b2.history[-1]["loss"]) and b2.history[-1]["step"] == 705
    assert (b2.diverged, b2.steps_done) == (b1.diverged, b1.steps_done) == (True, 705)
    assert many.reads == one.reads  # only the history (every 5 steps) and progress looks
    assert all(step % 5 == 0 for step in many.reads) and len(many.calls) == 200


def test_periodic_checkpoints_go_to_each_members_directory(tmp_path):
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    steps = Arithmetic(members=2, per_call=8)
    spec = RunSpec(model="beta_vae", steps=2000, batch_size=4)
    trained = [Record(spec, "cpu", "off", False) for _ in range(2)]
    execution = ExecutionOptions(device="cpu", checkpoint_every=7, progress_every=1000)
    train_loop(steps, trained, GroupStart.of(None, dirs, 2), 2000, 4, execution)
    for i, directory in enumerate(dirs):  # the last checkpoint before the last step, 2000
        saved = json.loads(open(os.path.join(directory, "state.json")).read())
        assert saved["state"] == {"member": i, "step": 1995, "partial": True}
    # a call ends at every history point (10) and checkpoint (7), and runs up to 8 steps between
    assert not any(t % 7 == 0 or t % 10 == 0 for s, n in steps.calls for t in range(s, s + n - 1))
    assert max(n for _, n in steps.calls) == 7


def test_a_resumed_run_goes_on_from_its_point():
    point = ResumePoint(directory="unused", step=10, train_seconds=5.0,
                        history=[{"step": 10, "loss": 1.0, "recon": 1.0, "kl": 0.0, "capacity": None}],
                        signals=[{"step": 10, "beta": 10.0}])
    steps = Arithmetic(members=1, per_call=1)
    steps.step = 10
    spec = RunSpec(model="beta_vae", steps=20, batch_size=4)
    (run,) = trained = [Record(spec, "cpu", "off", False)]
    train_loop(steps, trained, GroupStart.of([point], None, 1), 20, 4, ExecutionOptions(device="cpu"))
    assert steps.calls[0] == (11, 1) and [h["step"] for h in run.history] == list(range(10, 21))
    assert run.signals[0] == {"step": 10, "beta": 10.0} and run.train_seconds >= 5.0 and run.steps_done == 20


def test_fused_calls_end_on_the_steps_the_loop_looks_at():
    """``fusable_steps``: the largest divisor (at most the cap) of the cadences' common divisor;
    ``report_cadence``: progress every 10 steps, or every fused call where that is more."""
    from vaebench.plugins.backends.base import ExecutionOptions
    from vaebench.plugins.backends.loop import fusable_steps, report_cadence

    default = ExecutionOptions()
    assert fusable_steps(300_000, default, 100) == 100  # history every 1,500
    assert fusable_steps(30_000, default, 100) == 75  # history every 150
    assert fusable_steps(300_000, ExecutionOptions(progress_every=10), 100) == 10
    assert fusable_steps(300_000, ExecutionOptions(checkpoint_every=20_000), 100) == 100  # gcd 500
    assert fusable_steps(300_000, ExecutionOptions(checkpoint_every=7), 100) == 1
    assert fusable_steps(3_000, default, 1) == 1
    assert report_cadence(default, 1) == 10 and report_cadence(default, 100) == 100
    assert report_cadence(ExecutionOptions(progress_every=3), 100) == 3
