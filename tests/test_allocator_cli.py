"""The `solve` and `generate` commands, file round trips, and every bad-input case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dmmlkd.allocator import generate_problem, solve
from dmmlkd.allocator.io import problem_from_dict, read_problem, write_problem

GOOD = """
[problem]
scope = "device"
tau_min = 1
tau_max = 20
delta = 0.1
mu = 5.0
epsilon = 0.001
modalities = ["audio", "image", "imu"]

[[devices]]
name = "dev0"
modalities = ["audio", "image"]
speed = [0.02, 0.05]
forward_energy = [0.1, 0.3]
backward_energy = [0.2, 0.6]
comm_energy = 0.5
budget = 12.5

[[devices]]
name = "dev1"
modalities = ["imu"]
speed = [0.01]
forward_energy = [0.05]
backward_energy = [0.1]
comm_energy = 0.2
budget = 2.0
weight = 2.0
"""


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    return path


def test_solve_json_output_hand_checked(cli, good_file: Path) -> None:
    code, out, err = cli("solve", str(good_file), "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"status", "objective", "tau", "energy", "imbalance", "solve_time_s", "gap"}
    # dev1 holds one modality: the floor is its own progress, so it runs as much as the budget
    # allows: 1.8 J / (0.05 + 0.1) J = 12 iterations.
    assert result["tau"]["dev1"] == {"imu": 12}
    # dev0: floor z = min(0.02 a, 0.05 i), compute budget 12.5 - 0.5 = 12 J for
    # L * 0.4 + 0.2 a + 0.6 i (L = max(a, i) = a). z > 0.28 needs a >= 15 and i >= 6, which
    # costs at least 15 * 0.4 + 3 + 3.6 = 12.6 J > 12; z = 0.28 with a = 14, i = 6 costs
    # 5.6 + 2.8 + 3.6 = 12.0 J exactly, and 0.05 * 6 = 0.3 <= 1.1 * 0.28 (no overshoot).
    assert result["tau"]["dev0"] == {"audio": 14, "image": 6}
    assert result["energy"]["dev0"] == pytest.approx(12.5)
    # Objective: 0.28 + 2 * 0.12 - 1e-3 * (12.0 + 12 * 0.15) / (12.5 + 2.0).
    assert result["objective"] == pytest.approx(0.52 - 1e-3 * 13.8 / 14.5, rel=1e-12)
    assert result["status"] == "optimal"


def test_solve_table_and_csv(cli, good_file: Path) -> None:
    code, out, _ = cli("solve", str(good_file))
    assert code == 0 and "dev0" in out and "imbalance" in out
    code, out, _ = cli("solve", str(good_file), "--format", "csv", "--solver", "uniform")
    assert code == 0 and out.splitlines()[0].startswith("solver,device,modality,tau")
    assert len(out.strip().splitlines()) == 1 + 3


@pytest.mark.parametrize("method", ["exact", "heuristic", "proportional", "uniform"])
def test_solve_every_method_and_scope_override(cli, good_file: Path, method: str) -> None:
    code, out, err = cli("solve", str(good_file), "--solver", method, "--scope", "network",
                         "--format", "json")
    assert code == 0, err
    assert json.loads(out)["scope"] == "network"


def test_generate_round_trip(cli, tmp_path: Path) -> None:
    out_file = tmp_path / "g.json"
    code, _, err = cli("generate", "--devices", "7", "--modalities", "3", "--scope", "network",
                       "--missing-rate", "0.3", "--seed", "3", "--out", str(out_file))
    assert code == 0, err
    problem = read_problem(out_file)
    again = generate_problem(devices=7, modalities=3, scope="network", missing_rate=0.3, seed=3)
    assert problem.devices == again.devices
    np.testing.assert_allclose(problem.budget, again.budget)
    np.testing.assert_array_equal(problem.holds, again.holds)
    code, text, _ = cli("generate", "--devices", "2", "--seed", "3")
    assert code == 0 and text.startswith("[problem]")


def test_toml_json_round_trip(tmp_path: Path) -> None:
    problem = generate_problem(devices=5, modalities=4, missing_rate=0.4, seed=9)
    for suffix in (".toml", ".json"):
        path = tmp_path / f"p{suffix}"
        write_problem(problem, path)
        back = read_problem(path)
        assert solve(back).objective == pytest.approx(solve(problem).objective)


def test_physical_parameters_fill_energies() -> None:
    data = {
        "problem": {"modalities": ["a"]},
        "devices": [{
            "name": "d", "modalities": ["a"], "speed": [0.1], "cpu_hz": 1e9,
            "cycles_forward": [1e6], "batch_size": 10, "capacitance": 1e-28,
            "tx_power_w": 0.1, "bandwidth_hz": 1e6, "channel_gain": 1e-7,
            "noise_psd_w_per_hz": 1e-17, "model_bits": 1e6, "budget": 10.0,
        }],
    }
    problem = problem_from_dict(data)
    # kappa f^2 D c = 1e-28 * 1e18 * 10 * 1e6 = 1e-3 J; backward defaults to twice the cycles.
    assert problem.forward_energy[0, 0] == pytest.approx(1e-3)
    assert problem.backward_energy[0, 0] == pytest.approx(2e-3)
    # r = B log2(1 + p g / (N0 B)) = 1e6 * log2(1 + 1e-8 / 1e-11) ; E = p S / r
    rate = 1e6 * np.log2(1 + 1e-8 / 1e-11)
    assert problem.comm_energy[0] == pytest.approx(0.1 * 1e6 / rate)


BAD_CASES = {
    "missing field": (GOOD.replace('budget = 12.5\n', ''), "device 'dev0': missing field 'budget'"),
    "wrong length": (GOOD.replace("speed = [0.02, 0.05]", "speed = [0.02]"),
                     "device 'dev0': speed has 1 values but the device holds 2 modalities"),
    "non-positive speed": (GOOD.replace("speed = [0.02, 0.05]", "speed = [0.02, 0.0]"),
                           "device 'dev0': speed for 'image' must be > 0"),
    "non-positive energy": (GOOD.replace("backward_energy = [0.1]", "backward_energy = [-1.0]"),
                            "device 'dev1': backward_energy for 'imu' must be > 0"),
    "unknown modality": (GOOD.replace('modalities = ["imu"]', 'modalities = ["lidar"]'),
                         "device 'dev1': unknown modality 'lidar'"),
    "tau_min above tau_max": (GOOD.replace("tau_min = 1", "tau_min = 30"),
                              "tau_min (30) must be <= tau_max (20)"),
    "budget too small": (GOOD.replace("budget = 2.0", "budget = 0.3"),
                         "device 'dev1': budget 0.3 J cannot pay comm_energy"),
    "not toml": ("this is [[ not toml", "not valid TOML"),
    "missing problem": ("[[devices]]\nname = 'x'\n", "missing [problem] table"),
    "bad scope": (GOOD.replace('scope = "device"', 'scope = "galaxy"'), "scope must be one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exit_2_one_line(cli, tmp_path: Path, case: str) -> None:
    text, message = BAD_CASES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = cli("solve", str(path))
    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_bad_json_and_missing_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    code, _, err = cli("solve", str(path))
    assert code == 2 and "not valid JSON" in err
    code, _, err = cli("solve", str(tmp_path / "nope.toml"))
    assert code == 2 and "no such file" in err


def test_real_console_script_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CASES["unknown modality"][0])
    proc = subprocess.run([sys.executable, "-m", "dmmlkd.cli", "solve", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_evaluate_by_hand_both_scopes(good_file: Path) -> None:
    from dmmlkd.allocator import evaluate

    problem = read_problem(good_file)
    # dev0: audio 10, image 4 -> progress 0.2, 0.2; dev1: imu 12 -> 0.12 (weight 2).
    tau = np.array([[10, 4, 0], [0, 0, 12]])
    # Energy: dev0 L = 10: 10 * (0.1 + 0.3) + 0.2 * 10 + 0.6 * 4 = 8.4; dev1 12 * 0.15 = 1.8.
    tie = 1e-3 * (8.4 + 1.8) / 14.5
    device = evaluate(problem, tau)
    np.testing.assert_allclose(device.compute_energy, [8.4, 1.8])
    # Device scope: floors 0.2 and 0.12, no overshoot (0.2 <= 1.1 * 0.2).
    assert device.objective == pytest.approx(0.2 + 2 * 0.12 - tie, rel=1e-12)
    network = evaluate(problem.with_(scope="network"), tau)
    # Network scope: G = (0.2, 0.2, 0.12) (one holder each), z = 0.12, each of audio and image
    # overshoots 1.1 * 0.12 by 0.068: objective 0.12 - 5 * 0.136 - tie.
    np.testing.assert_allclose(network.network_progress, [0.2, 0.2, 0.12])
    assert network.slack == pytest.approx(0.136)
    assert network.objective == pytest.approx(0.12 - 5 * 0.136 - tie, rel=1e-12)


LEVELS_JSON = {
    "problem": {"modalities": ["a", "b"], "deadline": 0.3, "scope": "device"},
    "devices": [
        {"name": "d0", "modalities": ["a", "b"], "speed": [0.02, 0.05],
         "cycles_forward": [2e5, 5e5], "cpu_levels_hz": [0.5e9, 1e9, 2e9], "batch_size": 32,
         "comm_energy": 0.02, "comm_time_s": 0.01, "budget": 0.5},
        {"name": "d1", "modalities": ["a"], "speed": [0.03], "cycles_forward": [3e5],
         "cpu_levels_hz": [1e9], "comm_energy": 0.03, "comm_time_s": 0.02, "budget": 0.4},
    ],
}


@pytest.mark.parametrize("method", ["exact", "heuristic"])
def test_solve_levels_json_reports_frequency_and_time(cli, tmp_path: Path, method: str) -> None:
    path = tmp_path / "levels.json"
    path.write_text(json.dumps(LEVELS_JSON))
    code, out, err = cli("solve", str(path), "--solver", method, "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    # d1 holds one modality at 1 GHz: C = 32 * 3 * 3e5 * tau = 2.88e7 tau cycles take
    # 0.0288 tau s + 0.02 s <= 0.3 s -> tau <= 9 (9.72); energy 1e-28 * 1e18 * 2.88e7 * 9
    # = 0.02592 J + 0.03 <= 0.4: time binds at tau = 9.
    assert result["tau"]["d1"] == {"a": 9}
    assert result["cpu_hz"]["d1"] == 1e9
    assert result["time_s"]["d1"] == pytest.approx(0.0288 * 9 + 0.02)
    assert set(result["cpu_hz"]) == {"d0", "d1"} and result["time_s"]["d0"] <= 0.3 * (1 + 1e-9)
    code, out, _ = cli("solve", str(path), "--solver", method)
    assert code == 0 and "cpu_GHz" in out and "deadline 0.3 s" in out


def test_generate_levels_round_trip(cli, tmp_path: Path) -> None:
    out_file = tmp_path / "lv.toml"
    code, _, err = cli("generate", "--devices", "6", "--cpu-levels", "4", "--deadline",
                       "0.8x", "--seed", "2", "--out", str(out_file))
    assert code == 0, err
    problem = read_problem(out_file)
    again = generate_problem(devices=6, cpu_levels=4, deadline="0.8x", seed=2)
    assert problem.has_levels and problem.deadline_s == again.deadline_s
    np.testing.assert_allclose(problem.cpu_levels_hz, again.cpu_levels_hz)
    # Levels are k/4 of each device's f_max.
    np.testing.assert_allclose(problem.cpu_levels_hz / problem.cpu_levels_hz[:, -1:],
                               np.tile([0.25, 0.5, 0.75, 1.0], (6, 1)), rtol=1e-5)
    assert solve(problem).objective == pytest.approx(solve(again).objective, rel=1e-6)


NESTED = "[" * 100_000 + "]" * 100_000
CLI_BAD_CASES = {
    "budget as text (first device)": (GOOD.replace("budget = 12.5", 'budget = "12"'),
                                      "device 'dev0': budget must be a number"),
    "budget as text (second device)": (GOOD.replace("budget = 2.0", 'budget = "12"'),
                                       "device 'dev1': budget must be a number"),
    "weight as bool": (GOOD.replace("weight = 2.0", "weight = true"),
                       "device 'dev1': weight must be a number"),
    "speed overflows": (GOOD.replace("speed = [0.01]", "speed = [1e308]"),
                        "speed is too large"),
    "huge tau_max": (GOOD.replace("tau_max = 20", "tau_max = 1000000000")
                     .replace('scope = "device"', 'scope = "network"'), "lower tau_max"),
    "deadline without levels": (GOOD.replace("epsilon = 0.001", "epsilon = 0.001\ndeadline = 1.0"),
                                "deadline needs cpu_levels_hz"),
}


@pytest.mark.parametrize("case", sorted(CLI_BAD_CASES))
def test_more_bad_input_exit_2_one_line(cli, tmp_path: Path, case: str) -> None:
    text, message = CLI_BAD_CASES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = cli("solve", str(path))
    assert (code, out) == (2, "")
    assert message in err and len(err.strip().splitlines()) == 1


def test_deeply_nested_json_one_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(NESTED)
    code, out, err = cli("solve", str(path))
    assert (code, out) == (2, "")
    assert "nested too deeply" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("generate", "--seed", "-1"), "seed must be in"),
        (("generate", "--seed", str(2**32)), "seed must be in"),
        (("generate", "--energy-spread", "nan"), "energy_spread must be a finite number"),
        (("generate", "--devices", "100000000"), "lower devices"),
        (("generate", "--deadline", "0.5x"), "deadline needs cpu_levels"),
        (("bench", "allocator", "--scopes", "galaxy"), "--scopes must list"),
        (("bench", "allocator", "--seed", "-1"), "--seed must be in"),
        (("bench", "allocator", "--seed", str(2**32)), "--seed must be in"),
    ],
)
def test_generate_and_bench_refuse_bad_arguments(cli, tmp_path: Path, args: tuple,
                                                  message: str) -> None:
    out_file = tmp_path / "never.toml"
    code, out, err = cli(*args, *(("--out", str(out_file)) if args[0] == "generate" else ()))
    assert (code, out) == (2, "")
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out_file.exists()


@pytest.mark.parametrize("levels, deadline", [(0, None), (3, None), (3, "0.9x")])
def test_npz_round_trip_same_problem(cli, tmp_path: Path, levels: int,
                                     deadline: str | None) -> None:
    """`generate --format npz` writes the Problem's own arrays; `solve` reads them back to
    the same problem (same fields, same answer), with or without CPU levels and deadline."""
    out_file = tmp_path / "g.npz"
    code, out, err = cli("generate", "--devices", "9", "--modalities", "3", "--missing-rate",
                         "0.3", "--seed", "4", "--cpu-levels", str(levels), "--out",
                         str(out_file), *(["--deadline", deadline] if deadline else []))
    assert code == 0 and out == "", err
    back = read_problem(out_file)
    again = generate_problem(devices=9, modalities=3, missing_rate=0.3, seed=4,
                             cpu_levels=levels, deadline=deadline)
    assert back.devices == again.devices and back.modalities == again.modalities
    assert back.deadline_s == again.deadline_s and (deadline is None) == (back.deadline_s is None)
    for name in ("holds", "speed", "forward_energy", "backward_energy", "comm_energy",
                 "budget", "weight"):
        np.testing.assert_array_equal(getattr(back, name), getattr(again, name))
    assert back.has_levels == bool(levels)
    code, text, err = cli("solve", str(out_file), "--format", "json")
    assert code == 0, err
    assert json.loads(text)["objective"] == pytest.approx(solve(again).objective, rel=1e-12)


def test_npz_refuses_stdout_and_bad_files(cli, tmp_path: Path) -> None:
    code, out, err = cli("generate", "--format", "npz")
    assert (code, out) == (2, "") and "--out" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    code, out, err = cli("solve", str(bad))
    assert (code, out) == (2, "") and "not a readable .npz" in err
    other = tmp_path / "other.npz"
    np.savez(other, speed=np.ones(3))
    code, out, err = cli("solve", str(other))
    assert (code, out) == (2, "") and "not a dmmlkd problem file" in err
    # A field of the wrong shape is named by the Problem's own validation.
    good = tmp_path / "good.npz"
    write_problem(generate_problem(devices=4, seed=1), good)
    with np.load(good) as data:
        fields = dict(data)
    fields["budget"] = fields["budget"][:2]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **fields)
    code, out, err = cli("solve", str(broken))
    assert (code, out) == (2, "") and "budget has shape" in err
    assert len(err.strip().splitlines()) == 1


def test_solve_prints_default_time_limit_and_certificate(cli, tmp_path: Path) -> None:
    """`solve --method exact` runs under a default 60 s limit and says so with the status; the
    output names the certificate behind the gap (here the heuristic's own Lagrangian bound or
    HiGHS's, in the network scope)."""
    path = tmp_path / "n.json"
    write_problem(generate_problem(devices=6, modalities=3, scope="network", seed=2), path)
    code, out, err = cli("solve", str(path), "--method", "exact")
    assert code == 0, err
    status_line = out.splitlines()[1]
    assert "(time limit 60 s)" in status_line and "certificate: " in status_line
    code, out, err = cli("solve", str(path), "--method", "exact", "--format", "json")
    result = json.loads(out)
    assert result["time_limit_s"] == 60 and result["certificate"]
    code, out, err = cli("solve", str(path), "--method", "heuristic")
    assert "certificate: lagrangian dual bound" in out.splitlines()[1]
