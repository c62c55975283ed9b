"""CPU training keeps freed memory in the heap instead of mapping fresh pages every step."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A child process per side: the heap setting is process-wide and cannot be undone.
CHILD = """
import resource, sys
import vaebench.plugins.backends.torch.backend as backend
from vaebench.harness.plan import RunSpec
from vaebench.plugins.backends.base import ExecutionOptions
from vaebench.plugins.datasets.dsprites import ProceduralDSprites

if sys.argv[1] == "glibc-default":
    backend.retain_freed_memory = lambda: False
data = ProceduralDSprites()
options = ExecutionOptions(device="cpu", threads=1, progress_every=1000)
backend.TorchBackend().train(RunSpec(model="beta_vae", beta=4.0, steps=3, batch_size=64), data, options)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
backend.TorchBackend().train(RunSpec(model="beta_vae", beta=4.0, steps=30, batch_size=64), data, options)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _training_page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap setting is glibc's mallopt")
def test_cpu_training_reuses_heap_memory_across_steps():
    default = _training_page_faults("glibc-default")
    vaebench = _training_page_faults("vaebench")
    # With glibc's defaults every step of the conv β-VAE maps its activations afresh
    # (about 17 k page faults a step at batch 64, measured); kept in the heap, a step
    # reuses the pages of the one before.
    assert default > 30 * 2_000
    assert vaebench < default / 10
