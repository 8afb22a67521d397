"""The one exception type for learner configurations a user can get wrong."""

from __future__ import annotations

from dmmlkd.userio.errors import UserError


class ConfigError(UserError):
    """A user-caused configuration error; the command line prints it as one line, exit 2."""
