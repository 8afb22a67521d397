"""`dmmlkd train`: outputs on disk, rerun from the saved config, user errors as one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tomllib

from dmmlkd.userio import MANIFEST

TINY = ["--dataset", "synthetic", "--devices", "3", "--rounds", "2", "--quiet"]


def test_train_writes_config_rounds_and_summary(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("train", *TINY, "--out", str(out))
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"config.toml", "rounds.parquet", "history.csv",
                                               "summary.json", MANIFEST}
    summary = json.loads((out / "summary.json").read_text())
    for key in ("method", "rounds", "accuracy", "consensus_accuracy", "modality_accuracy",
                "energy_used_j", "dropped_devices", "wall_time_s", "policy_time_s", "train_time_s"):
        assert key in summary
    assert set(summary["modality_accuracy"]) == {"m0", "m1"}
    assert json.loads(stdout)["accuracy"] == summary["accuracy"]  # the summary is printed
    rows = pd.read_parquet(out / "rounds.parquet")
    assert len(rows) == 2 * 3 * 2  # rounds x devices x modalities (all held)
    for column in ("round", "device", "modality", "tau", "v", "b", "energy_j", "battery_j", "active"):
        assert column in rows
    config = tomllib.loads((out / "config.toml").read_text())["train"]
    assert config["devices"] == 3 and config["dataset"] == "synthetic"
    # The saved config reruns to the same numbers.
    code, stdout2, _ = cli("train", "--config", str(out / "config.toml"), "--quiet")
    assert code == 0 and json.loads(stdout2)["accuracy"] == summary["accuracy"]
    assert json.loads(stdout2)["modality_accuracy"] == summary["modality_accuracy"]


def test_flags_override_the_config_file(cli, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[train]\ndataset = "synthetic"\ndevices = 4\nrounds = 3\nmethod = "dpsgd"\n')
    code, stdout, err = cli("train", "--config", str(config), "--rounds", "1", "--quiet")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["rounds"] == 1 and summary["devices"] == 4 and summary["method"] == "dpsgd"


@pytest.mark.parametrize("args,message", [
    (["--views", "fac,nope"], "unknown view 'nope'"),
    (["--alpha", "0"], "alpha must be in (0, 1e9]"),
    (["--alpha", "-1"], "alpha must be in (0, 1e9]"),
    (["--devices", "900"], "devices=900 need"),
    (["--topology", "torus", "--devices", "7"], "torus needs"),
    (["--topology", "mesh"], "topology must be one of"),
    (["--method", "magic"], "method must be one of"),
    (["--missing-rate", "1.5"], "missing_rate must be in [0, 1)"),
    (["--devices", "1"], "devices must be in [2, 100000]"),
    (["--config", "does-not-exist.toml"], "no such file"),
])
def test_bad_values_exit_2_with_one_line(cli, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bad"
    code, stdout, err = cli("train", *args, "--rounds", "1", "--out", str(out), "--quiet")
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, no temp folder


@pytest.mark.parametrize("body,message", [
    ('[train]\ntopology = "erdos-renyi"\ntopology_p = 0.01\ndataset = "synthetic"\n',
     "stayed disconnected"),
    ('[train]\nlearning_rate = 0.1\n', "unknown option 'learning_rate'"),
    ('[train]\nalpha = "high"\n', "alpha"),
    ("[train\n", "not valid TOML"),
])
def test_bad_config_files_exit_2_with_one_line(cli, tmp_path: Path, body: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(body)
    out = tmp_path / "bad"
    code, stdout, err = cli("train", "--config", str(config), "--out", str(out), "--quiet")
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _diverging(tmp_path: Path, lr: float) -> Path:
    config = tmp_path / "run.toml"
    config.write_text(f'[train]\ndataset = "synthetic"\ndevices = 4\nrounds = 6\nn_samples = 120\n'
                      f'lr = {lr}\n')
    return config


def _check_diverged(out: Path, stderr: str, round_: int, loss: str) -> None:
    assert stderr.strip() == f"method 'dmml-kd' diverged in round {round_}: the training loss " \
        f"became {loss} (training stopped there)"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_round"] == round_
    assert summary["reason"] == stderr.strip()
    history = pd.read_csv(out / "history.csv")
    assert history["round"].tolist() == list(range(round_ + 1))  # stopped at that round
    assert history["loss"].iloc[:-1].map(math.isfinite).all()
    assert not math.isfinite(history["loss"].iloc[-1])


def test_a_diverged_run_stops_says_so_in_one_line_and_exits_1(tmp_path: Path) -> None:
    """The real command line: lr 1 makes this tiny run's loss overflow to nan in round 1
    (round losses 26.7, nan)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "dmmlkd.cli", "train", "--config",
                           str(_diverging(tmp_path, 1.0)), "--quiet", "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and proc.stdout == ""
    _check_diverged(out, proc.stderr, 1, "nan")


def test_an_infinite_loss_is_divergence_too_and_a_normal_run_is_ok(cli, tmp_path: Path) -> None:
    """lr 5: the loss is inf in round 0; the same run at lr 0.05 is "ok"."""
    config = _diverging(tmp_path, 5.0)
    code, stdout, err = cli("train", "--config", str(config), "--quiet", "--out",
                            str(tmp_path / "run"))
    assert code == 1 and stdout == ""
    _check_diverged(tmp_path / "run", err, 0, "inf")
    config.write_text(config.read_text().replace("lr = 5.0", "lr = 0.05"))
    code, stdout, _ = cli("train", "--config", str(config), "--quiet", "--rounds", "2")
    assert code == 0 and json.loads(stdout)["status"] == "ok"
    assert "diverged_round" not in json.loads(stdout)
