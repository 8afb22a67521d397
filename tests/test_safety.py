"""Issue 10: a user's files survive every command, resources are bounded, and every mistake is
one line on stderr with exit code 2, before any work.

The independent truths: the user's files and their bytes (written here, compared after), the
file modes ``stat`` reports, a hard address-space limit (a run that allocated before refusing
would die of MemoryError with a traceback), and the field that the test itself made absurd.
Command-line cases run ``python -m dmmlkd.cli`` in a subprocess (the real command line);
the long parametrised list of config fields uses the in-process ``cli`` fixture (the same
``main``) to keep the suite fast.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import time
from dataclasses import fields
from pathlib import Path

import pytest
from cli_run import assert_one_line_error, dmmlkd

from dmmlkd.learner.config import BUDGET_RULES, SOLVERS, TrainConfig, field_docs
from dmmlkd.learner.errors import ConfigError
from dmmlkd.userio import MANIFEST, OutputError, atomic_dir, atomic_write_text, progress, read_toml

ROOT = Path(__file__).resolve().parents[1]


TINY = ["--dataset", "synthetic", "--devices", "2", "--rounds", "1"]
COMMANDS_TINY = {
    "train": ["train", *TINY, "--quiet"],
    "compare": ["compare", *TINY, "--methods", "dpsgd", "--seeds", "1", "--jobs", "1", "--quiet"],
    "demo": ["demo", "--devices", "2", "--rounds", "1", "--seeds", "1", "--jobs", "1",
             "--alloc-devices", "2", "--quiet"],
}
USER_FILES = {"notes.txt": "my notes\n", "data/thesis.tex": "\\chapter{Results}\n"}




def make_user_folder(folder: Path) -> None:
    for rel, text in USER_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def assert_user_folder_intact(folder: Path) -> None:
    """The user's files hold their bytes, and nothing else appeared (no temp folders either)."""
    for rel, text in USER_FILES.items():
        assert (folder / rel).read_text() == text
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == \
        ["data", "data/thesis.tex", "notes.txt"]


# ---------------------------------------------------------------- never lose a user's data

