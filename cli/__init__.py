"""The `dmmlkd` command line: one module per sub-command under `dmmlkd.cli.commands`."""

from dmmlkd.cli.main import main

__all__ = ["main"]
