"""Shared fixtures: tiny problems and a CLI runner."""

from __future__ import annotations

import pytest

from studies.cli import main


@pytest.fixture
def cli(capsys):
    """Run `dmmlkd ARGS...` in-process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
