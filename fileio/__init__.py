"""Files a user gives dmmlkd and gets back: TOML in, atomic files and output folders out.

The lowest layer beside ``metrics``: it imports nothing of ours, so ``allocator``, ``learner``
and ``studies`` may all use it (metrics <- allocator/learner <- studies; fileio under all).
Each reader/writer takes the caller's error type, so a problem file still fails with
``ProblemError`` and a learner config with ``ConfigError``.
"""

from fileio.atomic import atomic_write_text, file_mode, folder_mode
from fileio.errors import OutputError, UserError
from fileio.outputs import MANIFEST, atomic_dir, check_out_dir
from fileio.toml import loads_toml, read_toml

__all__ = [
    "MANIFEST", "OutputError", "UserError", "atomic_dir", "atomic_write_text", "check_out_dir",
    "file_mode", "folder_mode", "loads_toml", "read_toml",
]
