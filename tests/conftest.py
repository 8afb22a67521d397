"""Shared fixtures: tiny problems and a CLI runner."""

from __future__ import annotations

import pytest
import torch

from dmmlkd.cli import main


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


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one intra-op thread is fastest, and robust to a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
