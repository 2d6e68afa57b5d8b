"""What the two command-line entry points share (``jaxmlp`` and ``python -m jaxmlp.data``): a
parser whose usage errors are one line, and help that states every default."""

from __future__ import annotations

import argparse

PROG = "jaxmlp"
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (unless the help already states it)."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=34, width=100)

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
