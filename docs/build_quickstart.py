"""Write ``docs/quickstart.ipynb`` (outputs cleared) from the cells below.

The notebook is the Python API's quickstart; tests/test_notebook.py executes it with
nbclient and checks that the committed file is what this script writes. After editing a
cell: ``python docs/build_quickstart.py``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

#: (kind, source, tags): tags name the cells whose outputs tests/test_notebook.py checks.
CELLS: list[tuple[str, str, list[str]]] = [
    ("markdown", """\
# vaebench quickstart: the Python API

Train a tiny β grid, rank it with the leaderboard in pandas, plot the β trade-off and look
at a latent traversal. Everything here runs on a CPU in under a minute: a small MLP
β-VAE trained for a few dozen steps on dSprites (rendered locally from its five factors)
and scored on 500 held-out images, so the numbers are illustrative, not results
(README's first section shows what 3,000 steps give).""", []),
    ("code", """\
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, display

import vaebench

REGISTRY = "quickstart-results"  # a folder: one Parquet record per run, and the artifacts
vaebench.__version__""", []),
    ("markdown", """\
## Train a grid

`run_grid` plans the product of every list (here three β values) and trains one model per
point, then scores each with the named metrics and writes its record. It makes every
check `vaebench run` makes before anything trains.""", []),
    ("code", """\
grid = vaebench.run_grid(
    "beta_vae", betas=[1, 4, 16], steps=40, batch_sizes=32, architectures="mlp",
    metrics=["kl", "reconstruction", "mig"], eval_samples=500, device="cpu", threads=1,
    registry=REGISTRY,
)
[(r["beta"], r["status"]) for r in grid.records]""", ["grid"]),
    ("markdown", """\
## The leaderboard in pandas

`leaderboard` aggregates over seeds (mean, std, n) and ranks best first; it returns a
`pyarrow.Table`, so `.to_pandas()` gives a DataFrame.""", []),
    ("code", """\
board = vaebench.leaderboard(registry=REGISTRY, metric="mig", by=["model", "beta"]).to_pandas()
board""", ["leaderboard"]),
    ("markdown", """\
## The β trade-off

Each record's `metrics` map holds its scores: a larger β keeps less information in the
code (KL, nats) and reconstructs worse.""", []),
    ("code", """\
runs = pd.DataFrame([{"beta": r["beta"], **r["metrics"]} for r in grid.records]).sort_values("beta")
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
left.plot(runs["kl"], runs["reconstruction"], "o-")
for _, row in runs.iterrows():
    left.annotate(f"β={row['beta']:g}", (row["kl"], row["reconstruction"]), textcoords="offset points", xytext=(5, 5))
left.set(xlabel="KL (nats)", ylabel="reconstruction (nats)", title="rate vs distortion")
right.plot(runs["beta"], runs["mig"], "o-")
right.set(xscale="log", xlabel="β", ylabel="MIG", title="disentanglement")
fig.tight_layout()
plt.show()
runs[["beta", "kl", "reconstruction", "mig"]]""", ["tradeoff"]),
    ("markdown", """\
## A traversal

Every run writes its figures next to its checkpoint; a record names them relative to the
registry. Each row sweeps one latent code of an encoded image over the range in the title,
the others held; rows are sorted by KL and labelled with the factor MIG finds that code
most informative about. Forty steps learn little more than the mean image, so the rows
barely change here; `vaebench run --model beta_vae --betas 1,4,8` (3,000 steps, the conv
architecture) gives codes for position and scale (README).""", []),
    ("code", """\
record = vaebench.show(grid.records[0]["run_id"], registry=REGISTRY)  # β = 1: the most information kept
traversal = Path(REGISTRY) / record["artifacts"]["traversal_png"]
display(Image(filename=str(traversal)))
print(f"β={record['beta']:g}, run {record['run_id']}: {traversal}")""", ["traversal"]),
    ("markdown", """\
## What the record says about where it ran

The `environment` map: Python, the platform, the git revision, every installed package,
the CPU, CUDA / cuDNN and GPUs where present, and the thread settings the run trained with.""", []),
    ("code", """\
env = dict(record["environment"])
packages = env.pop("packages").split(";")
print(len(packages), "packages, e.g.", [p for p in packages if p.startswith(("torch==", "numpy=="))])
print(json.dumps(env, indent=1))""", ["environment"]),
]


def build() -> nbformat.NotebookNode:
    """The notebook, outputs empty (``nbformat`` 4)."""
    cells = []
    for kind, source, tags in CELLS:
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids: the file changes only when a cell does
        cell["id"] = f"cell-{i:02d}"
    return nb


def text(nb: nbformat.NotebookNode) -> str:
    """The notebook as written to disk."""
    return nbformat.writes(nb) + "\n"


if __name__ == "__main__":
    path = HERE / "quickstart.ipynb"
    path.write_text(text(build()), encoding="utf-8")
    print(f"wrote {path}")
