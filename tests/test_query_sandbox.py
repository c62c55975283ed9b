"""`vaebench query`: the read-only sandbox against every probe, and its time / memory bounds.

The probes that the sandbox was first tried against (COPY, CREATE/DROP/DELETE/INSERT,
read_csv / read_text / glob / read_parquet, INSTALL, LOAD, ATTACH, EXPORT, SET, PRAGMA,
two statements) are in ``test_results_commands.py::test_query_cannot_write_or_read_files``;
:data:`PROBES` here holds the others tried since (issue 20), so that every one of them
keeps holding. Each probe is tried twice: through the real CLI (exit 2, one line,
nothing written, registry unchanged) and, where it is something the lock itself must
refuse, on the locked connection directly, without the single-SELECT check in front.

Then the bounds: a cross join stopped by ``--timeout``, a sort stopped by
``--memory-limit``, the defaults applied, and Ctrl-C (SIGINT) to a real ``vaebench
query`` process stopping a query that would otherwise run for hours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from test_results_commands import snapshot, write_runs
from vaebench.registry import readonly

#: (probe, does the locked connection itself refuse it?). ``{out}``: an empty folder
#: (also the working directory), ``{reg}``: the registry.
PROBES: list[tuple[str, bool]] = [
    # COPY, also wrapped around a CTE, and COPY ... FROM
    ("COPY runs TO '{out}/x.json' (FORMAT json)", True),
    ("COPY (FROM runs) TO '{out}/x.csv'", True),
    ("COPY runs FROM '/etc/passwd'", True),
    ("COPY (WITH r AS (SELECT * FROM runs) SELECT * FROM r) TO '{out}/cte.csv'", True),
    ("WITH r AS (SELECT 1) COPY runs TO '{out}/cte2.csv'", True),
    # ATTACH
    ("ATTACH ':memory:' AS m", False),
    ("ATTACH '/etc/passwd' AS p (READ_ONLY)", True),
    # INSTALL / LOAD
    ("INSTALL sqlite", True),
    ("FORCE INSTALL httpfs", True),
    ("LOAD '{out}/x.duckdb_extension'", True),
    # file and URL reads: /etc, /proc, the registry's own files
    ("SELECT * FROM read_csv_auto('/etc/passwd')", True),
    ("SELECT * FROM read_text('/etc/passwd')", True),
    ("SELECT * FROM read_blob('/etc/passwd')", True),
    ("SELECT * FROM glob('/etc/*')", True),
    ("SELECT * FROM read_json_auto('/etc/hostname')", True),
    ("SELECT * FROM '/etc/passwd'", True),
    ("SELECT * FROM read_csv(['/etc/passwd', '/etc/group'])", True),
    ("SELECT * FROM sniff_csv('/etc/passwd')", True),
    ("SELECT * FROM read_csv('/proc/self/environ')", True),
    ("SELECT * FROM parquet_metadata('{reg}/runs/*.parquet')", True),
    ("SELECT * FROM read_json('https://example.com/x.json')", True),
    ("SELECT * FROM read_text('/etc/hostname') UNION ALL SELECT * FROM read_text('/etc/passwd')", True),
    ("SUMMARIZE SELECT * FROM read_text('/etc/passwd')", True),
    ("DESCRIBE SELECT * FROM read_text('/etc/passwd')", True),
    ("SELECT getenv('HOME')", True),
    # SET / RESET / PRAGMA / USE: no setting changes once locked (memory and time limits included)
    ("SET lock_configuration = false", True),
    ("RESET enable_external_access", True),
    ("SET memory_limit = '100GB'", True),
    ("SET temp_directory = '{out}'", True),
    ("SET GLOBAL enable_external_access = true", True),
    ("PRAGMA profiling_output = '{out}/prof.json'", True),
    ("PRAGMA enable_profiling = 'json'", True),
    ("USE memory", False),
    # several statements
    ("SELECT 1; DROP TABLE runs", False),
    ("SELECT 1;; ATTACH '{out}/m.db'", True),
    ("SELECT 1; SET enable_external_access = true; SELECT * FROM read_csv('/etc/passwd')", True),
    # EXPORT / IMPORT
    ("EXPORT DATABASE '{out}/dump' (FORMAT parquet)", True),
    ("IMPORT DATABASE '/etc'", True),
    # query() / query_table(): SQL inside a SELECT
    ("SELECT * FROM query('COPY runs TO ''{out}/q.csv''')", True),
    ("SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", True),
    ("SELECT * FROM query('SET enable_external_access = true')", True),
    ("SELECT * FROM query_table('/etc/passwd')", True),
    # secrets, temporary objects, maintenance statements
    ("CREATE SECRET (TYPE s3, KEY_ID 'x', SECRET 'y')", True),
    ("CREATE TEMP TABLE t AS SELECT 1", False),
    ("CHECKPOINT", False),
    ("CALL pragma_version()", False),
]

#: A cross join of 10^16 rows: hours of work, no memory (an aggregate).
ENDLESS = "SELECT sum(a.range * b.range) AS s FROM range(100000000) a, range(100000000) b"


def one_line_error(stderr: str) -> str:
    err = stderr.strip()
    assert err.startswith("error:"), err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    reg = tmp_path / "reg"
    write_runs(reg, "mig", [0.1, 0.2])
    return reg


@pytest.mark.parametrize("probe", [p for p, _ in PROBES])
def test_query_refuses_probe(tmp_path: Path, registry: Path, cli, probe: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(registry)
    cwd = os.getcwd()
    os.chdir(out)
    try:
        res = cli("query", probe.format(out=out, reg=registry), "--registry", registry)
    finally:
        os.chdir(cwd)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    one_line_error(res.stderr)
    assert res.stdout == ""
    assert list(out.iterdir()) == []
    assert snapshot(registry) == before


@pytest.mark.parametrize("probe", [p for p, locked in PROBES if locked])
def test_locked_connection_refuses_probe(tmp_path: Path, registry: Path, probe: str) -> None:
    """Without the single-SELECT check in front, the locked connection alone refuses it."""
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(registry)
    con, _ = readonly.open_readonly(registry, "1GB")
    try:
        with pytest.raises(duckdb.Error):
            con.execute(probe.format(out=out, reg=registry)).fetchall()
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('enable_external_access', 'lock_configuration', 'memory_limit', 'temp_directory')"
        ).fetchall())
        assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                            "memory_limit": "953.6 MiB", "temp_directory": ""}
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    finally:
        con.close()
    assert list(out.iterdir()) == []
    assert snapshot(registry) == before


# --------------------------------------------------------------------------- limits


def test_query_timeout_stops_a_cross_join(registry: Path, cli) -> None:
    t0 = time.monotonic()
    res = cli("query", ENDLESS, "--registry", registry, "--timeout", "1")
    elapsed = time.monotonic() - t0
    assert res.exit_code == 2, (res.stdout, res.stderr)
    err = one_line_error(res.stderr)
    assert "after 1 s, its time limit" in err and "--timeout" in err
    assert res.stdout == ""
    assert elapsed < 60  # a hang detector, not a speed test


def test_query_memory_limit_stops_a_big_sort(registry: Path, cli) -> None:
    res = cli("query", "SELECT range AS r FROM range(30000000) ORDER BY random()", "--registry", registry,
              "--memory-limit", "64MB", "--timeout", "300")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    err = one_line_error(res.stderr)
    assert "more memory than its limit of 64MB" in err and "--memory-limit" in err
    assert res.stdout == ""


def test_query_default_and_given_limits_are_applied(registry: Path, cli) -> None:
    sql = "SELECT current_setting('memory_limit') AS m, count(*) AS n FROM runs"
    res = cli("query", sql, "--registry", registry, "--json")
    assert res.exit_code == 0, res.stderr
    # DuckDB shows the limit in binary units: 2 GB = 1.8 GiB (its own default: 80% of RAM)
    assert readonly.DEFAULT_MEMORY_LIMIT == "2GB"
    assert json.loads(res.stdout) == [{"m": "1.8 GiB", "n": 2}]
    res = cli("query", sql, "--registry", registry, "--json", "--memory-limit", "512MiB", "--timeout", "5")
    assert json.loads(res.stdout) == [{"m": "512.0 MiB", "n": 2}]
    help_text = cli("query", "--help").stdout
    assert f"[default: {readonly.DEFAULT_TIMEOUT:g}]" in help_text
    assert f"[default: {readonly.DEFAULT_MEMORY_LIMIT}]" in help_text


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--timeout", "0", "--timeout: 0.0 is not a number of seconds above zero"),
        ("--timeout", "-1", "--timeout: -1.0 is not"),
        ("--timeout", "nan", "--timeout: nan is not"),
        ("--timeout", "inf", "--timeout: inf is not"),
        ("--memory-limit", "abc", "--memory-limit: 'abc' is not a size"),
        ("--memory-limit", "0GB", "--memory-limit: '0GB' is not a size above zero"),
        ("--memory-limit", "-5GB", "--memory-limit: '-5GB' is not a size"),
        ("--memory-limit", "2XB", "--memory-limit: '2XB' is not a size"),
        ("--memory-limit", "2GB'; SET lock_configuration=false; --", "is not a size"),
    ],
)
def test_query_bad_limits(registry: Path, cli, option: str, value: str, message: str) -> None:
    res = cli("query", "SELECT 1", "--registry", registry, option, value)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert message in one_line_error(res.stderr)
    assert res.stdout == ""


def test_parse_size() -> None:
    assert readonly.parse_size("2GB") == 2 * 10**9
    assert readonly.parse_size(" 1.5 gib ") == 3 * 2**29
    assert readonly.parse_size("512MiB") == 512 * 2**20
    assert readonly.parse_size("1000") == 1000 and readonly.parse_size(1000) == 1000
    for bad in ("", "GB", "1e3GB", "1,5GB", True, 0, "0.1B"):
        with pytest.raises(ValueError):
            readonly.parse_size(bad)


def _default_sigint() -> None:
    """In the child before exec: SIGINT handled by default and unblocked."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_state(pid: int) -> str:
    """The SigBlk / SigIgn / SigCgt lines of ``pid`` (for a failure's message)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return str(exc)
    return ", ".join(line.replace("\t", " ") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _other_threads_cpu(pid: int) -> float:
    """CPU seconds used by every thread of ``pid`` but its main one."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name == str(pid):
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_stops_a_running_query(registry: Path) -> None:
    """A real ``vaebench query`` process: SIGINT while DuckDB computes -> one line, exit 130, promptly."""
    code = "import sys; from vaebench.harness.cli import main; sys.argv[0] = 'vaebench'; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "query", ENDLESS, "--registry", str(registry), "--timeout", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As a shell starts a command: SIGINT at its default and not blocked, whatever the
        # test process's own state is (a pytest-xdist worker that ran other tests in-process
        # may hand its children a blocked or ignored SIGINT), in a session of its own.
        preexec_fn=_default_sigint, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        # The query is running once threads other than the main one (the query's and
        # DuckDB's) have done a second of work: opening a two-record registry takes ms.
        while _other_threads_cpu(proc.pid) < 1.0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the query never started"
            time.sleep(0.1)
        state = _signal_state(proc.pid)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 60 s after SIGINT; its signal state then: {state}") from None
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "query interrupted (Ctrl-C)" in one_line_error(stderr)
    assert stdout == ""
    assert elapsed < 30  # a hang detector: without the fix it runs for hours


def test_registry_connections_draw_no_progress_bar(registry: Path) -> None:
    """DuckDB draws a progress bar on stdout for queries over ~2 s; it would mix into
    `query --json` and leaderboard output (seen in the Ctrl-C test under load)."""
    con, _ = readonly.open_readonly(registry)
    try:
        assert con.execute("SELECT current_setting('enable_progress_bar')").fetchone() == (False,)
    finally:
        con.close()
