"""Problem files: TOML or JSON with one structure ([problem] options, [[devices]] entries), and
a columnar ``.npz`` form (the `Problem` record's own arrays) for large problems."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from dmmlkd.allocator.energy import (
    COMM_FIELDS,
    COMPUTE_FIELDS,
    iteration_energies,
    round_comm_energy,
    round_comm_time,
)
from dmmlkd.allocator.errors import ProblemError
from dmmlkd.allocator.problem import Problem
from dmmlkd.metrics.energy import BACKWARD_CYCLES_FACTOR, DEFAULT_BATCH_SIZE, DEFAULT_CAPACITANCE
from dmmlkd.userio.options import DEFAULTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICE_FIELDS = frozenset({
    "name", "modalities", "speed", "forward_energy", "backward_energy", "comm_energy", "budget",
    "weight", "cpu_hz", "cycles_forward", "cycles_backward", "batch_size", "capacitance",
    "tx_power_w", "bandwidth_hz", "channel_gain", "model_bits", "noise_psd_w_per_hz",
    "cpu_levels_hz", "comm_time_s",
})
TOP_LEVEL_KEYS = frozenset({"problem", "devices"})  # what a problem file holds at its top
PROBLEM_OPTIONS = ("scope", "tau_min", "tau_max", "delta", "mu", "epsilon", "deadline")
# Old field names: refused with a line naming the new one.
RENAMED_OPTIONS = {"deadline_s": "deadline"}
# The options' defaults are the allocator's (userio.options.AllocatorOptions); no deadline.
_DEFAULTS: dict[str, Any] = DEFAULTS.problem_options()
# A number in a problem file: int or float, never bool (True is an int in Python) or text.
_NUMBER_TYPES = (int, float)


def parse_text(text: str, fmt: str, source: str = "input") -> dict[str, Any]:
    """Parse TOML or JSON text into a dict (ProblemError naming the source when it is neither)."""
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProblemError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        except RecursionError:
            raise ProblemError(f"{source}: not a problem file (JSON nested too deeply)") from None
    elif fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProblemError(f"{source}: not valid TOML ({exc})") from None
        except RecursionError:
            raise ProblemError(f"{source}: not a problem file (TOML nested too deeply)") from None
    else:
        raise ProblemError(f"{source}: unknown format {fmt!r} (use toml or json)")
    if not isinstance(data, dict):
        raise ProblemError(f"{source}: the top level must be a table/object")
    return data


def read_problem(path: str | os.PathLike[str]) -> Problem:
    """Read and validate a problem file (format from the suffix: .npz, .json, else TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such file")
    if path.suffix.lower() == ".npz":
        return read_problem_npz(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = parse_text(text, "json", str(path))
    elif suffix == ".toml":
        data = parse_text(text, "toml", str(path))
    else:
        try:
            data = parse_text(text, "json", str(path))
        except ProblemError:
            try:
                data = parse_text(text, "toml", str(path))
            except ProblemError:
                raise ProblemError(f"{path}: neither valid TOML nor JSON") from None
    return problem_from_dict(data, source=str(path))


def _list(entry: Mapping[str, Any], key: str, n: int, where: str) -> list[float]:
    if key not in entry:
        raise ProblemError(f"{where}: missing field {key!r}")
    value = entry[key]
    if not isinstance(value, list):
        raise ProblemError(f"{where}: {key} must be a list")
    if len(value) != n:
        raise ProblemError(
            f"{where}: {key} has {len(value)} values but the device holds {n} modalities"
        )
    if not all(_is_number(x) for x in value):
        raise ProblemError(f"{where}: {key} must hold numbers")
    if not all(math.isfinite(x) for x in value):
        raise ProblemError(f"{where}: {key} must be finite")
    return [float(x) for x in value]


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES


def _number(entry: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    if key not in entry:
        if default is None:
            raise ProblemError(f"{where}: missing field {key!r}")
        return default
    value = entry[key]
    if not _is_number(value):
        raise ProblemError(f"{where}: {key} must be a number (got {value!r})")
    if not math.isfinite(value):
        raise ProblemError(f"{where}: {key} must be finite")
    return float(value)


def problem_from_dict(data: Mapping[str, Any], source: str = "problem") -> Problem:
    """Build a Problem from the file structure; every error names the field or device."""
    head = data.get("problem")
    if not isinstance(head, Mapping):
        raise ProblemError(f"{source}: missing [problem] table")
    extra = sorted(set(data) - TOP_LEVEL_KEYS, key=str)
    if extra:  # a typo ("device") or a field outside its table must not be silently ignored
        raise ProblemError(f"{source}: unknown top-level key {extra[0]!r} (a problem file holds "
                           f"{', '.join(sorted(TOP_LEVEL_KEYS))})")
    for old, new in RENAMED_OPTIONS.items():
        if old in head:
            raise ProblemError(f"{source}: problem.{old} is now problem.{new} (seconds)")
    unknown = set(head) - set(PROBLEM_OPTIONS) - {"modalities"}
    if unknown:
        raise ProblemError(f"{source}: unknown field problem.{sorted(unknown)[0]}")
    if "modalities" not in head:
        raise ProblemError(f"{source}: missing field problem.modalities")
    modalities = head["modalities"]
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise ProblemError(f"{source}: problem.modalities must be a list of names")
    options: dict[str, Any] = {}
    for key in PROBLEM_OPTIONS:
        if key == "scope":
            options[key] = head.get(key, _DEFAULTS[key])
        elif key == "deadline":  # checked by Problem (the one deadline rule)
            options["deadline_s"] = head.get(key)
        else:
            options[key] = _number(head, key, f"{source}: problem", _DEFAULTS[key])
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ProblemError(f"{source}: missing [[devices]] entries")
    index = {m: j for j, m in enumerate(modalities)}
    K, M = len(devices), len(modalities)
    holds = np.zeros((K, M), bool)
    speed, fwd, bwd = np.zeros((K, M)), np.zeros((K, M)), np.zeros((K, M))
    comm, budget, weight = np.zeros(K), np.zeros(K), np.ones(K)
    timed = _TimeFields(K, M)
    try:
        names = _read_devices_fast(devices, index, holds, speed, fwd, bwd, comm, budget, weight)
    except (KeyError, TypeError, ValueError, AttributeError):
        # Something unusual (physical fields, a typo, a wrong length, a wrong type): the
        # careful path reads device by device and names the device and field in its error.
        # The fast path accepts only what the careful one accepts (one set of rules).
        holds[:] = False
        names = [
            _read_device(entry, k, index, holds, speed, fwd, bwd, comm, budget, weight, source,
                         timed)
            for k, entry in enumerate(devices)
        ]
    level_model = timed.level_model(source)
    energies: dict[str, Any] = {"forward_energy": fwd, "backward_energy": bwd}
    if level_model:
        energies = {"cpu_levels_hz": timed.levels, "cycles_forward": timed.cycles_forward,
                    "cycles_backward": timed.cycles_backward, "batch_size": timed.batch_size,
                    "capacitance": timed.capacitance, "comm_time_s": timed.comm_time_s}
    return Problem(
        modalities=tuple(modalities), devices=tuple(names), holds=holds, speed=speed,
        comm_energy=comm, budget=budget, weight=weight, **energies, **options,
    )


class _TimeFields:
    """The time/frequency fields read from device entries (the level model needs all devices)."""

    def __init__(self, K: int, M: int) -> None:
        self.levels: list[list[float] | None] = [None] * K
        self.cycles_forward = np.zeros((K, M))
        self.cycles_backward = np.zeros((K, M))
        self.batch_size = np.full(K, float(DEFAULT_BATCH_SIZE))
        self.capacitance = np.full(K, DEFAULT_CAPACITANCE)
        self.comm_time_s = np.zeros(K)
        self.comm_time_given = np.zeros(K, bool)
        self.explicit = np.zeros(K, bool)  # gave cpu_levels_hz (not a single cpu_hz)

    def level_model(self, source: str) -> bool:
        """Whether every device gave levels (or one cpu_hz); an error when only some did."""
        given = [lv is not None for lv in self.levels]
        if all(given):
            return True
        if self.explicit.any():
            k = given.index(False)
            raise ProblemError(f"{source}: devices[{k}] has no cpu_levels_hz/cpu_hz while "
                               f"others list CPU levels (all devices or none)")
        if self.comm_time_given.any():
            raise ProblemError(f"{source}: comm_time_s needs cpu_levels_hz on every device")
        return False


def _read_devices_fast(devices: list[Any], index: dict[str, int], holds: np.ndarray,
                       speed: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, comm: np.ndarray,
                       budget: np.ndarray, weight: np.ndarray) -> list[str]:
    """Column-wise read of plain derived-energy entries (fast for 100,000 devices).

    Raises KeyError/TypeError/ValueError on anything it does not expect; the caller then
    re-reads with `_read_device`, whose errors are precise.
    """
    K, M = holds.shape
    plain = {"name", "modalities", "speed", "forward_energy", "backward_energy", "comm_energy",
             "budget", "weight"}
    if any(not plain.issuperset(e) for e in devices):
        raise ValueError("extra fields")
    mods = [e["modalities"] for e in devices]
    if not all(type(ms) is list and all(type(m) is str for m in ms) for ms in mods):
        raise TypeError("modalities")
    lengths = np.fromiter(map(len, mods), dtype=np.int64, count=K)
    if (lengths == 0).any():
        raise ValueError("empty modalities")
    total = int(lengths.sum())
    cols = np.fromiter((index[m] for ms in mods for m in ms), dtype=np.int64, count=total)
    rows = np.repeat(np.arange(K), lengths)
    if np.bincount(rows * M + cols, minlength=K * M).max() > 1:
        raise ValueError("duplicate modality")

    def strict(values: Any, count: int) -> np.ndarray:
        # Exactly the careful path's rule: int or float (not bool, not text), finite.
        values = list(values)
        if not all(type(x) in _NUMBER_TYPES for x in values):
            raise TypeError("not a number")
        arr = np.fromiter(values, dtype=float, count=count)
        if not np.isfinite(arr).all():
            raise ValueError("not finite")
        return arr

    def flat(key: str) -> np.ndarray:
        values = [e[key] for e in devices]
        if not all(type(v) is list for v in values):
            raise TypeError(f"{key} not a list")
        if not np.array_equal(np.fromiter(map(len, values), np.int64, K), lengths):
            raise ValueError(f"{key} length")
        return strict(chain.from_iterable(values), total)

    speed[rows, cols], fwd[rows, cols], bwd[rows, cols] = (
        flat("speed"), flat("forward_energy"), flat("backward_energy"))
    comm[:] = strict((e["comm_energy"] for e in devices), K)
    budget[:] = strict((e["budget"] for e in devices), K)
    weight[:] = strict((e.get("weight", 1.0) for e in devices), K)
    holds[rows, cols] = True
    return [str(e.get("name", f"dev{k}")) for k, e in enumerate(devices)]


def _read_device(entry: Any, k: int, index: dict[str, int], holds: np.ndarray,
                 speed: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, comm: np.ndarray,
                 budget: np.ndarray, weight: np.ndarray, source: str,
                 timed: _TimeFields | None = None) -> str:
    """Read one device entry with full checks (physical fields allowed); returns its name."""
    if not isinstance(entry, Mapping):
        raise ProblemError(f"{source}: devices[{k}] must be a table")
    name = str(entry.get("name", f"dev{k}"))
    where = f"device {name!r}"
    unknown = set(entry) - DEVICE_FIELDS
    if unknown:
        raise ProblemError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    held = entry.get("modalities")
    if not isinstance(held, list) or not held:
        raise ProblemError(f"{where}: missing field 'modalities' (non-empty list)")
    for m in held:
        if not isinstance(m, str) or m not in index:
            raise ProblemError(f"{where}: unknown modality {m!r} (not in problem.modalities)")
    if len(set(held)) != len(held):
        raise ProblemError(f"{where}: a modality is listed twice")
    cols = [index[m] for m in held]
    holds[k, cols] = True
    speed[k, cols] = _list(entry, "speed", len(held), where)
    levels = entry.get("cpu_levels_hz")
    if levels is not None:
        if "cpu_hz" in entry:
            raise ProblemError(f"{where}: give cpu_hz or cpu_levels_hz, not both")
        if not isinstance(levels, list) or not levels or not all(_is_number(x) for x in levels):
            raise ProblemError(f"{where}: cpu_levels_hz must be a non-empty list of numbers")
    if "forward_energy" in entry or not any(f in entry for f in COMPUTE_FIELDS + ("cpu_levels_hz",)):
        if levels is not None:
            raise ProblemError(f"{where}: give forward_energy or cpu_levels_hz, not both")
        fwd[k, cols] = _list(entry, "forward_energy", len(held), where)
        bwd[k, cols] = _list(entry, "backward_energy", len(held), where)
    else:
        cf = _list(entry, "cycles_forward", len(held), where)
        cb = (_list(entry, "cycles_backward", len(held), where) if "cycles_backward" in entry
              else [BACKWARD_CYCLES_FACTOR * c for c in cf])
        batch = _number(entry, "batch_size", where, float(DEFAULT_BATCH_SIZE))
        cap = _number(entry, "capacitance", where, DEFAULT_CAPACITANCE)
        if levels is None:
            fwd[k, cols], bwd[k, cols] = iteration_energies(entry, len(held), where)
            levels = [_number(entry, "cpu_hz", where)]
        if timed is not None:
            timed.explicit[k] = "cpu_levels_hz" in entry
            timed.levels[k] = [float(x) for x in levels]
            timed.cycles_forward[k, cols], timed.cycles_backward[k, cols] = cf, cb
            timed.batch_size[k], timed.capacitance[k] = batch, cap
    if "comm_energy" in entry or not any(f in entry for f in COMM_FIELDS):
        comm[k] = _number(entry, "comm_energy", where)
        if "comm_time_s" in entry and timed is not None:
            timed.comm_time_s[k] = _number(entry, "comm_time_s", where)
            timed.comm_time_given[k] = True
    else:
        comm[k] = round_comm_energy(entry, where)
        if timed is not None:
            timed.comm_time_s[k] = round_comm_time(entry, where)
    budget[k] = _number(entry, "budget", where)
    weight[k] = _number(entry, "weight", where, 1.0)
    return name


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    """The file structure of a problem (derived energies), the inverse of problem_from_dict."""
    head: dict[str, Any] = {"scope": problem.scope, "tau_min": problem.tau_min,
                            "tau_max": problem.tau_max, "delta": problem.delta, "mu": problem.mu,
                            "epsilon": problem.epsilon, "modalities": list(problem.modalities)}
    if problem.deadline_s is not None:
        head["deadline"] = problem.deadline_s
    devices = []
    for k, name in enumerate(problem.devices):
        cols = np.flatnonzero(problem.holds[k])
        entry: dict[str, Any] = {
            "name": name,
            "modalities": [problem.modalities[j] for j in cols],
            "speed": problem.speed[k, cols].tolist(),
            "comm_energy": float(problem.comm_energy[k]),
            "budget": float(problem.budget[k]),
        }
        if problem.has_levels:
            assert problem.cpu_levels_hz is not None and problem.cycles_forward is not None
            assert problem.cycles_backward is not None and problem.batch_size is not None
            assert problem.capacitance is not None and problem.comm_time_s is not None
            levels = problem.cpu_levels_hz[k]
            entry.update({
                "cpu_levels_hz": levels[np.isfinite(levels)].tolist(),
                "cycles_forward": problem.cycles_forward[k, cols].tolist(),
                "cycles_backward": problem.cycles_backward[k, cols].tolist(),
                "batch_size": float(problem.batch_size[k]),
                "capacitance": float(problem.capacitance[k]),
                "comm_time_s": float(problem.comm_time_s[k]),
            })
        else:
            entry["forward_energy"] = problem.forward_energy[k, cols].tolist()
            entry["backward_energy"] = problem.backward_energy[k, cols].tolist()
        if problem.weight[k] != 1.0:
            entry["weight"] = float(problem.weight[k])
        devices.append(entry)
    return {"problem": head, "devices": devices}


def dumps_problem(problem: Problem, fmt: str = "toml") -> str:
    """Serialise a problem as TOML or JSON text."""
    data = problem_to_dict(problem)
    if fmt == "json":
        # Readable for small problems; compact (fast to write and parse) for large ones.
        if problem.n_devices <= 1000:
            return json.dumps(data, indent=1)
        return json.dumps(data, separators=(",", ":"))
    if fmt == "toml":
        import tomli_w

        return tomli_w.dumps(data)
    raise ProblemError(f"format must be toml or json (got {fmt!r})")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a file whole or not at all: the project's one atomic writer (userio.atomic)."""
    from dmmlkd.userio.atomic import atomic_write_text as write

    write(path, text)


def format_of(path: str | os.PathLike[str] | None) -> str:
    """The problem file format a path's suffix names: npz, json, or toml (the default)."""
    suffix = Path(path).suffix.lower() if path else ""
    return {".npz": "npz", ".json": "json"}.get(suffix, "toml")


def write_problem(problem: Problem, path: str | os.PathLike[str], fmt: str | None = None) -> None:
    """Write a problem file atomically (format from the suffix unless given)."""
    fmt = fmt or format_of(path)
    if fmt == "npz":
        write_problem_npz(problem, path)
        return
    atomic_write_text(path, dumps_problem(problem, fmt))


# -- columnar form -------------------------------------------------------------------------
# The .npz file holds the Problem record's fields as arrays under their own names (K x M
# tables dense, zeros where a device does not hold a modality; per-device columns (K,);
# options as 0-d arrays; deadline_s and the level fields only when present), plus a version.
NPZ_VERSION = 1
_NPZ_ARRAYS = ("holds", "speed", "forward_energy", "backward_energy", "comm_energy", "budget",
               "weight")
_NPZ_LEVEL_ARRAYS = ("cpu_levels_hz", "cycles_forward", "cycles_backward", "batch_size",
                     "capacitance", "comm_time_s")


def write_problem_npz(problem: Problem, path: str | os.PathLike[str]) -> None:
    """Write a problem as a columnar .npz file, atomically (`dmmlkd.userio.atomic_write`)."""
    from dmmlkd.userio import atomic_write

    arrays: dict[str, Any] = {
        "dmmlkd_problem_version": np.array(NPZ_VERSION),
        "modalities": np.array(problem.modalities, dtype=str),
        "devices": np.array(problem.devices, dtype=str),
        "scope": np.array(problem.scope),
        "tau_min": np.array(problem.tau_min), "tau_max": np.array(problem.tau_max),
        "delta": np.array(problem.delta), "mu": np.array(problem.mu),
        "epsilon": np.array(problem.epsilon),
    }
    for name in _NPZ_ARRAYS:
        arrays[name] = getattr(problem, name)
    if problem.deadline_s is not None:
        arrays["deadline_s"] = np.array(problem.deadline_s)
    if problem.has_levels:
        for name in _NPZ_LEVEL_ARRAYS:
            arrays[name] = getattr(problem, name)
        # Derived from the levels: the reader rebuilds them (giving both is refused).
        del arrays["forward_energy"], arrays["backward_energy"]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def read_problem_npz(path: str | os.PathLike[str]) -> Problem:
    """Read and validate a columnar .npz problem file (every error names the field)."""
    import zipfile

    source = str(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ProblemError(f"{source}: not a readable .npz problem file "
                           f"({exc.__class__.__name__})") from None
    version = fields.pop("dmmlkd_problem_version", None)
    if version is None or version.shape != () or int(version) != NPZ_VERSION:
        raise ProblemError(f"{source}: not a dmmlkd problem file (dmmlkd_problem_version "
                           f"{NPZ_VERSION} missing)")
    known = {"modalities", "devices", "scope", "deadline_s", *_NPZ_ARRAYS, *_NPZ_LEVEL_ARRAYS,
             *(o for o in PROBLEM_OPTIONS)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ProblemError(f"{source}: unknown field {unknown[0]}")
    for name in ("modalities", "devices", "holds", "speed", "comm_energy", "budget"):
        if name not in fields:
            raise ProblemError(f"{source}: missing field {name}")
    for name in ("modalities", "devices", "scope"):
        if name in fields and fields[name].dtype.kind != "U":
            raise ProblemError(f"{source}: {name} must be text")
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ("modalities", "devices"):
            kwargs[name] = tuple(value.tolist()) if value.ndim == 1 else value.tolist()
        elif name == "scope":
            kwargs[name] = str(value)
        elif name in PROBLEM_OPTIONS or name == "deadline_s":  # the Problem field, in seconds
            if value.shape != () or value.dtype.kind not in "iuf":
                raise ProblemError(f"{source}: {name} must be one number")
            kwargs[name] = value.item()
        elif value.dtype.kind not in "biuf":
            raise ProblemError(f"{source}: {name} must be numeric")
        else:
            kwargs[name] = value
    try:
        return Problem(**kwargs)
    except ProblemError as exc:
        raise ProblemError(f"{source}: {exc}") from None
