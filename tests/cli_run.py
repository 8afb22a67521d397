"""The real command line in a fresh process, and the one-line-error check (tests/test_safety*.py)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path


def dmmlkd(*args: str, cwd: Path | None = None, memory_limit: int | None = None,
           file_limit: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real command line in a fresh process (umask 022; optional address-space and
    file-size limits: a write past RLIMIT_FSIZE fails like a full disk, EFBIG)."""

    def limits() -> None:
        os.umask(0o022)
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dmmlkd.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limits)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2, exactly one line on stderr holding every fragment, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]

