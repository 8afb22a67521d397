"""The one base of every error a user can cause; the command line prints it as one line, exit 2.

``ProblemError`` (allocator), ``ConfigError`` (learner), ``StudyError`` (studies) and
``OutputError`` (here) all derive from :class:`UserError`, so ``dmmlkd.cli.main`` catches one
class. It lives in the bottom layer so that every package may raise its own subclass.
"""

from __future__ import annotations


class UserError(ValueError):
    """Base of the errors a user can cause (bad input, bad option, unusable output path)."""

    exit_code = 2


class OutputError(UserError):
    """An output path that cannot or must not be written (names the path)."""
