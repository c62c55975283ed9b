"""``vaebench plugins new NAME``: write a ready plugin package from the templates in
``vaebench/templates/plugin/`` (Jinja2; ``src/package`` becomes the module's directory,
``.j2`` is dropped). The package installs with ``pip install -e`` and passes its own tests
(the :mod:`vaebench.testing` kit) unchanged."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import jinja2

from vaebench.version import __version__

NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
TEMPLATE_PACKAGE_DIR = "package"


class ScaffoldError(ValueError):
    """A name or a target directory that ``plugins new`` cannot use (one line)."""


def names(name: str) -> dict[str, str]:
    """The substitutions for plugin ``name`` (``gauss`` or ``vaebench-gauss``): the
    distribution ``package``, the import ``module``, the ``entry_point`` name and the
    ``model`` / ``metric`` / ``dataset`` it registers."""
    if not NAME.match(name):
        raise ScaffoldError(f"plugin name {name!r} must be lower case letters, digits, '-' or '_', "
                            f"starting with a letter (e.g. gauss)")
    short = name.removeprefix("vaebench-").removeprefix("vaebench_") or name
    slug = short.replace("-", "_")
    return {
        "name": short, "package": f"vaebench-{short}", "module": f"vaebench_{slug}", "entry_point": slug,
        "model": f"{slug}_vae", "metric": f"{slug}_correlation", "dataset": f"{slug}_squares",
        "vaebench_version": __version__,
    }


def template_files() -> list[tuple[str, str]]:
    """``(relative path, template text)`` of every template file."""
    root = resources.files("vaebench") / "templates" / "plugin"
    out: list[tuple[str, str]] = []

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, rel + "/")
            elif child.name.endswith(".j2"):
                out.append((rel, child.read_text(encoding="utf-8")))

    walk(root, "")
    return out


def new_plugin(name: str, directory: Path | str | None = None, force: bool = False) -> Path:
    """Write plugin ``name``'s package into ``directory`` (default ``./vaebench-NAME``);
    returns it. :class:`ScaffoldError` when the name is not usable or ``directory`` exists
    and is not empty (nothing is overwritten) unless ``force``: then the files the
    templates write are overwritten and every other file is left as it is (this is how
    ``examples/vaebench-plugin-example`` is regenerated)."""
    subs = names(name)
    target = Path(directory) if directory is not None else Path.cwd() / subs["package"]
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target} exists and is not a directory; choose another --dir")
    if target.exists() and any(target.iterdir()) and not force:
        raise ScaffoldError(f"{target} exists and is not empty; choose another --dir (or --force to overwrite "
                            f"the files the template writes)")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    rendered = []
    for rel, text in template_files():
        parts = rel.removesuffix(".j2").split("/")
        parts = [subs["module"] if p == TEMPLATE_PACKAGE_DIR and i == 1 and parts[0] == "src" else p
                 for i, p in enumerate(parts)]
        rendered.append(("/".join(parts), env.from_string(text).render(**subs)))
    for rel, text in rendered:
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
