"""Where results live: one Parquet record per run, read with DuckDB."""

#: The registry directory every command and API call uses unless told otherwise.
DEFAULT_REGISTRY = "./vaebench-results"
