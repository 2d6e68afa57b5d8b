"""The documentation site: what it must hold, and (slow) its strict build with every tutorial run.

The fast tests read ``mkdocs.yml``, the tutorials and the generators of ``docs/_gen/pages.py``;
``test_the_site_builds_strictly`` runs ``mkdocs build --strict``, which executes the six
tutorials, and then reads the built pages.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jaxmlp
from jaxmlp import data
from jaxmlp.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))

_spec = importlib.util.spec_from_file_location("docs_pages", DOCS / "_gen" / "pages.py")
pages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pages)


def _required(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _need(module: str) -> None:
    """Skip without the docs extra, or fail where CI requires it (``JAXMLP_REQUIRE_DOCS=1``)."""
    if importlib.util.find_spec(module) is None:
        reason = f"{module} is not installed (pip install -e '.[docs]')"
        if _required("JAXMLP_REQUIRE_DOCS"):
            pytest.fail(reason + " (JAXMLP_REQUIRE_DOCS=1)")
        pytest.skip(reason)


def mkdocs_config() -> dict:
    _need("yaml")
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # mkdocs' own tags: ``!ENV [NAME, default]`` reads as its default here.
    Loader.add_constructor("!ENV", lambda loader, node: loader.construct_sequence(node)[-1])
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def nav_entries(nav) -> list[str]:
    """Every page path of a mkdocs nav (its leaves), in order."""
    found = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found += nav_entries(value)
        else:
            found.append(value)
    return found


def generated_pages() -> set[str]:
    return {"cli/reference.md", *(page for _, page in pages.COPIED_PAGES)}


# -- the configuration and the hand-written pages


def test_the_build_is_strict_and_executes_every_tutorial():
    config = mkdocs_config()
    assert config["strict"] is True
    assert all(config["validation"][key] == "warn" for key in ("omitted_files", "anchors"))
    jupyter = next(p["mkdocs-jupyter"] for p in config["plugins"] if "mkdocs-jupyter" in p)
    assert jupyter["execute"] is True and jupyter["allow_errors"] is False
    assert jupyter["cache"] is False  # JAXMLP_DOCS_CACHE unset: every build runs every cell


def test_every_tutorial_is_in_the_nav_and_the_tutorials_table():
    entries = nav_entries(mkdocs_config()["nav"])
    table = (DOCS / "tutorials" / "index.md").read_text()
    assert len(TUTORIALS) >= 6
    for path in TUTORIALS:
        assert f"tutorials/{path.name}" in entries, f"{path.name} is not in mkdocs.yml's nav"
        assert f"]({path.name})" in table, f"{path.name} is not linked from tutorials/index.md"


def test_every_nav_page_exists_or_is_generated():
    for entry in nav_entries(mkdocs_config()["nav"]):
        if entry.endswith("/"):  # a section whose nav is generated (api/SUMMARY.md)
            assert entry == "api/"
            continue
        assert (DOCS / entry).is_file() or entry in generated_pages(), entry


def test_no_page_of_docs_is_left_out_of_the_nav():
    entries = set(nav_entries(mkdocs_config()["nav"]))
    for path in DOCS.rglob("*"):
        relative = path.relative_to(DOCS).as_posix()
        if path.suffix in (".md", ".py") and not relative.startswith(("_gen/", "api/")):
            assert relative in entries, f"docs/{relative} is not in mkdocs.yml's nav"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_a_titled_notebook_with_plots(path):
    _need("jupytext")
    import jupytext

    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and notebook.cells[0].source.startswith("# ")
    assert kinds.count("code") >= 3 and kinds.count("markdown") >= 3
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "plt.show()" in code
    assert "data.load(" in code  # the datasets through jaxmlp.data, as CI seeds them
    # mkdocs checks and rewrites the links of Markdown pages, not those inside a notebook: a
    # link to another page would be left pointing at a .md file that the site does not have.
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert not re.findall(r"\]\((?!https?://|#)[^)]*\)", text), "link pages by name, in words"


# -- the generated pages


def test_the_command_reference_has_every_subcommand_and_option():
    reference = pages.cli_reference()
    parser = build_parser()
    subcommands = pages.subcommands(parser)
    assert set(subcommands) >= {"train", "evaluate", "predict", "export", "summary", "data"}
    for name, sub in subcommands.items():
        section = reference.split(f"\n## jaxmlp {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", section), (
                    f"jaxmlp {name} {option} is missing from the command reference"
                )
    assert reference.count("```text") == len(subcommands) + 1


# Flags of other programs that the manual pages mention: tensorboard, ruff, the experiments'
# and benchmarks' own commands, XLA_FLAGS.
OTHER_PROGRAMS_FLAGS = {"--logdir", "--check", "--only", "--part", "--quick", "--task", "--xla"}


@pytest.mark.parametrize(
    "page",
    ["cli/index.md", "getting-started.md", *(f"how-to/{p.name}" for p in DOCS.glob("how-to/*.md"))],
)
def test_every_flag_a_manual_page_names_is_an_option_of_the_command(page):
    options = {
        o
        for sub in pages.subcommands(build_parser()).values()
        for a in sub._actions
        for o in a.option_strings
    }
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", (DOCS / page).read_text()))
    assert named - options - OTHER_PROGRAMS_FLAGS == set()


def test_every_public_module_has_an_api_page_and_private_ones_none():
    modules = pages.public_modules()
    assert {"jaxmlp", "jaxmlp.data", "jaxmlp.multi", "jaxmlp.cli.parser"} <= set(modules)
    assert not any("._" in m or m.endswith("__main__") for m in modules)
    for name in jaxmlp._SUBMODULES:
        assert f"jaxmlp.{name}" in modules
    summary = pages.api_summary()
    for module in modules:
        assert f"]({module}.md)" in summary
        assert f"::: {module}" in pages.api_page(module)


def test_every_name_of_jaxmlp_all_is_on_the_api_page():
    page = pages.api_page("jaxmlp")
    members = re.findall(r"^        - (\w+)$", page, flags=re.M)
    shadowed = re.findall(r"^::: jaxmlp\.(\w+)\.\1$", page, flags=re.M)
    for name in jaxmlp.__all__:
        if name in jaxmlp._SUBMODULES:
            assert f"jaxmlp.{name}" in pages.public_modules()
        else:
            assert (name in members) != (name in shadowed), name
    assert shadowed == ["backprop"]  # the function jaxmlp.backprop, beside its module


def test_links_to_repository_files_become_code_and_others_stay():
    text = "see [results/](results/), [the site](https://x.org) and [below](#notes), ![i](a.png)"
    assert pages.site_local(text) == (
        "see `results/`, [the site](https://x.org) and [below](#notes), ![i](a.png)"
    )


def test_the_package_is_typed():
    assert (ROOT / "jaxmlp" / "py.typed").is_file()


# -- the build itself


def _site_ids(site: Path) -> set[str]:
    ids = set()
    for html in (site / "api").glob("*/index.html"):
        ids |= set(re.findall(r'id="(jaxmlp[\w.]*)"', html.read_text()))
    return ids


@pytest.mark.slow
@pytest.mark.data
def test_the_site_builds_strictly(tmp_path):
    _need("mkdocs")
    for name in ("mnist", "fashion_mnist"):  # the tutorials read both
        missing = [s.filename for s in data.status(name) if s.state != "verified"]
        if missing:
            reason = f"{name} files not verified: {missing}"
            pytest.fail(reason) if _required("JAXMLP_REQUIRE_DATA") else pytest.skip(reason)
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true")
    env.pop("JAXMLP_DOCS_CACHE", None)
    start = time.perf_counter()
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    print(f"mkdocs build --strict: {seconds:.1f} s")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-6000:]

    for path in TUTORIALS:
        html = (site / "tutorials" / path.stem / "index.html").read_text()
        assert 'src="data:image/png' in html, f"{path.stem}: no plot shown inline"
        assert "Traceback" not in html, f"{path.stem}: a cell printed a traceback"

    ids = _site_ids(site)
    for name in jaxmlp.__all__:
        obj = getattr(jaxmlp, name)
        paths = {f"jaxmlp.{name}", f"{getattr(obj, '__module__', '')}.{name}"}
        assert paths & ids, f"jaxmlp.{name} is not rendered on any API page"
    for module in pages.public_modules():
        assert module in ids, f"{module} has no API page"

    reference = (site / "cli" / "reference" / "index.html").read_text()
    for name in pages.subcommands(build_parser()):
        assert f'id="jaxmlp-{name}"' in reference
    for page in ("results/experiments", "results/benchmarks", "changelog", "contributing"):
        assert (site / page / "index.html").is_file()
