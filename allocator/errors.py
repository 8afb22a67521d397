"""The one exception type for allocation problems a user can get wrong."""

from __future__ import annotations


class ProblemError(ValueError):
    """A user-caused problem error (bad file, wrong field, impossible budget).

    The message names the field or device; the command line prints it as one line and exits 2.
    """

    exit_code = 2
