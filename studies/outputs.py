"""Output folders that never cost a user a file: the rule and the code live in ``userio.outputs``.

Kept so that ``from studies.outputs import atomic_dir`` goes on working.
"""

from dmmlkd.userio.outputs import MANIFEST, atomic_dir, check_out_dir

__all__ = ["MANIFEST", "atomic_dir", "check_out_dir"]
