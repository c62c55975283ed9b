"""How a benchmark script hands back its result: printed, and appended to ``--out``."""

from __future__ import annotations


def emit(text: str, out: str | None) -> None:
    """Print ``text`` (a Markdown section); with ``out``, also append it to that file."""
    print(text)
    if out:
        with open(out, "a") as fh:
            fh.write("\n" + text)
