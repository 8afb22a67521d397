"""Single output files (``generate --out FILE``, ``bench --out FILE``) that never cost a user a file.

The rule, checked by :func:`check_replaceable` before any work:

* FILE does not exist: it is written (atomically, mode 0644 under umask 022) if its folder can be;
* FILE exists and dmmlkd wrote it (the caller's ``ours`` test: the bytes are exactly what dmmlkd
  would write for their content) : it is replaced;
* FILE exists and is anything else (a user's ``thesis.toml``, an output the user edited):
  refused unless ``--force``;
* FILE is a symbolic link, a folder or a device: always refused (a link is never replaced by a
  file, nor written through).

:func:`stamp` / :func:`is_stamped` are the ``ours`` test of text formats that allow comments:
the first line names dmmlkd and the SHA-256 of the rest, so an edited file is no longer ours.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from dmmlkd.userio.errors import OutputError
from dmmlkd.userio.outputs import check_creatable

_STAMP = re.compile(r"^(?:<!--|#) written by dmmlkd [a-z]+; sha256 ([0-9a-f]{64})(?: -->)?$")


def stamp(text: str, command: str, comment: str = "#") -> str:
    """``text`` with a first line saying dmmlkd ``command`` wrote it (``comment``: ``#`` or
    ``<!--`` for Markdown/HTML) and the SHA-256 of everything after that line."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    end = " -->" if comment == "<!--" else ""
    return f"{comment} written by dmmlkd {command}; sha256 {digest}{end}\n{text}"


def is_stamped(path: Path) -> bool:
    """The file starts with a :func:`stamp` line whose hash matches the rest (unchanged output)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200)
            rest = fh.read()
    except OSError:
        return False
    found = _STAMP.match(first.decode("utf-8", "replace").rstrip("\n"))
    return found is not None and hashlib.sha256(rest).hexdigest() == found.group(1)


def check_replaceable(path: str | os.PathLike[str], force: bool, ours: Callable[[Path], bool],
                      flag: str = "--out") -> Path:
    """Refuse, before any work, an output file dmmlkd must not or cannot write (module doc)."""
    out = Path(path)
    if out.is_symlink():
        raise OutputError(f"{out}: is a symbolic link; dmmlkd never replaces one (choose another "
                          f"{flag}; nothing was changed)")
    if out.exists():
        try:
            mode = out.stat().st_mode
        except OSError as exc:
            raise OutputError(f"{out}: cannot be checked ({exc.strerror or exc})") from None
        if stat.S_ISDIR(mode):
            raise OutputError(f"{out}: is a folder; {flag} names the file to write")
        if not stat.S_ISREG(mode):
            raise OutputError(f"{out}: is not a regular file; choose another {flag}")
        if not force and not ours(out):
            raise OutputError(f"{out}: exists and is not a file dmmlkd wrote (or it was changed "
                              f"since); use --force to replace it or choose another {flag} "
                              "(nothing was changed)")
    check_creatable(out)
    return out


def write_stamped(path: str | os.PathLike[str], text: str, command: str,
                  comment: str = "#") -> None:
    """Write ``text`` atomically under a :func:`stamp` line (so a rerun knows the file as ours)."""
    from dmmlkd.userio.atomic import atomic_write_text

    atomic_write_text(path, stamp(text, command, comment))
