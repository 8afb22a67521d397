"""The one TOML reader: a file or text in, a dict out, or one error naming the source."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def loads_toml(text: str, source: str, error: type[Exception]) -> dict[str, Any]:
    """Parse TOML text; ``error(message)`` names ``source`` when it is not valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML ({exc})") from None


def read_toml(path: str | os.PathLike[str], error: type[Exception]) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or malformed file raises ``error`` naming it."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{p}: not valid TOML (not UTF-8 text)") from None
    except OSError as exc:
        raise error(f"{p}: cannot read ({exc.strerror or exc})") from None
    return loads_toml(text, str(p), error)


def check_tables(data: dict[str, Any], main: str, others: tuple[str, ...], source: str,
                 error: type[Exception]) -> None:
    """When ``data`` has a ``[main]`` table, everything beside it must be one of the ``others``
    tables: ``error`` names the first unknown table (a typo like ``[comapre]`` would otherwise
    be ignored) or a bare option that belongs in ``[main]``. Without ``[main]`` the options sit
    at the top level and the caller's own check names unknown keys."""
    if not isinstance(data.get(main), dict):
        return
    for key, value in data.items():
        if key == main or (key in others and isinstance(value, dict)):
            continue
        if isinstance(value, dict):
            raise error(f"{source}: unknown table [{key}] (known: "
                        f"{', '.join(f'[{k}]' for k in (main, *others))})")
        raise error(f"{source}: option {key!r} is outside a table; put it in [{main}]")
