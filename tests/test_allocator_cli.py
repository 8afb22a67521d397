"""The `solve` and `generate` commands, file round trips, and every bad-input case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from allocator import generate_problem, solve
from allocator.io import problem_from_dict, read_problem, write_problem

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
    # dev0: floor z = min(0.02 a, 0.05 i); balance within 10% and budget 12 J for
    # L * 0.4 + 0.2 a + 0.6 i. Hand optimum: a = 20, i = 8 (0.4, 0.4) costs 8 + 4 + 4.8 > 12;
    # the breakpoint search gives a table inside the budget with image ~ 2/5 of audio.
    tau0 = result["tau"]["dev0"]
    assert 0.02 * tau0["audio"] <= 0.05 * tau0["image"] * 1.1 + 1e-12
    assert result["energy"]["dev0"] <= 12.5 + 1e-9
    assert result["status"] == "optimal"


def test_solve_table_and_csv(cli, good_file: Path) -> None:
    code, out, _ = cli("solve", str(good_file))
    assert code == 0 and "dev0" in out and "imbalance" in out
    code, out, _ = cli("solve", str(good_file), "--format", "csv", "--method", "uniform")
    assert code == 0 and out.splitlines()[0].startswith("method,device,modality,tau")
    assert len(out.strip().splitlines()) == 1 + 3


@pytest.mark.parametrize("method", ["exact", "heuristic", "proportional", "uniform"])
def test_solve_every_method_and_scope_override(cli, good_file: Path, method: str) -> None:
    code, out, err = cli("solve", str(good_file), "--method", method, "--scope", "network",
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
    proc = subprocess.run([sys.executable, "-m", "studies.cli", "solve", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
