"""Files that appear whole or not at all, with the permissions users expect (0644 under umask 022)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dmmlkd.userio.errors import OutputError


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it: restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file: what ``open(path, "w")`` would give (0644 under umask 022)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """Mode of a new folder: what ``mkdir`` would give (0755 under umask 022)."""
    return 0o777 & ~_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    ``path`` is either its old self or complete, never half-written. A file it replaces keeps
    its mode; a new file gets :func:`file_mode` (``mkstemp`` alone would give 0600).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        mode = path.stat().st_mode & 0o7777 if path.is_file() else file_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:  # disk full, file too large, quota, a mount gone read-only
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); the old file, if "
                          "any, is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_free_space(folder: str | os.PathLike[str], needed: int, what: str) -> None:
    """OutputError when the file system of ``folder`` has less than ``needed`` bytes free.

    Checked before writing (and, where the size is known in advance, before the work), so a
    full disk is one line naming the place, not a traceback after the run.
    """
    place = Path(folder)
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        return  # cannot tell: the write itself will say so
    if needed > free:
        raise OutputError(f"{what}: needs about {_size(needed)}, {place} has {_size(free)} free")


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text so that ``path`` is either complete or untouched (temp file + rename)."""

    data = text.encode("utf-8")
    check_free_space(Path(path).absolute().parent, len(data), str(path))

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write)
