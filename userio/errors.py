"""User-caused file errors: the command line prints them as one line and exits 2."""

from __future__ import annotations


class UserError(ValueError):
    """Base of the errors a user can cause here (same contract as ProblemError/ConfigError)."""

    exit_code = 2


class OutputError(UserError):
    """An output path that cannot or must not be written (names the path)."""
