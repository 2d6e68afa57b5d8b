"""Options as frozen dataclass fields that carry their own documentation.

The library's option classes ([`jaxmlp.ModelOptions`][], [`jaxmlp.OptimizerSettings`][])
and the command line's run configuration declare every option once, with `option`; the
``jaxmlp train`` flags and the keys of its config files are generated from these fields, so a
name, a help text and a list of choices are written in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def option(
    default: Any,
    help: str,
    *,
    group: str,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its command-line documentation.

    Args:
        default: the field's default value.
        help: one line for ``--help``.
        group: the ``--help`` section: ``data``, ``model``, ``reg``, ``opt`` or ``run``.
        choices: the valid values of a string option (the tuple the library itself uses).
        metavar: the placeholder shown in ``--help``.
    """
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "group": group,
            "choices": choices,
            "metavar": metavar,
        },
    )
