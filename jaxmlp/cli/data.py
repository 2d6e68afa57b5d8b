"""``jaxmlp data``: the data command of :mod:`jaxmlp.data`, the same code, flags and exit codes
as ``python -m jaxmlp.data``."""

from __future__ import annotations

import argparse


def cmd_data(args: argparse.Namespace) -> int:
    from jaxmlp import data

    return data.run_command(args)
