"""Output folders that never cost a user a file: the rule and the code live in ``fileio.outputs``.

Kept so that ``from studies.outputs import atomic_dir`` goes on working.
"""

from fileio.outputs import MANIFEST, atomic_dir, check_out_dir

__all__ = ["MANIFEST", "atomic_dir", "check_out_dir"]
