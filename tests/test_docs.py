"""The documentation site's sources: pages, benchmark-table includes, API lists, outputs shown.

The full build (``make docs``: figures, then ``mkdocs build --strict``) runs in CI; these tests
check, without MkDocs, what makes that build fail or show wrong things: a page missing from
the navigation, a benchmark section that no longer exists, an API list that names nothing, a
code block whose output differs from the output the page shows.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_hooks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") : text.index("\nplugins:")]
    return re.findall(r":\s+([\w/\-]+\.md)\s*$", nav, re.M)


def test_every_page_is_in_the_navigation_and_exists():
    nav = _nav_pages()
    assert len(nav) >= 14
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert set(nav) == on_disk
    assert len(set(nav)) == len(nav)


def test_section_takes_the_body_up_to_the_next_heading_of_the_same_level():
    text = "# t\n\n## A one\n\nx\n\n### sub\n\ny\n\n## B\n\nz\n"
    hooks = _hooks()
    body = hooks.section(text, "A")
    assert body == "x\n\n### sub\n\ny"
    assert hooks.section(text, "B") == "z"
    assert hooks.section(text, "C") is None


def test_every_results_include_names_an_existing_section_with_a_table():
    hooks = _hooks()
    found = 0
    for page in DOCS.rglob("*.md"):
        for m in hooks._DIRECTIVE.finditer(page.read_text()):
            path = ROOT / hooks.RESULTS / m.group("file")
            assert path.is_file(), f"{page}: {path} missing"
            body = hooks.section(path.read_text(), m.group("heading"))
            assert body is not None, f"{page}: no '{m.group('heading')}' in {path}"
            assert "|---|" in body, f"{page}: section '{m.group('heading')}' has no table"
            found += 1
    assert found >= 6  # every model family shows its benchmark


@pytest.mark.parametrize("package", ["data", "models", "inference", "diagnostics"])
def test_api_lists_name_every_public_object_where_it_is_defined(package):
    hooks = _hooks()
    package = f"bayesmf.{package}"
    targets = re.findall(r"^::: (\S+)", hooks.api_members(package), re.M)
    assert targets[0] == package
    members = importlib.import_module(package)
    assert len(targets) == 1 + len(members.__all__)
    for target in targets[1:]:
        module, _, name = target.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        assert obj is getattr(members, name), target


def test_snippet_includes_exist():
    for page in DOCS.rglob("*.md"):
        for name in re.findall(r'--8<-- "([^"]+)"', page.read_text()):
            assert (ROOT / name).is_file(), f"{page}: {name} missing"


#: Per page, the substitutions that make its code run in seconds (fewer epochs, draws, steps).
#: Each must match the page's code: when a page changes, this table is updated with it.
SMALL: dict[str, list[tuple[str, str]]] = {
    "getting-started.md": [],  # seconds as it is; its outputs are compared exactly
    "arviz.md": [
        ("epochs=40", "epochs=5"),
        ("arange(0, len(train), 9)", "arange(0, len(train), 90)"),
        ("num_samples=100, burn_in=50", "num_samples=20, burn_in=10"),
        ("num_samples=200)", "num_samples=30)"),
    ],
    "models/bayesian-mf.md": [
        ("epochs=40", "epochs=3"),
        ("num_samples=100, burn_in=50", "num_samples=20, burn_in=10"),
        ("nnmf, train, progress=False)", "nnmf, train, epochs=2, kl_warmup=1, progress=False)"),
    ],
    "models/block-model.md": [
        ("n_restarts=3,", "n_restarts=1, epochs=20,"),
        ("epochs=3000, batch_size=None, restarts=3", "epochs=20, batch_size=None, restarts=1"),
        ("num_samples=300, warmup=300, num_chains=3, max_tree_depth=7",
         "num_samples=10, warmup=10, num_chains=1, max_tree_depth=3"),
    ],
    "models/meta-learning.md": [
        ("steps=300", "steps=4"),
        ("eval_every=100", "eval_every=2"),
        ("val_episodes=64", "val_episodes=4"),
    ],
    "models/deep-mf.md": [("epochs=20", "epochs=1")],
    "models/classical.md": [],  # a few seconds as it is; its output is compared exactly
    "../README.md": [  # the README's tour is run too, so it cannot drift from the code
        ("num_samples=150, burn_in=50", "num_samples=100, burn_in=20"),
        ("epochs=100, lr=0.1,", "epochs=2, lr=0.1,"),
        ("n_restarts=3, seed=0", "n_restarts=1, epochs=20, seed=0"),
        ("epochs=3000, batch_size=None", "epochs=30, batch_size=None"),
    ],
}

_BLOCK = re.compile(r"^```(?P<lang>python|text)\n(?P<body>.*?)^```$", re.M | re.S)
_NUMBER = re.compile(r"-?\d+\.\d+|-?\d+")


def _blocks(page: Path) -> list[tuple[str, str | None]]:
    """(python code, the text block right after it or None) for the page's top-level blocks."""
    found = [(m.group("lang"), m.group("body"), m.end()) for m in _BLOCK.finditer(page.read_text())]
    text = page.read_text()
    out: list[tuple[str, str | None]] = []
    for k, (lang, body, end) in enumerate(found):
        if lang != "python" or "--8<--" in body:
            continue
        nxt = found[k + 1] if k + 1 < len(found) else None
        follows = nxt is not None and nxt[0] == "text" and text[end:].lstrip().startswith("```text")
        out.append((body, nxt[1] if follows else None))
    return out


