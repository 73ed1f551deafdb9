"""MkDocs hooks: benchmark tables and API member lists, filled in when the site is built.

**Benchmark tables.** A page line of the form::

    <!-- results: table1_ml100k.md | Comparison with the paper -->

is replaced by the body of the first section of ``benchmarks/results/table1_ml100k.md`` whose
heading starts with ``Comparison with the paper`` (up to the next heading of the same or a higher
level; sub-headings are kept, demoted below the page's own), followed by a line naming the file.
A missing file or heading is a build warning, so ``mkdocs build --strict`` fails instead of
showing stale numbers.

**API reference.** A page line of the form::

    <!-- api: bayesmf.diagnostics -->

becomes the package's docstring followed by one mkdocstrings block per name of its runtime
``__all__``, pointing at the module that defines it and grouped by that module. The packages
resolve their names lazily (PEP 562), which static analysis cannot follow; importing the
package here keeps the reference equal to what ``from bayesmf.diagnostics import *`` gives.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.results")

RESULTS = Path("benchmarks") / "results"
_DIRECTIVE = re.compile(r"^<!--\s*results:\s*(?P<file>[\w.\-]+)\s*\|\s*(?P<heading>.+?)\s*-->\s*$",
                        re.M)
_API = re.compile(r"^<!--\s*api:\s*(?P<module>[\w.]+)\s*-->\s*$", re.M)
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def section(text: str, heading: str) -> str | None:
    """The body under the first heading that starts with ``heading`` (``None`` if absent)."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and m.group(2).strip().startswith(heading):
            level = len(m.group(1))
            body: list[str] = []
            for rest in lines[start + 1:]:
                h = _HEADING.match(rest)
                if h and len(h.group(1)) <= level:
                    break
                if h:  # keep sub-headings, one level below the including page's sections
                    rest = "#" * min(6, len(h.group(1)) - level + 2) + " " + h.group(2)
                body.append(rest)
            return "\n".join(body).strip()
    return None


def api_members(package: str) -> str:
    """mkdocstrings blocks for ``package``: its docstring, then its public names by module."""
    mod = importlib.import_module(package)
    by_module: dict[str, list[str]] = {}
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        home = getattr(obj, "__module__", None) if callable(obj) else None
        if inspect.ismodule(obj):
            home, name = obj.__name__.rpartition(".")[0], obj.__name__.rpartition(".")[2]
        by_module.setdefault(home if home and home.startswith(package) else package, []).append(
            name
        )
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false"]
    for home, names in by_module.items():
        blocks.append(f"## `{home}`")
        blocks += [
            f"::: {home}.{name}\n    options:\n      heading_level: 3\n"
            "      show_root_full_path: false"
            for name in names
        ]
    return "\n\n".join(blocks) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the ``<!-- results: FILE | HEADING -->`` and ``<!-- api: PACKAGE -->`` lines."""
    root = Path(config["config_file_path"]).parent

    def include(m: re.Match[str]) -> str:
        name, heading = m.group("file"), m.group("heading")
        path = root / RESULTS / name
        if not path.is_file():
            log.warning("%s: %s not found", page.file.src_path, path)
            return f"*(results file `{RESULTS / name}` not found)*"
        body = section(path.read_text(encoding="utf-8"), heading)
        if body is None:
            log.warning("%s: no section '%s' in %s", page.file.src_path, heading, path)
            return f"*(no section '{heading}' in `{RESULTS / name}`)*"
        return f"{body}\n\n*From `{RESULTS / name}`, section \"{heading}\".*\n"

    markdown = _API.sub(lambda m: api_members(m.group("module")), markdown)
    return _DIRECTIVE.sub(include, markdown)
