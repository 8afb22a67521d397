"""The `dmmlkd` command line: a thin dispatcher over `dmmlkd.cli.commands.<name>` modules.

Each command module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` and
``run(args) -> int``; heavy imports (torch, pyomo) stay inside ``run`` so that ``dmmlkd --help``
is instant. Errors a user can cause carry ``exit_code = 2`` (``ProblemError``, ``ConfigError``,
``StudyError``): they print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

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
    except Exception as exc:  # noqa: BLE001 - user errors become one line, others propagate
        if getattr(exc, "exit_code", None) == 2:
            print(f"dmmlkd {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
