"""The one exception type for allocation problems a user can get wrong."""

from __future__ import annotations

from dmmlkd.userio.errors import UserError


class ProblemError(UserError):
    """A user-caused problem error (bad file, wrong field, impossible budget).

    The message names the field or device; the command line prints it as one line and exits 2.
    """
