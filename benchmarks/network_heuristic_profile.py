"""Profile the network-scope heuristic on a generated instance.

Usage: .venv/bin/python -m dmmlkd.benchmarks.network_heuristic_profile K SEED
Prints CPU and wall seconds, objective, certified gap, then the top of the profile.
"""

import cProfile
import pstats
import sys
import time

from dmmlkd.allocator import generate_problem, solve

K, seed = int(sys.argv[1]), int(sys.argv[2])
problem = generate_problem(devices=K, modalities=4, scope="network", seed=seed)
c0, t0 = time.process_time(), time.perf_counter()
profile = cProfile.Profile()
profile.enable()
alloc = solve(problem, "heuristic")
profile.disable()
print(f"K={K} seed={seed} cpu_s={time.process_time() - c0:.1f} "
      f"wall_s={time.perf_counter() - t0:.1f} objective={alloc.objective:.6g} "
      f"certified_gap={alloc.gap:.4%}", flush=True)
pstats.Stats(profile).sort_stats("cumtime").print_stats(14)
