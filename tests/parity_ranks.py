"""A rank of the parity test (tests/test_distributed.py): run every case of a JSON file with the
gloo backend in one process group (one launch for all methods) and pickle rank 0's tables.

Usage: ``python -m torch.distributed.run --standalone --nproc-per-node=N tests/parity_ranks.py
CASES.json OUT.pkl``; a case is ``{"config": {...TrainConfig fields...}, "schedule": bool}``
(schedule: a `RandomSchedule` policy, so devices run uneven iteration counts).
"""

from __future__ import annotations

import json
import pickle
import sys
from typing import Any

import torch
import torch.distributed as dist

from dmmlkd.bridge.training import policy_for
from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.distributed import GlooComm
from dmmlkd.learner.loop import RunResult, run
from dmmlkd.learner.schedules import RandomSchedule


def run_case(case: dict[str, Any], backend: Any = None) -> RunResult:
    """One case, in process (backend None) or with the given backend."""
    config = TrainConfig(**case["config"])
    policy = RandomSchedule(2, 5) if case.get("schedule") else policy_for(config)
    return run(config, policy, progress=False, **({} if backend is None else {"backend": backend}))


def main() -> None:
    cases, out = json.loads(open(sys.argv[1]).read()), sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        tables = [(r.rows, r.rounds, r.summary) for r in (run_case(c, GlooComm) for c in cases)]
        if dist.get_rank() == 0:
            with open(out, "wb") as f:
                pickle.dump(tables, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
