"""Reading representations computed elsewhere: ``.npy``, ``.npz`` or Parquet, never pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ArrayFileError(ValueError):
    """A file that cannot be read as a 2-D array; one line for the user."""


def load_matrix(path: str | Path, what: str = "array") -> tuple[np.ndarray, list[str] | None]:
    """Read a 2-D array ``(N, C)`` and, where the file names them, its column names.

    - ``.npy``: the array (a 1-D array is one column).
    - ``.npz``: the array stored under ``what`` (``latents``/``factors``) if present,
      else the only array in the file.
    - ``.parquet``: every numeric column, in order, named by the column; or a
      single list column holding one row vector per row.
    Object arrays (which would need pickle) are refused.
    """
    p = Path(path)
    if not p.exists():
        raise ArrayFileError(f"{what} file {p} not found")
    suffix = p.suffix.lower()
    names: list[str] | None = None
    try:
        if suffix == ".npy":
            array = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if what in keys:
                    array = archive[what]
                elif len(keys) == 1:
                    array = archive[keys[0]]
                else:
                    raise ArrayFileError(
                        f"{p} holds several arrays ({', '.join(keys)}); name the one to use {what!r}"
                    )
        elif suffix == ".parquet":
            array, names = _parquet_matrix(p, what)
        else:
            raise ArrayFileError(f"{p}: unsupported file type {suffix or '(none)'} (use .npy, .npz or .parquet)")
    except ArrayFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy/pyarrow raise many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArrayFileError(f"cannot read {what} from {p}: {first}") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ArrayFileError(f"{what} in {p} must be 2-D (N, columns), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ArrayFileError(f"{what} in {p} must be numeric, got dtype {array.dtype}")
    return array, names


def _parquet_matrix(path: Path, what: str) -> tuple[np.ndarray, list[str] | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if table.num_columns == 1 and pa.types.is_list(table.schema.field(0).type) or (
        table.num_columns == 1 and pa.types.is_fixed_size_list(table.schema.field(0).type)
    ):
        rows = table.column(0).to_pylist()
        return np.asarray(rows), None
    numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    if not numeric:
        raise ArrayFileError(f"{path} has no numeric columns to read {what} from")
    return np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in numeric]), numeric
