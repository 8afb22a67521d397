"""Each option declared once: flags derived from TrainConfig, one AllocatorOptions record, one
name per concept (solver / method), one base for user errors, studies checked before they run."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dmmlkd.allocator import AllocatorOptions, ProblemError, generate_problem
from dmmlkd.cli.main import build_parser, main
from dmmlkd.learner.config import TrainConfig, setting
from dmmlkd.learner.errors import ConfigError
from dmmlkd.studies.spec import StudyError
from dmmlkd.userio import OutputError, UserError

ROOT = Path(__file__).resolve().parents[1]


def dmmlkd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line in a fresh process."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "dmmlkd.cli", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


# ------------------------------------------------------------------------- one base for errors

def test_every_user_error_derives_from_user_error() -> None:
    for error in (ProblemError, ConfigError, StudyError, OutputError):
        assert issubclass(error, UserError) and error.exit_code == 2


def test_main_catches_user_error_not_an_exit_code_attribute(monkeypatch, capsys) -> None:
    from dmmlkd.cli.commands import plot

    class Lookalike(RuntimeError):
        exit_code = 2  # not a user error: a bug must keep its traceback

    def raise_(error: Exception):
        def run(args: argparse.Namespace) -> int:
            raise error
        return run

    monkeypatch.setattr(plot, "run", raise_(StudyError("spec.toml: bad")))
    assert main(["plot", "x"]) == 2
    assert capsys.readouterr().err == "dmmlkd plot: error: spec.toml: bad\n"
    monkeypatch.setattr(plot, "run", raise_(Lookalike("boom")))
    with pytest.raises(Lookalike):
        main(["plot", "x"])


# ------------------------------------------------------------------- flags from TrainConfig

@pytest.mark.parametrize("command, skipped", [("train", set()), ("compare", {"seed", "method"}),
                                              ("study", {"seed"})])
def test_every_config_field_is_a_documented_flag(command: str, skipped: set[str]) -> None:
    by_flag = flags(subparser(command))
    docs = {f.name: f.metadata["rule"].doc for f in dataclasses.fields(TrainConfig)}
    for name, doc in docs.items():
        flag = "--" + name.replace("_", "-")
        if name in skipped:
            assert flag not in by_flag or by_flag[flag].dest != name
            continue
        assert by_flag[flag].dest == name and by_flag[flag].help.startswith(doc.replace("%", "%%"))


@pytest.mark.parametrize("command", ["train", "compare", "study", "solve", "generate"])
def test_help_documents_every_flag(command: str) -> None:
    for action in subparser(command)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.help == argparse.SUPPRESS:  # an old name: a deprecated alias
            assert action.__class__.__name__ == "DeprecatedAlias"
            continue
        assert action.help and action.help.strip(), action.option_strings or action.dest


def test_a_new_config_field_becomes_a_flag_with_no_other_code(monkeypatch) -> None:
    from dmmlkd.cli import options
    from dmmlkd.learner import config

    @dataclasses.dataclass
    class Extended(TrainConfig):
        fleet: str = setting("uniform", "device fleet: uniform, longtail or trace:PATH.csv")
        battery_floor: float = setting(0.5, "least battery share", low=0, high=1)
        churn: bool = setting(False, "devices leave and return")

    monkeypatch.setattr(config, "TrainConfig", Extended)
    parser = argparse.ArgumentParser()
    options.add_config_flags(parser)
    by_flag = flags(parser)
    assert by_flag["--fleet"].help == ("device fleet: uniform, longtail or trace:PATH.csv "
                                       "(default uniform)")
    assert "in [0, 1]" in by_flag["--battery-floor"].help
    args = parser.parse_args(["--fleet", "longtail", "--battery-floor", "0.25", "--churn", "true"])
    assert options.config_overrides(args) == {"fleet": "longtail", "battery_floor": 0.25,
                                              "churn": True}


def test_flags_override_the_config_file_and_parse_lists(tmp_path: Path) -> None:
    from dmmlkd.cli.options import config_overrides
    from dmmlkd.learner.config import load_config

    path = tmp_path / "c.toml"
    path.write_text('[train]\nlr = 0.5\nrounds = 3\nviews = ["fac"]\n')
    args = subparser("train").parse_args(["--rounds", "4", "--views", "fac, zer",
                                          "--cpu-levels", "0.5,1", "--encoders", "fac=mlp"])
    config = load_config(path, config_overrides(args))
    assert (config.lr, config.rounds, config.views) == (0.5, 4, ["fac", "zer"])
    assert config.cpu_levels == [0.5, 1.0] and config.encoders == {"fac": "mlp"}


def test_old_battery_flag_warns_with_the_new_name(capsys) -> None:
    args = subparser("train").parse_args(["--battery", "2.5"])
    assert args.battery_j == 2.5
    assert capsys.readouterr().err == "dmmlkd: --battery is deprecated; use --battery-j\n"


def test_a_value_of_the_wrong_shape_names_the_flag(cli) -> None:
    code, _, err = cli("train", "--devices", "five")
    assert code == 2 and "--devices" in err and "five" in err


# --------------------------------------------------------------------- one allocator record

def test_allocator_options_refuse_bad_values_naming_the_option() -> None:
    for bad, name in (({"solver": "exakt"}, "solver"), ({"scope": "galaxy"}, "scope"),
                      ({"mu": -1.0}, "mu"), ({"delta": float("nan")}, "delta"),
                      ({"time_limit": 0.0}, "time_limit"), ({"mip_gap": 1.0}, "mip_gap"),
                      ({"tau_min": 0}, "tau_min"), ({"tau_min": 5, "tau_max": 4}, "tau_min")):
        with pytest.raises(UserError, match=f"^{name}"):
            AllocatorOptions(**bad)


def test_policies_solve_with_the_options_they_carry() -> None:
    from dmmlkd.bridge.policies import AllocatorPolicy, build_problem
    from tests.test_policies import make_state

    state = make_state()
    options = AllocatorOptions(scope="network", delta=0.3, mu=2.0, epsilon=0.01)
    problem, _, _ = build_problem(state, options=options)
    assert (problem.scope, problem.delta, problem.mu, problem.epsilon) == ("network", 0.3, 2.0,
                                                                           0.01)
    decision = AllocatorPolicy(options=options.with_(solver="uniform"))(state)
    assert decision.info["solver"] == "uniform" and decision.info["scope"] == "network"


def test_config_hands_its_allocator_options_to_the_policy() -> None:
    from dmmlkd.bridge.training import policy_for

    config = TrainConfig(method="dmml-kd-balance", solver="exact", scope="network", mu=3.0,
                         delta=0.2, solver_time_limit=7.0, tau_max=9).validate()
    policy = policy_for(config)
    assert policy.options == AllocatorOptions(solver="exact", scope="network", mu=3.0, delta=0.2,
                                              time_limit=7.0, tau_max=9)


def test_generated_problem_defaults_are_the_allocator_defaults() -> None:
    d = AllocatorOptions()
    p = generate_problem(devices=3, seed=0)
    assert (p.scope, p.tau_min, p.tau_max, p.delta, p.mu, p.epsilon) == (
        d.scope, d.tau_min, d.tau_max, d.delta, d.mu, d.epsilon)


# ------------------------------------------------------------------------ solver vs method

def test_solve_method_flag_is_a_deprecated_alias_of_solver(cli, tmp_path: Path) -> None:
    from dmmlkd.allocator.io import write_problem

    path = tmp_path / "p.toml"
    write_problem(generate_problem(devices=4, seed=1), path)
    code, new, _ = cli("solve", str(path), "--solver", "uniform", "--format", "csv")
    code_old, old, err = cli("solve", str(path), "--method", "uniform", "--format", "csv")
    assert code == code_old == 0 and new == old and new.startswith("solver,device")
    assert err.strip().splitlines() == ["dmmlkd: --method is deprecated; use --solver"]
    code, _, err = cli("solve", str(path), "--solver", "exakt")
    assert code == 2 and "--solver" in err


def test_allocation_and_round_logs_say_solver() -> None:
    from dmmlkd.allocator import solve

    alloc = solve(generate_problem(devices=3, seed=0), solver="proportional")
    assert alloc.solver == "proportional" and alloc.summary()["solver"] == "proportional"
    assert alloc.to_dict()["solver"] == "proportional" and "method" not in alloc.summary()


# --------------------------------------------------------- studies: every cell checked first

TRAIN_SPEC = """[study]
kind = "train"
seeds = [0]
[base]
dataset = "synthetic"
devices = 3
rounds = 1
{base}
[grid]
{grid}
"""


@pytest.mark.parametrize("table, line, field", [
    ("base", 'solver = "exakt"', "solver"), ("grid", 'solver = ["heuristic", "exakt"]', "solver"),
    ("base", "deadline = -3", "deadline"), ("grid", 'deadline = ["auto", -3]', "deadline"),
    ("base", 'devices = "five"', "devices"), ("grid", 'devices = [4, "five"]', "devices"),
    ("base", "lr = -1", "lr"), ("grid", "lr = [0.1, -1]", "lr"),
])
def test_bad_cell_value_refused_before_any_cell(tmp_path: Path, table: str, line: str,
                                                field: str) -> None:
    spec = tmp_path / "spec.toml"
    grid = line if table == "grid" else "alpha = [1.0, 2.0]"
    base = line if table == "base" else ""
    if field == "devices":  # a key stands in [base] or [grid], never both
        spec.write_text(TRAIN_SPEC.replace("devices = 3\n", "").format(base=base, grid=grid))
    else:
        spec.write_text(TRAIN_SPEC.format(base=base, grid=grid))
    run = dmmlkd("study", str(spec), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    (message,) = run.stderr.strip().splitlines()
    assert f"[{table}] {field} = " in message and f": {field} must" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("grid, field", [('solver = ["heuristic", "exakt"]', "solver"),
                                         ("budget_scale = [1.0, -1.0]", "budget_scale"),
                                         ("mip_gap = [0.5, 2.0]", "mip_gap")])
def test_bad_solve_cell_refused_before_any_cell(tmp_path: Path, grid: str, field: str) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[study]\nkind = "solve"\n[base]\ndevices = 4\n[grid]\n{grid}\n')
    run = dmmlkd("study", str(spec), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert run.returncode == 2 and f"[grid] {field} = " in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_old_study_key_names_the_new_one(cli, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text('[study]\nkind = "solve"\n[grid]\nmethod = ["exact"]\n')
    code, _, err = cli("study", str(spec), "--out", str(tmp_path / "out"))
    assert code == 2 and "grid.method is now grid.solver" in err
    assert not (tmp_path / "out").exists()


def test_study_flags_set_a_train_study_base(cli, tmp_path: Path) -> None:
    from dmmlkd.studies.spec import load_spec

    spec = tmp_path / "spec.toml"
    spec.write_text(TRAIN_SPEC.format(base="", grid="alpha = [1.0]"))
    loaded = load_spec(spec, base={"lr": 0.05, "devices": 4})
    assert loaded.base["lr"] == 0.05 and loaded.base["devices"] == 4
    assert loaded.raw["base"]["lr"] == 0.05  # stored with the spec: part of a resume's identity
    code, _, err = cli("study", str(spec), "--out", str(tmp_path / "o"), "--alpha", "3")
    assert code == 2 and "--alpha is swept in [grid]" in err
    solve_spec = tmp_path / "solve.toml"
    solve_spec.write_text('[study]\nkind = "solve"\n[grid]\ndevices = [4]\n')
    code, _, err = cli("study", str(solve_spec), "--out", str(tmp_path / "o"), "--lr", "1")
    assert code == 2 and "only a train study" in err and not (tmp_path / "o").exists()


def test_problem_uses_the_one_rule_per_option() -> None:
    p = generate_problem(devices=2, seed=0)
    for bad, name in (({"mu": -1.0}, "mu"), ({"scope": "galaxy"}, "scope"),
                      ({"tau_min": 0}, "tau_min")):
        with pytest.raises(ProblemError, match=f"^{name}"):
            p.with_(**bad)
    assert np.isclose(p.with_(mu=2).mu, 2.0) and isinstance(p.with_(mu=2).mu, float)


# ----------------------------------------------------------------- one deadline, one rule

def test_deadline_has_one_name_and_one_rule(cli, tmp_path: Path) -> None:
    from dmmlkd.allocator.io import problem_from_dict, problem_to_dict
    from dmmlkd.userio.options import parse_deadline

    assert parse_deadline("auto", auto=True) == "auto" and parse_deadline(" 2.5") == 2.5
    assert parse_deadline("0.80x", relative=True) == "0.8x" and parse_deadline(None) is None
    for bad in (-3, 0, "soon", float("inf"), True, "1x"):
        with pytest.raises(UserError, match="^deadline must be none or seconds > 0"):
            parse_deadline(bad)
    with pytest.raises(ConfigError, match="^deadline must be auto, auto:F, none or seconds > 0"):
        TrainConfig(deadline=-3).validate()
    with pytest.raises(ProblemError, match="^deadline must be none or seconds > 0"):
        generate_problem(devices=2, cpu_levels=2).with_(deadline_s=-3.0)
    with pytest.raises(ProblemError, match="^deadline must be none, seconds > 0 or a multiple"):
        generate_problem(devices=2, cpu_levels=2, deadline="-1x")
    # Problem files say deadline; the old key names the new one.
    timed = generate_problem(devices=3, cpu_levels=2, deadline="2x", seed=1)
    data = problem_to_dict(timed)
    assert data["problem"]["deadline"] == timed.deadline_s
    assert problem_from_dict(data).deadline_s == timed.deadline_s
    data["problem"]["deadline_s"] = data["problem"].pop("deadline")
    with pytest.raises(ProblemError, match="problem.deadline_s is now problem.deadline"):
        problem_from_dict(data)
    # generate --deadline: seconds or a multiple; the old flag still works, with one line.
    seconds = generate_problem(devices=3, cpu_levels=2, deadline=timed.deadline_s, seed=1)
    assert seconds.deadline_s == timed.deadline_s
    code, new, _ = cli("generate", "--devices", "3", "--cpu-levels", "2", "--deadline", "2x",
                       "--seed", "1")
    code_old, old, err = cli("generate", "--devices", "3", "--cpu-levels", "2",
                             "--deadline-scale", "2", "--seed", "1")
    assert code == code_old == 0 and new == old
    assert err.splitlines()[0] == "dmmlkd: --deadline-scale is deprecated; use --deadline Xx"


def test_old_python_keyword_of_solve_warns_with_the_new_name() -> None:
    from dmmlkd.allocator import solve

    problem = generate_problem(devices=3, seed=0)
    with pytest.warns(DeprecationWarning, match=r"solve\(solver=\.\.\.\)"):
        old = solve(problem, method="uniform")
    assert old.solver == "uniform" and np.array_equal(old.tau, solve(problem, "uniform").tau)