def _same_output(printed: str, shown: str, exact: bool) -> bool:
    """Equal text; numbers equal (``exact``) or within 0.03 or 5% (a smaller run's numbers)."""
    if _NUMBER.sub("#", printed).split() != _NUMBER.sub("#", shown).split():
        return False
    pairs = zip(_NUMBER.findall(printed), _NUMBER.findall(shown), strict=True)
    if exact:
        return all(a == b for a, b in pairs)
    return all(abs(float(a) - float(b)) <= max(0.03, 0.05 * abs(float(b))) for a, b in pairs)


def test_same_output_compares_text_exactly_and_numbers_within_tolerance():
    assert _same_output("RMSE 0.890\n", "RMSE 0.890", exact=True)
    assert not _same_output("RMSE 0.891", "RMSE 0.890", exact=True)
    assert _same_output("RMSE 0.901", "RMSE 0.890", exact=False)
    assert not _same_output("RMSE 0.990", "RMSE 0.890", exact=False)
    assert not _same_output("MAE 0.890", "RMSE 0.890", exact=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(SMALL))
def test_page_code_runs_and_prints_what_the_page_shows(page, data_dir, tmp_path, monkeypatch):
    """Every python block of the page, in order and with small settings, in one namespace.

    A block followed by a ``text`` block must print that text: exactly while no substitution has
    been made (in this block or an earlier one), with the numbers within a tolerance after.
    """
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(DOCS / page)
    assert blocks, f"{page} has no python block"
    used = dict.fromkeys(range(len(SMALL[page])), False)
    namespace: dict = {"__name__": "__docs__"}
    for code, shown in blocks:
        small = code
        for k, (old, new) in enumerate(SMALL[page]):
            if old in small:
                small, used[k] = small.replace(old, new), True
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(small, f"{page}", "exec"), namespace)
        if shown is not None:
            exact = not any(used.values())  # nothing upstream ran with smaller settings
            assert _same_output(out.getvalue(), shown, exact=exact), (
                f"{page}: the block\n{code}\nprinted\n{out.getvalue()}\nbut the page shows\n{shown}"
            )
    assert all(used.values()), f"{page}: substitutions {SMALL[page]} no longer all match"


def test_getting_started_own_data_block_prints_what_the_page_shows():
    code, shown = next((c, o) for c, o in _blocks(DOCS / "getting-started.md") if "from_data" in c)
    from bayesmf import data

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"data": data})
    assert shown is not None and out.getvalue() == shown
