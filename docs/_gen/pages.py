"""Pages generated at build time (run by mkdocs-gen-files), so that they cannot drift.

- ``cli/reference.md``: every subcommand's ``--help``, from ``jaxmlp.cli.parser.build_parser()``;
- ``api/<module>.md``: the docstrings (mkdocstrings) of ``jaxmlp`` and every public submodule,
  and ``api/SUMMARY.md``, their navigation (so a new module gets its page by itself);
- ``results/experiments.md``, ``results/benchmarks.md``, ``changelog.md``, ``contributing.md``:
  the repository's own files, with links that leave the site written as code.

The functions are also imported by ``tests/test_docs.py``.
"""

from __future__ import annotations

import argparse
import pkgutil
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Repository files shown as site pages: (source, page, title of the page).
COPIED_PAGES = (
    ("experiments/README.md", "results/experiments.md"),
    ("benchmarks/README.md", "results/benchmarks.md"),
    ("CHANGELOG.md", "changelog.md"),
    ("CONTRIBUTING.md", "contributing.md"),
)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name, in the order of ``jaxmlp --help``."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def cli_reference() -> str:
    """The command-line manual: ``jaxmlp --help`` and each subcommand's, as argparse prints them."""
    from jaxmlp.cli.parser import build_parser

    parser = build_parser()
    parts = [
        "# Command reference",
        "",
        "Generated at build time from `jaxmlp.cli.parser.build_parser()`: this is exactly what",
        "`jaxmlp --help` and `jaxmlp COMMAND --help` print. The [manual](index.md) explains the",
        "workflow and the files a run writes.",
        "",
        "## jaxmlp",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    for name, sub in subcommands(parser).items():
        parts += ["", f"## jaxmlp {name}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def public_modules() -> list[str]:
    """``jaxmlp`` and every submodule whose dotted path has no private (``_``) part."""
    import jaxmlp

    names = ["jaxmlp"]
    for module in pkgutil.walk_packages(jaxmlp.__path__, "jaxmlp."):
        if not any(part.startswith("_") for part in module.name.split(".")):
            names.append(module.name)
    return sorted(names)


def top_level_members() -> list[str]:
    """The names of ``jaxmlp.__all__`` that are not submodules (those have their own page)."""
    import jaxmlp

    return [name for name in jaxmlp.__all__ if name not in jaxmlp._SUBMODULES]


def shadowed_members() -> list[str]:
    """Names of ``jaxmlp.__all__`` that are also a submodule's name (``jaxmlp.backprop`` is the
    function, re-exported from the module ``jaxmlp.backprop``): griffe resolves ``jaxmlp.NAME``
    to the module, so the page renders them by their defining path instead."""
    modules = set(public_modules())
    return [name for name in top_level_members() if f"jaxmlp.{name}" in modules]


def api_page(module: str) -> str:
    """The mkdocstrings page of one module: ``jaxmlp`` lists ``__all__`` (less the submodules)."""
    lines = [f"# `{module}`", "", f"::: {module}"]
    if module == "jaxmlp":
        shadowed = shadowed_members()
        lines += ["    options:", "      show_submodules: false", "      members:"]
        lines += [f"        - {name}" for name in top_level_members() if name not in shadowed]
        for name in shadowed:
            lines += ["", f"::: jaxmlp.{name}.{name}"]
    return "\n".join(lines) + "\n"


_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def site_local(markdown: str) -> str:
    """Links to repository files (which are not pages of the site) written as code instead."""

    def replace(match: re.Match) -> str:
        text, target = match.groups()
        if target.startswith(("http://", "https://", "mailto:", "#")):
            return match.group(0)
        return text if text.startswith("`") else f"`{text}`"

    return _LINK.sub(replace, markdown)


def copied_page(source: str) -> str:
    return site_local((ROOT / source).read_text(encoding="utf-8"))


def api_summary() -> str:
    """The API section's navigation (mkdocs-literate-nav): the index, then one page per module,
    the command's own modules (``jaxmlp.cli.*``) in a group of their own."""
    lines = ["- [Overview](index.md)"]
    library = [m for m in public_modules() if not m.startswith("jaxmlp.cli")]
    command = [m for m in public_modules() if m.startswith("jaxmlp.cli")]
    lines += [f"- [{m}]({m}.md)" for m in library]
    lines.append("- The command's modules")
    lines += [f"    - [{m}]({m}.md)" for m in command]
    return "\n".join(lines) + "\n"


def write_all() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open("cli/reference.md", "w") as f:
        f.write(cli_reference())
    for module in public_modules():
        with mkdocs_gen_files.open(f"api/{module}.md", "w") as f:
            f.write(api_page(module))
    with mkdocs_gen_files.open("api/SUMMARY.md", "w") as f:
        f.write(api_summary())
    for source, page in COPIED_PAGES:
        with mkdocs_gen_files.open(page, "w") as f:
            f.write(copied_page(source))
        mkdocs_gen_files.set_edit_path(page, f"../{source}")


if __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path
    write_all()
