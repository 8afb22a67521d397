"""The one exception type for learner configurations a user can get wrong."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-caused configuration error; the command line prints it as one line, exit 2."""

    exit_code = 2
