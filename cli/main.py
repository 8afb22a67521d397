"""The `dmmlkd` command line: a thin dispatcher over `dmmlkd.cli.commands.<name>` modules.

Each command module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` and
``run(args) -> int``; heavy imports (torch, pyomo) stay inside ``run`` so that ``dmmlkd --help``
is instant. Every error a user can cause derives from ``dmmlkd.userio.UserError``
(``ProblemError``, ``ConfigError``, ``StudyError``, ``OutputError``): it prints one line and
exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from dmmlkd.userio.errors import UserError

# Sub-command name -> module under dmmlkd.cli.commands (a new command is one file and one line here).
COMMANDS: dict[str, str] = {
    "solve": "solve",
    "generate": "generate",
    "bench": "bench",
    "train": "train",
    "compare": "compare",
    "study": "study",
    "plot": "plot",
    "demo": "demo",
    "flower": "flower",
}


class OneLineParser(argparse.ArgumentParser):
    """A parser whose mistakes are one line (the flag and what is wrong), exit 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command registered."""
    parser = OneLineParser(
        prog="dmmlkd",
        description="Resource allocation, learning and sensitivity studies for DMML-KD.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"dmmlkd.cli.commands.{module_name}")
        except ModuleNotFoundError as exc:  # a command still being built: leave it out
            if exc.name and exc.name.startswith("dmmlkd.cli.commands"):
                continue
            raise
        command_parser = module.add_parser(sub)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("dmmlkd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dmmlkd solve ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UserError as exc:  # a user's mistake: one line; anything else is a bug and propagates
        print(f"dmmlkd {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
