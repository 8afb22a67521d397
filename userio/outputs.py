"""Output folders that never cost a user a file.

The rule for every command that writes a folder (``--out DIR``):

* DIR does not exist: it is built as a temporary sibling and renamed into place (whole or absent);
* DIR is an empty folder: it is used;
* DIR holds only what dmmlkd wrote there before (every file listed, unchanged, in the
  ``.dmmlkd-manifest.json`` we write): our files are replaced one by one and stale ones of ours
  removed; nothing else is touched;
* anything else (a user's file, a file of ours the user edited, ``--out .`` in a busy folder, an
  existing file, a place we cannot write) is refused with one :class:`OutputError` naming the
  path, by :func:`check_out_dir` before any work is done.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dmmlkd.userio.atomic import atomic_write_text, folder_mode
from dmmlkd.userio.errors import OutputError

MANIFEST = ".dmmlkd-manifest.json"
STAGING_PREFIX = ".dmmlkd-staging."  # our temporary folders (a crash may leave one behind)
_SHOWN = 3  # foreign names quoted in a refusal


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listing(folder: Path) -> dict[str, str]:
    """Every regular file under ``folder`` (relative POSIX path -> sha256), manifest excluded."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if rel != MANIFEST:
                files[rel] = _sha256(path)
    return files


def _read_manifest(folder: Path) -> dict[str, str] | None:
    """The files our manifest in ``folder`` lists (None: no readable manifest of ours)."""
    if (folder / MANIFEST).is_symlink():
        return None
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) and data.get("written_by") == "dmmlkd" else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return None
    if not all(_inside(folder, k) for k in files):
        return None  # an entry leaving the folder: whoever wrote it, the folder is not ours
    return {str(k): v for k, v in files.items()}


def _inside(folder: Path, rel: object) -> bool:
    """``rel`` names a place inside ``folder``: a plain relative POSIX path (no ``..``, not
    absolute, no backslash or NUL) whose folders on disk are real folders, not symlinks that
    could lead elsewhere."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return False
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        return False
    here = folder
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            return False
    return True


def _write_manifest(folder: Path, files: dict[str, str]) -> None:
    text = json.dumps({"written_by": "dmmlkd", "files": dict(sorted(files.items()))}, indent=1)
    atomic_write_text(folder / MANIFEST, text + "\n")


def _foreign(folder: Path) -> list[str]:
    """Entries of an existing folder that are not dmmlkd's unchanged output (first few only)."""
    ours = _read_manifest(folder)
    entries = sorted(p.name for p in folder.iterdir()
                     if p.name != MANIFEST and not p.name.startswith(STAGING_PREFIX))
    if ours is None:
        if (folder / MANIFEST).exists() or (folder / MANIFEST).is_symlink():
            # A manifest we cannot trust (not ours, unreadable, or naming places outside the
            # folder) must never decide what is deleted: the folder is not ours.
            entries = [f"{MANIFEST} (not a manifest dmmlkd wrote)", *entries]
        return entries[:_SHOWN]
    our_dirs = {Path(rel).parents[i].as_posix() for rel in ours
                for i in range(len(Path(rel).parents) - 1)}
    found: list[str] = []
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        if base == folder:
            dirs[:] = [d for d in dirs if not d.startswith(STAGING_PREFIX)]
        for name in sorted(dirs):
            rel = (base / name).relative_to(folder).as_posix()
            if rel not in our_dirs or (base / name).is_symlink():
                found.append(rel + "/")
        dirs[:] = [d for d in dirs if (base / d).relative_to(folder).as_posix() in our_dirs]
        for name in sorted(names):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if rel == MANIFEST:
                continue
            if rel not in ours or path.is_symlink():
                found.append(rel)
            elif _sha256(path) != ours[rel]:
                found.append(f"{rel} (changed since dmmlkd wrote it)")
        if len(found) >= _SHOWN:
            break
    return found[:_SHOWN]


