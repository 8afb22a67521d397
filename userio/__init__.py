"""What a user gives dmmlkd and gets back: TOML in; atomic files, output folders, progress out.

The lowest layer beside ``metrics``: it imports nothing of ours, so ``allocator``, ``learner``
and ``studies`` may all use it (metrics <- allocator/learner <- studies; userio under all).
Each reader/writer takes the caller's error type, so a problem file still fails with
``ProblemError`` and a learner config with ``ConfigError``.
"""

from dmmlkd.userio.atomic import atomic_write, atomic_write_text, file_mode, folder_mode
from dmmlkd.userio.errors import OutputError, UserError
from dmmlkd.userio.markdown import to_markdown
from dmmlkd.userio.memory import available_memory_bytes
from dmmlkd.userio.outputs import MANIFEST, atomic_dir, check_creatable, check_out_dir, probe_writable
from dmmlkd.userio.progress import progress
from dmmlkd.userio.toml import loads_toml, read_toml

__all__ = [
    "MANIFEST", "OutputError", "UserError", "atomic_dir", "atomic_write", "atomic_write_text",
    "available_memory_bytes", "check_creatable", "check_out_dir", "file_mode", "folder_mode", "loads_toml",
    "probe_writable", "progress", "read_toml", "to_markdown",
]
