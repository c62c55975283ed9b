"""``vaebench plugins new NAME``: the package it writes names its hooks module in the
``vaebench`` entry point and passes its own tests (the ``vaebench.testing`` kit) unchanged,
run in a fresh interpreter with the generated ``src`` on the path (not installed: the
shared environment is left alone). Bad names and non-empty targets exit 2, writing nothing.

``examples/vaebench-plugin-example`` is what ``plugins new plugin-example`` writes, byte for
byte (regenerate it with ``vaebench plugins new plugin-example --dir
examples/vaebench-plugin-example --force``); ``--force`` overwrites only the template's files.

Cost: about 5 s (the generated package's 4 tests in a subprocess); the rest well under 1 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import vaebench

from vaebench.harness.scaffold import names, new_plugin

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "vaebench-plugin-example"
#: Written by installing, building or testing the example, never by the template.
NOT_SOURCE = {"__pycache__", ".pytest_cache", "build", "dist"}


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative POSIX path -> bytes), build and cache output aside."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not (set(p.relative_to(root).parts) & NOT_SOURCE)
            and not any(part.endswith(".egg-info") for part in p.relative_to(root).parts)}


def test_the_example_is_exactly_what_plugins_new_writes(tmp_path):
    fresh = _files(new_plugin("plugin-example", tmp_path / "example"))
    example = _files(EXAMPLE)
    assert sorted(example) == sorted(fresh), ("examples/vaebench-plugin-example has other files than the template "
                                              "writes; regenerate it (see this module's docstring)")
    drifted = [rel for rel in fresh if fresh[rel] != example[rel]]
    assert not drifted, (f"{drifted} differ from the template; regenerate: vaebench plugins new plugin-example "
                         f"--dir examples/vaebench-plugin-example --force")


def test_force_overwrites_the_template_files_and_keeps_the_others(cli, tmp_path):
    target = tmp_path / "vaebench-gauss"
    assert cli("plugins", "new", "gauss", "--dir", target).exit_code == 0
    model = target / "src" / "vaebench_gauss" / "model.py"
    written = model.read_text()
    model.write_text("edited")
    (target / "NOTES.md").write_text("mine")
    result = cli("plugins", "new", "gauss", "--dir", target, "--force")
    assert result.exit_code == 0, result.output
    assert model.read_text() == written
    assert (target / "NOTES.md").read_text() == "mine"


def test_generated_package_passes_its_own_tests(cli, tmp_path):
    target = tmp_path / "vaebench-gauss"
    result = cli("plugins", "new", "gauss", "--dir", target)
    assert result.exit_code == 0, result.output
    assert "pip install -e '.[test]'" in result.output

    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["name"] == "vaebench-gauss"
    entry = project["project"]["entry-points"]["vaebench"]
    assert entry == {"gauss": "vaebench_gauss.plugin"}
    assert (target / "src" / "vaebench_gauss" / "plugin.py").is_file()

    env = dict(os.environ)
    # the generated package's src, then this vaebench's (absolute: the subprocess runs elsewhere)
    env["PYTHONPATH"] = os.pathsep.join([str(target / "src"), str(Path(vaebench.__file__).resolve().parents[1])])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=target, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed" in proc.stdout


def test_bad_name_and_non_empty_directory_exit_2_and_write_nothing(cli, tmp_path):
    result = cli("plugins", "new", "My Plugin", "--dir", tmp_path / "x")
    assert result.exit_code == 2 and "must be lower case" in result.output
    assert not (tmp_path / "x").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    result = cli("plugins", "new", "gauss", "--dir", taken)
    assert result.exit_code == 2 and "not empty" in result.output
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


def test_names_strip_the_vaebench_prefix():
    assert names("vaebench-my-thing")["module"] == "vaebench_my_thing"
    assert names("gauss")["model"] == "gauss_vae"
