#!/usr/bin/env bash
# What the GPU machine runs for issues 27 and 28, from the repository root:
#
#     bash benchmarks/gpu_check.sh        # results in $OUT (results.json, grid.png, log.txt)
#
# The machine has no registry: what it lacks comes as wheels in .whl/, fetched here first:
#
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d .whl duckdb==2.0.1
#     python3 -m pip download --no-deps --only-binary=:all: -d .whl/optional flax==0.12.8
#
# (.whl/ is git-ignored,
# carried with the tree; benchmarks/RESULTS.md, "GPU", lists them). They go into a
# --target folder put first on PYTHONPATH; flax only where the machine's is not one
# vaebench supports. vaebench itself is pip-installed (editable, no build isolation:
# setuptools is there) because its built-in plugin is found through its own entry point
# (plugins/manager.py), which needs the installed metadata, not only the code on the
# path; where pip cannot, the same metadata is written by hand. Then
# benchmarks/gpu_check.py runs with its own time budget; everything is logged to
# $OUT/log.txt. Overrides: PYTHON, WHEELS, SITE, DEVICE, GPU_CHECK_ARGS; GPU_COMMAND runs
# a command of its own after the same setup in place of gpu_check.py (e.g. a timed
# `python -m vaebench.harness.cli run ...` for issue 28).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/site}"
mkdir -p "$OUT"
{
  echo "== $(date -u +%FT%TZ) $(hostname) $($PY -V 2>&1) in $PWD"
  nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv,noheader 2>&1 || true
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  if ! $PY -c 'import sys, flax; v = tuple(int(p) for p in flax.__version__.split(".")[:3]); sys.exit(not (0, 12, 8) <= v < (0, 13))' 2>/dev/null; then
    echo "== flax here: $($PY -c 'import flax; print(flax.__version__)' 2>&1 | tail -1); installing the carried one"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/optional/flax-*.whl
  fi
  export PYTHONPATH="$SITE:$PWD/src"
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3
  if ! $PY -c 'from importlib.metadata import distribution as d; d("vaebench")' 2>/dev/null; then
    echo "== pip could not install vaebench; writing its metadata into $SITE"
    mkdir -p "$SITE/vaebench-0.1.0.dist-info"
    printf 'Metadata-Version: 2.1\nName: vaebench\nVersion: 0.1.0\n' > "$SITE/vaebench-0.1.0.dist-info/METADATA"
    printf '[vaebench]\nbuiltin = vaebench.plugins.builtin\n' > "$SITE/vaebench-0.1.0.dist-info/entry_points.txt"
  fi
  $PY -c 'import duckdb, flax, vaebench; from vaebench.plugins.manager import get_manager as g; m = g(); print("== vaebench", vaebench.__file__, "duckdb", duckdb.__version__, "flax", flax.__version__, "plugins", [(p.name, p.status, p.error) for p in m.plugins])'
  if [ -n "${GPU_COMMAND:-}" ]; then
    echo "== $GPU_COMMAND"
    PYTHONUNBUFFERED=1 PY="$PY" bash -c "$GPU_COMMAND"
    echo "== command exit $? at $(date -u +%FT%TZ)"
  else
    PYTHONUNBUFFERED=1 $PY benchmarks/gpu_check.py "$OUT" --device "${DEVICE:-cuda}" ${GPU_CHECK_ARGS:-}
    echo "== gpu_check.py exit $? at $(date -u +%FT%TZ)"
  fi
} 2>&1 | tee "$OUT/log.txt"
