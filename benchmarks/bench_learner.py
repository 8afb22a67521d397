"""`dmmlkd bench learner`: seconds per round and peak memory of the learner over device counts.

Each size runs in a fresh subprocess (``python -m dmmlkd.benchmarks.bench_learner --devices K``), so its
peak resident memory (``getrusage`` max RSS, Python and torch included) is its own. Synthetic
data sized to 25 training samples per device, ``min_samples = 5``, the default method and
ring topology, one torch thread. Numbers are printed and written as Markdown; nothing here is
a timed unit test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SAMPLES_PER_DEVICE = 25
TEST_FRACTION = 0.2  # learner.data's test split; the validation split comes out of training
LEARNER_SIZES = (64, 256, 1_024, 4_096, 10_000)


def n_samples_for(devices: int, per_device: int = SAMPLES_PER_DEVICE,
                  val_fraction: float = 0.1) -> int:
    """Synthetic n_samples giving about ``per_device`` training samples per device: the test
    split takes 20 % and the validation split ``val_fraction`` of the rest."""
    return math.ceil(devices * per_device / ((1.0 - TEST_FRACTION) * (1.0 - val_fraction)))


@dataclass
class LearnerBench:
    """What to measure."""

    sizes: tuple[int, ...] = LEARNER_SIZES
    rounds: int = 3
    seed: int = 0
    method: str = "dmml-kd"
    topology: str = "ring"
    timeout_s: float = 3600.0


def measure(devices: int, rounds: int, seed: int = 0, method: str = "dmml-kd",
            topology: str = "ring") -> dict[str, Any]:
    """One run in this process: setup and per-round seconds, peak RSS, accuracies."""
    from dmmlkd.learner.config import TrainConfig
    from dmmlkd.learner.loop import run
    from dmmlkd.learner.policy import RoundState
    from dmmlkd.learner.schedules import uniform_policy

    config = TrainConfig(dataset="synthetic", devices=devices, rounds=rounds, seed=seed,
                         method=method, topology=topology, min_samples=5)
    config.n_samples = n_samples_for(devices, val_fraction=config.val_fraction)
    starts: list[tuple[float, float]] = []

    def timed_policy(state: RoundState) -> Any:  # called once at the start of every round
        starts.append((time.perf_counter(), time.process_time()))
        return uniform_policy(state)

    t0 = time.perf_counter()
    result = run(config, timed_policy, progress=False)
    end, end_cpu = time.perf_counter(), time.process_time()
    per_round = (end - starts[0][0]) / rounds
    # CPU seconds of this process: unlike wall time, not inflated by other work on the machine.
    cpu_per_round = (end_cpu - starts[0][1]) / rounds
    s = result.summary
    return {"devices": devices, "rounds": rounds, "setup_s": starts[0][0] - t0,
            "s_per_round": per_round, "ms_per_device_round": 1e3 * per_round / devices,
            "cpu_ms_per_device_round": 1e3 * cpu_per_round / devices,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "accuracy": s["accuracy"], "consensus_accuracy": s["consensus_accuracy"],
            "evaluated_devices": s["evaluated_devices"], "total_s": end - t0}


def run_sizes(bench: LearnerBench) -> pd.DataFrame:
    """Every size in its own subprocess; a size that fails or times out gets a note."""
    import pandas as pd

    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for k in bench.sizes:
        cmd = [sys.executable, "-m", "dmmlkd.benchmarks.bench_learner", "--devices", str(k), "--rounds",
               str(bench.rounds), "--seed", str(bench.seed), "--method", bench.method,
               "--topology", bench.topology]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  timeout=bench.timeout_s)
        except subprocess.TimeoutExpired:
            rows.append({"devices": k, "note": f"timed out after {bench.timeout_s:g} s"})
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"devices": k, "note": f"failed (exit {proc.returncode}): {tail}"})
            continue
        rows.append(json.loads(lines[-1]))
        print(f"  {k} devices: {rows[-1]['s_per_round']:.2f} s/round, "
              f"{rows[-1]['cpu_ms_per_device_round']:.2f} CPU ms/device-round, "
              f"{rows[-1]['peak_rss_gb']:.2f} GB", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows)
    if "cpu_ms_per_device_round" in frame and (frame["devices"] == 256).any():
        base = frame.loc[frame["devices"] == 256, "cpu_ms_per_device_round"].iloc[0]
        frame["vs_256"] = frame["cpu_ms_per_device_round"] / base  # CPU time: robust to load
    return frame


def targets(frame: pd.DataFrame) -> list[str]:
    """The issue's targets, checked on the measured table."""
    out = []
    by = frame.set_index("devices")
    if {256, 4_096} <= set(by.index) and "vs_256" in by and not math.isnan(by.loc[4_096, "vs_256"]):
        ratio = float(by.loc[4_096, "vs_256"])
        out.append(f"- per device-round CPU time at 4,096 / at 256 = {ratio:.2f} (target <= 1.5): "
                   f"{'met' if ratio <= 1.5 else 'NOT met'}")
    if 10_000 in by.index and "peak_rss_gb" in by and not math.isnan(by.loc[10_000, "peak_rss_gb"]):
        gb = float(by.loc[10_000, "peak_rss_gb"])
        out.append(f"- 10,000 devices x {int(by.loc[10_000, 'rounds'])} rounds peak RSS "
                   f"{gb:.2f} GB (target <= 8): {'met' if gb <= 8 else 'NOT met'}")
    return out


def run_cli(args: argparse.Namespace) -> int:
    """`dmmlkd bench learner`: run the sweep, print Markdown, write it to --out (never over a file)."""
    from dmmlkd.studies.spec import StudyError
    from dmmlkd.userio import to_markdown
    from dmmlkd.userio.owned import write_stamped

    try:
        sizes = tuple(int(s) for s in args.learner_sizes.split(","))
    except ValueError:
        raise StudyError(f"--learner-sizes must be comma-separated integers "
                         f"(got {args.learner_sizes!r})") from None
    if min(sizes) < 2 or args.rounds < 1:
        raise StudyError(f"--learner-sizes need >= 2 devices and --rounds >= 1 (got {sizes}, "
                         f"{args.rounds})")
    # --out was checked by `dmmlkd bench` before any work (userio.owned.check_replaceable).
    bench = LearnerBench(sizes=sizes, rounds=args.rounds, seed=args.seed)
    t0 = time.perf_counter()
    frame = run_sizes(bench)
    text = "\n".join([
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; synthetic data, {SAMPLES_PER_DEVICE} training samples per "
        f"device, min_samples 5, {bench.method}, {bench.topology}, {bench.rounds} rounds, seed "
        f"{bench.seed}, one torch thread, each size in a fresh process.", "",
        to_markdown(frame), "", *targets(frame), "",
        f"(total benchmark time {time.perf_counter() - t0:.0f} s)"])
    print(text)
    if args.out:
        write_stamped(args.out, text + "\n", "bench", "<!--")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The learner bench's options on `dmmlkd bench`."""
    p.add_argument("--learner-sizes", default=",".join(map(str, LEARNER_SIZES)),
                   help="learner: comma-separated device counts")
    p.add_argument("--rounds", type=int, default=3, help="learner: rounds per size")


def main(argv: list[str] | None = None) -> int:
    """One size, in this process: print its measurements as one JSON line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="dmml-kd")
    p.add_argument("--topology", default="ring")
    a = p.parse_args(argv)
    print(json.dumps(measure(a.devices, a.rounds, a.seed, a.method, a.topology)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
