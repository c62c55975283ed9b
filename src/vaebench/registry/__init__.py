"""Where results live: one Parquet record per run, read with DuckDB."""

#: The registry directory every command and API call uses unless told otherwise.
DEFAULT_REGISTRY = "./vaebench-results"

#: Which records of a run a reader takes: its latest finished attempt (``ok`` / ``diverged``
#: first, then the latest), or every attempt (``--attempts all``).
ATTEMPTS = ("latest", "all")
