"""Profile the network-scope heuristic on a generated instance: PYTHONPATH=. python benchmarks/network_heuristic_profile.py K SEED (CPU and wall seconds, objective, certified gap, top of the profile)."""
import cProfile
import pstats
import sys
import time

from allocator import generate_problem, solve

K, seed = int(sys.argv[1]), int(sys.argv[2])
p = generate_problem(devices=K, modalities=4, scope='network', seed=seed)
c0, t0 = time.process_time(), time.perf_counter()
pr = cProfile.Profile(); pr.enable()
a = solve(p, "heuristic")
pr.disable()
print(f"K={K} seed={seed} cpu_s={time.process_time()-c0:.1f} wall_s={time.perf_counter()-t0:.1f} objective={a.objective:.6g} certified_gap={a.gap:.4%}", flush=True)
pstats.Stats(pr).sort_stats('cumtime').print_stats(14)
