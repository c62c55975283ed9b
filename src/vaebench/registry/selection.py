"""Select runs: the one syntax every results command (``compare``, ``check``) uses.

A selection is a comma-separated list of terms::

    model=beta_vae,beta=4,dataset=dsprites     key=value pairs (ANDed)
    3fa2c1,9b0e                                run ids or unique prefixes (ORed)
    beta=4,beta=8                              a repeated key matches any of its values
    capacity=null                              a column that is not set

Keys are the ``GROUPABLE_COLUMNS`` plus ``run_id`` (a prefix), ``status`` and
``backend``; a term without ``=`` is a run id prefix (hex). In a targets file
the same selection is a TOML table, ``select = { model = "beta_vae", beta = 4 }``
(a list value matches any of its items).

Values reach SQL only as bound parameters; column names are checked against
:data:`SELECT_KEYS` and then quoted. Numeric columns are parsed in Python
(``beta=4`` matches the stored ``4.0``; ``seed=x`` is a ``ValueError``) and
compared with a typed cast, so a string never meets a number inside DuckDB.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vaebench.registry.schema import GROUPABLE_COLUMNS, RECORD_SCHEMA, STATUSES

__all__ = ["RUN_COLUMNS", "SELECT_KEYS", "Selection", "check_prefixes", "fetch_runs", "parse_selection"]

#: Keys a selection may name.
SELECT_KEYS: tuple[str, ...] = tuple(dict.fromkeys((*GROUPABLE_COLUMNS, "run_id", "status", "backend")))

_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}")
_NULL_WORDS = {"null", "none"}


def _kind(column: str) -> str:
    """``int``, ``float`` or ``str``: how a value for ``column`` is parsed and cast."""
    import pyarrow as pa

    t = RECORD_SCHEMA.field(column).type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    return "str"


_SQL_TYPE = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR"}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _parse_value(key: str, value: Any) -> Any:
    """Parse one value for ``key`` (None for ``null``); ``ValueError`` when it does not fit."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in _NULL_WORDS:
        return None
    kind = _kind(key)
    if key == "run_id":
        text = str(value).strip().lower()
        if not _PREFIX_RE.fullmatch(text):
            raise ValueError(f"run_id={value!r}: expected a run id or a prefix of one (hex characters)")
        return text
    if key == "status":
        text = str(value).strip()
        if text not in STATUSES:
            raise ValueError(f"status={value!r}: choose from {', '.join(STATUSES)}")
        return text
    if kind == "str":
        if isinstance(value, (bool, int, float)):
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"{key}={value!r}: expected a string")
        return value.strip()
    if isinstance(value, bool):
        raise ValueError(f"{key}={value!r}: expected a number")
    try:
        number = float(value) if isinstance(value, str) else value
        number = float(number)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r}: expected a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{key}={value!r}: expected a finite number")
    if kind == "int":
        if number != int(number):
            raise ValueError(f"{key}={value!r}: expected an integer")
        return int(number)
    return number