def probe_writable(folder: Path, shown: Path) -> None:
    """Create and remove a temporary folder in ``folder``; OutputError naming ``shown`` if we cannot.

    A real attempt, not ``os.access``: root passes every permission check yet cannot write a
    read-only file system.
    """
    try:
        os.rmdir(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise OutputError(f"{shown}: cannot write there ({exc.strerror or exc})") from None


def check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an --out folder dmmlkd must not or cannot write (see module doc)."""
    out = Path(out_dir)
    try:
        return _check_out_dir(out)
    except OutputError:
        raise
    except OSError as exc:  # e.g. a folder we may not list: refuse it, it is not ours to judge
        raise OutputError(f"{out}: cannot be checked ({exc.strerror or exc})") from None


def _check_out_dir(out: Path) -> Path:
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputError(f"{out}: exists and is not a folder; choose another --out")
        foreign = _foreign(out)
        if foreign:
            raise OutputError(
                f"{out}: holds files dmmlkd did not write ({', '.join(foreign)}"
                f"{', ...' if len(foreign) >= _SHOWN else ''}); choose a new or empty --out "
                "(nothing was changed)")
        probe_writable(out, out)
        return out
    check_creatable(out)
    return out


def check_creatable(out: Path) -> None:
    """A folder that does not exist yet can be made: its nearest existing ancestor is a folder we
    can write in; OutputError naming ``out`` otherwise."""
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{out}: cannot be created ({ancestor} is not a folder)")
    probe_writable(ancestor, out)


# Errors of the storage, not of the program: a full disk or quota, a file too large, a
# file system gone read-only. Said in one line (the staging folder is removed first).
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


@contextmanager
def atomic_dir(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staging folder to write into; on success its files become ``out_dir``'s.

    On error (or Ctrl-C) the staging folder goes and ``out_dir`` is as it was. The folder is
    checked again here (:func:`check_out_dir`), so a forgotten up-front check still loses nothing.
    A full disk (or quota, file size limit, read-only remount) while writing is an OutputError.
    """
    try:
        with _atomic_dir(out_dir) as tmp:
            yield tmp
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        raise OutputError(f"{out_dir}: cannot write the results ({exc.strerror or exc}); "
                          "nothing was changed") from None


@contextmanager
def _atomic_dir(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    out = check_out_dir(out_dir)
    if out.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
        try:
            yield staging
            _install(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # mkdir honours the umask (0755)
        tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out.name}.", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    try:
        yield tmp
        _write_manifest(tmp, _listing(tmp))
        os.chmod(tmp, folder_mode())  # mkdtemp makes 0700
        try:
            os.rename(tmp, out)  # fails, replacing nothing, if a non-empty out appeared meanwhile
        except OSError as exc:
            raise OutputError(f"{out}: appeared while running; results not written "
                              f"({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def record_written(folder: str | os.PathLike[str], paths: list[Path]) -> None:
    """After dmmlkd rewrote ``paths`` inside a folder of ours (``dmmlkd plot``), list their new
    bytes in the manifest, so that the next run into the folder still knows them as ours.

    A folder without our manifest is left without one (it is not ours to claim).
    """
    folder = Path(folder)
    ours = _read_manifest(folder)
    if ours is None:
        return
    for path in paths:
        rel = Path(path).absolute().relative_to(folder.absolute()).as_posix()
        ours[rel] = _sha256(Path(path))
    _write_manifest(folder, ours)


def _install(staging: Path, out: Path) -> None:
    """Move the staged files into ``out``, replacing and then removing only files of ours."""
    new = _listing(staging)
    old = _read_manifest(out) or {}
    _write_manifest(out, {**old, **new})  # during the swap every file of ours stays listed
    for rel in new:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, dest)
    for rel in sorted(old.keys() - new.keys()):
        path = out / rel
        path.unlink(missing_ok=True)
        for parent in path.parents:  # folders of ours left empty
            if parent == out or any(parent.iterdir()):
                break
            parent.rmdir()
    _write_manifest(out, new)


def keep_only(folder: str | os.PathLike[str], written: list[Path]) -> None:
    """After dmmlkd (re)wrote ``written`` in ``folder`` (a study's figures): remove the files it
    wrote there before and did not write now (a changed spec's old figures), then list the new.

    Only files our manifest lists, unchanged since, are removed; anything else stays.
    """
    folder = Path(folder)
    old = _read_manifest(folder) or {}
    new = {Path(p).absolute().relative_to(folder.absolute()).as_posix(): _sha256(Path(p))
           for p in written}
    for rel in sorted(old.keys() - new.keys()):
        path = folder / rel
        if path.is_file() and not path.is_symlink() and _sha256(path) == old[rel]:
            path.unlink()
    _write_manifest(folder, new)