@pytest.mark.parametrize("command", sorted(COMMANDS_TINY))
def test_a_folder_of_user_files_is_refused_before_any_work(command: str, tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    make_user_folder(out)
    proc = dmmlkd(*COMMANDS_TINY[command], "--out", str(out))
    assert_one_line_error(proc, str(out), "notes.txt", "nothing was changed")
    assert proc.stdout == ""  # refused before the run started (demo prints as it goes)
    assert_user_folder_intact(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no temporary sibling


def test_out_dot_in_a_busy_working_directory_is_refused(tmp_path: Path) -> None:
    make_user_folder(tmp_path)
    proc = dmmlkd(*COMMANDS_TINY["train"], "--out", ".", cwd=tmp_path)
    assert_one_line_error(proc, "holds files dmmlkd did not write")
    assert_user_folder_intact(tmp_path)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_unwritable_out_fails_before_the_run(command: str, tmp_path: Path) -> None:
    existing_file = tmp_path / "notes.txt"
    existing_file.write_text("keep me\n")
    for out, fragment in ((existing_file, "not a folder"),
                          (existing_file / "run", "is not a folder")):
        proc = dmmlkd(*COMMANDS_TINY[command], "--out", str(out))
        assert_one_line_error(proc, str(out), fragment)
        assert proc.stdout == ""
    assert existing_file.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_read_only_place_fails_before_the_run() -> None:
    # /sys refuses new entries even to root (os.access would say yes): a real probe is needed.
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) is False:
        pytest.skip("no /sys")
    try:
        os.mkdir("/sys/dmmlkd-probe")
    except OSError:
        pass
    else:  # pragma: no cover - a writable /sys: the check cannot be made here
        os.rmdir("/sys/dmmlkd-probe")
        pytest.skip("/sys is writable here")
    proc = dmmlkd(*COMMANDS_TINY["train"], "--out", "/sys/dmmlkd-test/run")
    assert_one_line_error(proc, "/sys/dmmlkd-test/run", "cannot write there")
    assert proc.stdout == ""


def test_own_output_is_replaced_but_user_additions_and_edits_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    first = dmmlkd(*COMMANDS_TINY["train"], "--out", str(out))
    assert first.returncode == 0, first.stderr
    # Modes as users expect under umask 022 (mkdtemp alone would give 0700, mkstemp 0600).
    for folder in (tmp_path / "new", out):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
    # Rerun into our own output: replaced (a different seed gives a different config file).
    second = dmmlkd(*COMMANDS_TINY["train"], "--seed", "7", "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert 'seed = 7' in (out / "config.toml").read_text()
    # A user's file beside ours: refused, both kept.
    (out / "notes.txt").write_text("my notes\n")
    summary = (out / "summary.json").read_text()
    proc = dmmlkd(*COMMANDS_TINY["train"], "--out", str(out))
    assert_one_line_error(proc, "notes.txt")
    assert (out / "notes.txt").read_text() == "my notes\n"
    assert (out / "summary.json").read_text() == summary
    # A file of ours the user edited is theirs now.
    (out / "notes.txt").unlink()
    (out / "summary.json").write_text(summary + "\n(checked by hand)\n")
    proc = dmmlkd(*COMMANDS_TINY["train"], "--out", str(out))
    assert_one_line_error(proc, "summary.json (changed since dmmlkd wrote it)")
    assert (out / "summary.json").read_text().endswith("(checked by hand)\n")


def test_atomic_dir_replaces_only_listed_files_and_removes_stale_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "figures").mkdir()
        (tmp / "figures" / "old.png").write_text("png")
    assert json.loads((out / MANIFEST).read_text())["files"].keys() == {"a.txt", "figures/old.png"}
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("2")
        (tmp / "b.txt").write_text("3")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        [MANIFEST, "a.txt", "b.txt"]  # stale figures/old.png and its folder of ours are gone
    assert (out / "a.txt").read_text() == "2"


def test_atomic_dir_leaves_everything_as_it_was_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("the run failed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "never") as tmp:
        raise RuntimeError("the run failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_folder_is_used_and_user_files_refused_in_process(tmp_path: Path) -> None:
    with atomic_dir(tmp_path) as tmp:  # tmp_path exists and is empty
        (tmp / "a.txt").write_text("1")
    assert (tmp_path / "a.txt").read_text() == "1"
    (tmp_path / "mine.txt").write_text("user")
    with pytest.raises(OutputError, match="mine.txt"), atomic_dir(tmp_path):
        pass  # pragma: no cover - refused on entry


def test_new_files_and_folders_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "p.toml", "x = 1\n")
        with atomic_dir(tmp_path / "run") as tmp:
            (tmp / "a.txt").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.toml").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o750
    existing = tmp_path / "private.toml"
    existing.write_text("old")
    existing.chmod(0o600)
    atomic_write_text(existing, "new")  # a file it replaces keeps its mode
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600 and existing.read_text() == "new"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    from dmmlkd.userio import atomic_write

    path = tmp_path / "results.parquet"
    path.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OutputError, match="disk full"):  # one line for the user, not a traceback
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.parquet"]


# ------------------------------------------------------------------- bounded resources

def test_memory_is_refused_before_it_is_taken(tmp_path: Path) -> None:
    # ~7 TB of parameters; under a 3 GiB address-space limit a run that allocated first would
    # die with MemoryError (a traceback), not print one line.
    config = tmp_path / "c.toml"
    config.write_text('[train]\ndataset = "synthetic"\ndevices = 100000\nhidden = 16384\n')
    proc = dmmlkd("train", "--config", str(config), "--quiet", "--out", str(tmp_path / "run"),
                  memory_limit=3 * 2**30)
    assert_one_line_error(proc, "devices=100000", "memory", "lower devices")
    assert not (tmp_path / "run").exists()


def test_compare_counts_every_run_and_names_the_field(tmp_path: Path) -> None:
    proc = dmmlkd("compare", "--dataset", "synthetic", "--devices", "5000", "--rounds", "1000000",
                  "--seeds", "3", "--quiet", "--out", str(tmp_path / "c"))
    assert_one_line_error(proc, "rounds=1000000", "memory")


def test_memory_estimate_grows_with_the_run() -> None:
    from dmmlkd.learner.resources import run_bytes

    shape = ([32, 32], 1200, 10)
    small = run_bytes(TrainConfig(dataset="synthetic", devices=4), shape)
    assert run_bytes(TrainConfig(dataset="synthetic", devices=8), shape) > small
    assert run_bytes(TrainConfig(dataset="synthetic", devices=4, hidden=256), shape) > small
    # The parameters alone, counted by hand for dims (32, 32), hidden 128, embed 64, feature 32,
    # 10 classes: 16640 per view block + 1300 shared + 3808 generator, x 4 devices x 4 bytes x 6.
    assert small >= 4 * (2 * 16640 + 1300 + 3808) * 4 * 6


# ---------------------------------------------------------- one line for every mistake

@pytest.mark.parametrize("args,fragment", [
    (["train", *TINY, "--seed", "-1"], "seed must be in [0, 4294967296)"),
    (["train", *TINY, "--seed", str(2**32)], "seed must be in [0, 4294967296)"),
    (["compare", *TINY, "--seed", "-1"], None),  # compare has no --seed: argparse's usage error
    (["compare", *TINY, "--seeds", "0"], "seeds must be in [1, 10000] (got 0)"),
    (["compare", *TINY, "--seeds", "-2"], "seeds must be in [1, 10000] (got -2)"),
    (["compare", *TINY, "--methods", "dpsgd,dpsgd"], "methods must not repeat"),
    (["compare", *TINY, "--methods", "dpsgd,magic"], "method must be one of"),
    (["compare", *TINY, "--jobs", "0"], "jobs must be in [1, 1024] (got 0)"),
    (["compare", *TINY, "--solver", "foo"], "solver must be one of exact, heuristic"),
    (["demo", "--seeds", "0"], "seeds must be in [1, 10000] (got 0)"),
    (["demo", "--jobs", "0"], "jobs must be in [1, 1024] (got 0)"),
    (["demo", "--rounds", "0"], "rounds must be in [1, 1e6]"),
    (["demo", "--time-limit", "nan"], "time_limit must be a finite number"),
    (["train", *TINY, "--battery-j", "1e308"], "battery_j must be in (0, 1e12]"),
    (["train", *TINY, "--solver", "foo"], "solver must be one of"),
    (["train", *TINY, "--views", "m0,,m1"], "views must not be empty"),
])
def test_bad_options_exit_2_with_one_line(cli, args: list[str], fragment: str | None,
                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = cli(*args, "--out", str(out))
    assert code == 2 and "Traceback" not in err
    if fragment is not None:
        assert fragment in err and len(err.strip().splitlines()) == 1, err
        assert stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("body,fragment", [
    ("[train\n", "not valid TOML"),
    ('[train]\ndataset = "synthetic"\n[compare]\nseeds = "x"\n', "seeds must be a number of seeds"),
    ('[train]\ndataset = "synthetic"\n[compare]\nseeds = [1, 1]\n', "seeds must not repeat"),
    ('[train]\ndataset = "synthetic"\n[compare]\nseeds = [-1]\n', "seeds must be in [0, 4294967296)"),
    ('[train]\ndataset = "synthetic"\n[compare]\nseeds = []\n', "seeds must not be empty"),
    ('[train]\ndataset = "synthetic"\n[compare]\nmethods = ["dpsgd", "dpsgd"]\n', "must not repeat"),
    ('[train]\ndataset = "synthetic"\n[compare]\njobs = 0\n', "jobs must be in [1, 1024]"),
    ('[train]\ndataset = "synthetic"\n[compare]\nsedes = 2\n', "unknown option 'compare.sedes'"),
    ('[train]\ndataset = "synthetic"\nmomentum = nan\n', "momentum must be a finite number"),
])
def test_bad_compare_configs_exit_2_with_one_line(cli, body: str, fragment: str,
                                                  tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(body)
    code, stdout, err = cli("compare", "--config", str(config), "--out", str(tmp_path / "out"),
                            "--quiet")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_one_line_errors_through_a_real_process(tmp_path: Path) -> None:
    """The same contract outside pytest's capture: a fresh interpreter, the console output."""
    config = tmp_path / "c.toml"
    config.write_text("[train\n")
    for args, fragment in ((["train", *TINY, "--seed", "-1"], "seed must be in [0, 4294967296)"),
                           (["compare", *TINY, "--seeds", "0"], "seeds must be in [1, 10000]"),
                           (["compare", "--config", str(config)], "c.toml: not valid TOML")):
        proc = dmmlkd(*args, "--out", str(tmp_path / "out"))
        assert_one_line_error(proc, fragment)
        assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


BAD_FIELDS = [  # (TOML line, what the one line must say)
    ("momentum = nan", "momentum must be a finite number"),
    ("momentum = 1.5", "momentum must be in [0, 1)"),
    ("w_kd = inf", "w_kd must be a finite number"),
    ("w_kd = -1", "w_kd must be in [0, 1000]"),
    ("w_difference = nan", "w_difference must be a finite number"),
    ("w_similarity = -0.5", "w_similarity must be in [0, 1000]"),
    ("w_common = inf", "w_common must be a finite number"),
    ("lr = 1e6", "lr must be in (0, 10]"),
    ("lr = 0", "lr must be in (0, 10]"),
    ("battery_j = 1e308", "battery_j must be in (0, 1e12]"),
    ("battery_j = -inf", "battery_j must be a finite number"),
    ("seed = -1", "seed must be in [0, 4294967296)"),
    ("seed = 4294967296", "seed must be in [0, 4294967296)"),
    ('synthetic_dims = ["a"]', "synthetic_dims must be a list of integers"),
    ("synthetic_dims = [0, 32]", "synthetic_dims must be in [1, 100000] (element 0"),
    ("synthetic_dims = 32", "synthetic_dims must be a list of integers"),
    ('synthetic_signal = ["x", 1.0]', "synthetic_signal must be a list of numbers"),
    ("synthetic_signal = [nan, 1.0]", "synthetic_signal must be a finite number"),
    ("synthetic_signal = [1.0]", "synthetic_signal needs one value per synthetic_dims entry"),
    ('budget_rule = "sometimes"', "budget_rule must be one of even, all"),
    ('solver = "foo"', "solver must be one of exact, heuristic, proportional, uniform"),
    ('scope = "galaxy"', "scope must be one of device, network"),
    ('fusion_rule = "some"', "fusion_rule must be one of all, training"),
    ('availability = "often"', "availability must be one of auto, all, random, pattern"),
    ("devices = true", "devices must be an integer"),
    ("rounds = 1.5", "rounds must be an integer"),
    ("rounds = 0", "rounds must be in [1, 1e6]"),
    ("alpha = nan", "alpha must be a finite number"),
    ("generator_lr = inf", "generator_lr must be a finite number"),
    ("speed_beta = 0", "speed_beta must be in (0, 1]"),
    ("tau_min = 5\ntau_max = 2", "need tau_min <= tau_max"),
    ("views = []", "views must not be empty"),
    ('views = ["m0", "m0"]', "views must not repeat"),
    ('pattern = [[]]\navailability = "pattern"', "pattern must not be empty"),
    ('availability = "pattern"', "pattern must be given"),
    ("hidden = 100000", "hidden must be in [1, 16384]"),
    ("threads = 0", "threads must be in [1, 1024]"),
    ("mu = -1", "mu must be in [0, 1e9]"),
    ("solver_time_limit = 0", "solver_time_limit must be in (0, 1e6]"),
    ('topology = "mesh"', "topology must be one of"),
    ('method = "magic"', "method must be one of"),
]


@pytest.mark.parametrize("line,fragment", BAD_FIELDS)
def test_every_config_field_is_checked(cli, tmp_path: Path, line: str, fragment: str) -> None:
    config = tmp_path / "c.toml"
    base = {"dataset": '"synthetic"', "devices": "2", "rounds": "1"}
    keys = {part.split("=")[0].strip() for part in line.splitlines()}
    config.write_text("[train]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if k not in keys)
                      + line + "\n")
    code, stdout, err = cli("train", "--config", str(config), "--quiet", "--out",
                            str(tmp_path / "out"))
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_every_field_has_a_doc_and_a_rule() -> None:
    """A new TrainConfig field must be declared with setting(...): doc and constraints."""
    docs = field_docs()
    for f in fields(TrainConfig):
        assert f.name in docs and docs[f.name].doc.strip(), f"{f.name}: declare it with setting()"


def test_validation_accepts_the_edges_it_claims() -> None:
    ok = TrainConfig(seed=2**32 - 1, momentum=0.0, lr=10, battery_j=1e12, w_kd=0,
                     missing_rate=0.0, topology_p=1.0).validate()
    assert ok.lr == 10.0 and isinstance(ok.lr, float)  # integers become floats for float fields
    for bad in ({"seed": 2**32}, {"momentum": 1.0}, {"lr": 10.5}, {"battery_j": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainConfig(**bad).validate()


def test_config_choices_match_the_allocator_and_the_policies() -> None:
    from dmmlkd.allocator.solvers import METHODS
    from dmmlkd.bridge.policies import BUDGET_RULES as POLICY_RULES

    # One list each (userio.options): the allocator's registry is built from SOLVERS.
    assert set(SOLVERS) == set(METHODS)
    assert set(BUDGET_RULES) == set(POLICY_RULES)


# ------------------------------------------------------------- reading files, progress

def test_one_toml_reader_names_the_file_and_raises_the_callers_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[x\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        read_toml(bad, ConfigError)
    with pytest.raises(ConfigError, match="nope.toml: no such file"):
        read_toml(tmp_path / "nope.toml", ConfigError)
    with pytest.raises(ConfigError, match="not a file"):
        read_toml(tmp_path, ConfigError)
    (tmp_path / "good.toml").write_text("[train]\nrounds = 3\n")
    assert read_toml(tmp_path / "good.toml", ConfigError) == {"train": {"rounds": 3}}


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal() -> None:
    stream = _Pipe()
    bar = progress(6, "cells", "cell", stream=stream, every_s=0.05)
    for _ in range(6):
        time.sleep(0.06)
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines and "\r" not in stream.getvalue()
    assert all(line.startswith("cells: ") and "/6" in line for line in lines)
    quiet = _Pipe()
    bar = progress(6, "cells", "cell", enabled=False, stream=quiet, every_s=0.0)
    bar.update(6)
    bar.close()
    assert quiet.getvalue() == ""


def test_the_option_table_in_the_docs_lists_every_field() -> None:
    text = (ROOT / "docs" / "safety.md").read_text()
    missing = [f.name for f in fields(TrainConfig) if f"| `{f.name}` |" not in text]
    assert not missing, f"add to docs/safety.md (config_table_markdown()): {missing}"
    from dmmlkd.learner.config import config_table_markdown

    assert config_table_markdown() in text, "regenerate the table in docs/safety.md"


def test_figures_redrawn_by_plot_stay_ours(cli, tmp_path: Path) -> None:
    """compare -> plot (rewrites figures) -> compare into the same folder is not refused."""
    out = tmp_path / "cmp"
    args = ["compare", *TINY, "--methods", "dpsgd", "--seeds", "1", "--jobs", "1", "--quiet",
            "--out", str(out)]
    assert cli(*args)[0] == 0
    before = json.loads((out / MANIFEST).read_text())["files"]
    code, _, err = cli("plot", str(out))
    assert code == 0, err
    after = json.loads((out / MANIFEST).read_text())["files"]
    assert after.keys() == before.keys()
    # The invariant: the manifest holds the bytes now on disk (PDF/SVG carry dates, so a redraw
    # changes them and an unrecorded redraw would make the next compare refuse).
    for rel, digest in after.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    code, _, err = cli(*args)
    assert code == 0, err
    (out / "figures" / "mine.png").write_text("user")  # a user's file in our subfolder
    code, _, err = cli(*args)
    assert code == 2 and "figures/mine.png" in err