@dataclass(frozen=True)
class Selection:
    """Which runs: ``terms`` (column -> allowed values, ANDed over columns, ORed
    within one) and ``prefixes`` (run id prefixes, ORed). Empty: every run."""

    terms: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    prefixes: tuple[str, ...] = ()
    text: str = ""
    #: Further selections every run must also match (built by ``a & b``).
    also: tuple[Selection, ...] = ()

    # ------------------------------------------------------------ building
    @classmethod
    def parse(cls, text: str | None) -> Selection:
        """Parse ``"model=beta_vae,beta=4"`` or ``"3fa2c1,9b0e"``; ``ValueError`` (one line) when bad."""
        if text is None or not str(text).strip():
            return cls()
        pairs: list[tuple[str, Any]] = []
        prefixes: list[str] = []
        for raw in str(text).split(","):
            item = raw.strip()
            if not item:
                continue
            if "=" in item:
                key, _, value = item.partition("=")
                pairs.append((key.strip(), value.strip()))
            else:
                prefix = item.lower()
                if not _PREFIX_RE.fullmatch(prefix):
                    raise ValueError(
                        f"selection term {item!r}: expected key=value (keys: {', '.join(SELECT_KEYS)}) "
                        "or a run id prefix (hex)"
                    )
                prefixes.append(prefix)
        return cls._build(pairs, prefixes, str(text).strip())

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], text: str | None = None) -> Selection:
        """From a TOML/JSON table: ``{"model": "beta_vae", "beta": [4, 8]}`` (a list: any of)."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a selection must be a table of key = value, not {type(mapping).__name__}")
        pairs: list[tuple[str, Any]] = []
        for key, value in mapping.items():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                pairs.append((str(key), item))
        shown = text if text is not None else ",".join(f"{k}={v}" for k, v in pairs)
        return cls._build(pairs, [], shown)

    @classmethod
    def _build(cls, pairs: Iterable[tuple[str, Any]], prefixes: Iterable[str], text: str) -> Selection:
        terms: dict[str, list[Any]] = {}
        for key, value in pairs:
            if key not in SELECT_KEYS:
                raise ValueError(f"unknown selection key {key!r}; choose from {', '.join(SELECT_KEYS)}")
            parsed = _parse_value(key, value)
            if parsed not in terms.setdefault(key, []):
                terms[key].append(parsed)
        return cls(
            terms=tuple((k, tuple(v)) for k, v in terms.items()),
            prefixes=tuple(dict.fromkeys(prefixes)),
            text=text,
        )

    def __and__(self, other: Selection) -> Selection:
        """Runs matching both selections (a key on both sides must hold on both)."""
        if other.empty:
            return self
        if self.empty:
            return other
        text = " & ".join(t for t in (self.text, other.text) if t)
        return Selection(self.terms, self.prefixes, text, self.also + (other,))

    # ------------------------------------------------------------ SQL
    def where(self) -> tuple[str, list[Any]]:
        """``(SQL boolean expression, parameters)`` for ``WHERE``; ``("TRUE", [])`` when empty.

        Only validated, quoted column names are interpolated; every value is a ``?``.
        """
        clauses: list[str] = []
        params: list[Any] = []
        for key, values in self.terms:
            col = _quote_ident(key)
            sql_type = _SQL_TYPE[_kind(key)]
            alts: list[str] = []
            for value in values:
                if value is None:
                    alts.append(f"{col} IS NULL")
                elif key == "run_id":
                    alts.append(f"starts_with({col}, CAST(? AS VARCHAR))")
                    params.append(value)
                else:
                    alts.append(f"{col} = CAST(? AS {sql_type})")
                    params.append(value)
            clauses.append("(" + " OR ".join(alts) + ")")
        if self.prefixes:
            alts = []
            for prefix in self.prefixes:
                alts.append("starts_with(run_id, CAST(? AS VARCHAR))")
                params.append(prefix)
            clauses.append("(" + " OR ".join(alts) + ")")
        for other in self.also:
            sql, more = other.where()
            clauses.append(f"({sql})")
            params.extend(more)
        return (" AND ".join(clauses) if clauses else "TRUE"), params

    @property
    def empty(self) -> bool:
        return not self.terms and not self.prefixes and all(o.empty for o in self.also)

    def all_prefixes(self) -> tuple[str, ...]:
        """The bare run id prefixes here and in every ``also`` part."""
        out = list(self.prefixes)
        for other in self.also:
            out.extend(other.all_prefixes())
        return tuple(dict.fromkeys(out))

    def __str__(self) -> str:
        return self.text or "all runs"


def parse_selection(value: str | Mapping[str, Any] | Selection | None) -> Selection:
    """A :class:`Selection` from a string, a mapping, a Selection or None (every run)."""
    if isinstance(value, Selection):
        return value
    if isinstance(value, Mapping):
        return Selection.from_mapping(value)
    return Selection.parse(value)


def check_prefixes(con: Any, selection: Selection, table: str = "runs") -> None:
    """``ValueError`` (one line) when a bare run id prefix of ``selection`` matches no run
    or more than one (as ``vaebench show`` does); ``table`` is a trusted name."""
    for prefix in selection.all_prefixes():
        rows = con.execute(
            f"SELECT run_id FROM {table} WHERE starts_with(run_id, CAST(? AS VARCHAR)) ORDER BY run_id LIMIT 6",
            [prefix],
        ).fetchall()
        if not rows:
            raise ValueError(f"no run matches {prefix!r}")
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise ValueError(f"{prefix!r} matches several runs ({shown}); give more characters")


#: Columns :func:`fetch_runs` returns besides ``metrics`` (a dict).
RUN_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(("run_id", "status", *GROUPABLE_COLUMNS, "dataset_digest", "metric_params"))
)


def fetch_runs(
    con: Any, selection: Selection, table: str = "runs", extra: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The runs matching ``selection`` (any status), ordered by run id, as dicts.

    Each dict holds :data:`RUN_COLUMNS`, ``metrics`` (a dict, ``{}`` when the
    record has none) and the ``extra`` record columns asked for (map columns
    such as ``artifacts`` as dicts, ``{}`` when unset). ``table`` is a trusted
    name, never user input; ``extra`` names are checked against the record schema.
    """
    import pyarrow as pa

    more = [c for c in dict.fromkeys(extra) if c not in RUN_COLUMNS and c != "metrics"]
    for name in more:
        if name not in RECORD_SCHEMA.names:
            raise ValueError(f"unknown record column {name!r}")
    maps = ["metrics", *(c for c in more if pa.types.is_map(RECORD_SCHEMA.field(c).type))]
    plain = [*RUN_COLUMNS, *(c for c in more if c not in maps)]
    where, params = selection.where()
    cols = ", ".join(_quote_ident(c) for c in plain)
    map_cols = ", ".join(
        f"coalesce(map_keys({_quote_ident(c)}), []), coalesce(map_values({_quote_ident(c)}), [])" for c in maps
    )
    sql = f"SELECT {cols}, {map_cols} FROM {table} WHERE {where} ORDER BY run_id"
    out: list[dict[str, Any]] = []
    for row in con.execute(sql, params).fetchall():
        record = dict(zip(plain, row[: len(plain)]))
        rest = row[len(plain):]
        for i, name in enumerate(maps):
            record[name] = dict(zip(rest[2 * i], rest[2 * i + 1]))
        out.append(record)
    return out
