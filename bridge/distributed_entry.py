"""`dmmlkd train --nproc N`: launch one run as N local processes, and each process's entry point.

The round loop is `learner.loop.run` with the gloo backend (`learner.distributed.GlooComm`);
this module is where a rank gets what lives above the learner: the allocator policy
(`bridge.training.policy_for`) and the output writers. Rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dmmlkd.learner.config import TrainConfig, config_from_dict, load_config
from dmmlkd.learner.errors import ConfigError
from dmmlkd.userio import UserError

ENTRY = "dmmlkd.bridge.distributed_entry"  # what torch.distributed.run starts in every process


def launch(config: TrainConfig, out_dir: str | Path | None, nproc: int) -> dict[str, Any]:
    """Run ``config`` as ``nproc`` local processes (torch.distributed.run, gloo) and return the
    summary; rank 0 writes the outputs into ``out_dir``. A user error in the ranks is raised
    here as ConfigError with its message."""
    config.validate()
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc must be a positive integer (got {nproc!r})")
    if nproc > config.devices:
        raise ConfigError(f"nproc {nproc} exceeds devices {config.devices}: every rank needs a device")
    with tempfile.TemporaryDirectory(prefix="dmmlkd-nproc-") as tmp:
        cfg, summary, error = (Path(tmp) / n for n in ("config.json", "summary.json", "error.txt"))
        cfg.write_text(json.dumps(config.to_dict()))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", ENTRY, "--config", str(cfg),
               "--summary", str(summary), "--error", str(error)]
        if out_dir is not None:
            cmd += ["--out", str(out_dir)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if error.exists():
            raise ConfigError(error.read_text().strip())
        if proc.returncode != 0 or not summary.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
            raise RuntimeError(f"--nproc {nproc}: the ranks failed (exit {proc.returncode}):\n{tail}")
        return dict(json.loads(summary.read_text()))


def main(argv: list[str] | None = None) -> int:
    """A rank's entry point under torchrun: ``-m dmmlkd.bridge.distributed_entry --config run.json``."""
    import torch
    import torch.distributed as dist

    from dmmlkd.bridge.training import clean_summary, policy_for, write_outputs
    from dmmlkd.learner.distributed import GlooComm
    from dmmlkd.learner.loop import run

    p = argparse.ArgumentParser(description="one rank of a distributed dmmlkd run (torchrun)")
    p.add_argument("--config", required=True, help="JSON or TOML run configuration")
    p.add_argument("--out", default=None, help="output folder (written by rank 0)")
    p.add_argument("--summary", default=None, help="also write the summary JSON here (rank 0)")
    p.add_argument("--error", default=None, help="write a user error's message here (rank 0)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        dist.barrier()  # the first collective includes every rank
        rank = dist.get_rank()
        try:
            path = Path(args.config)
            if path.suffix == ".json":
                config = config_from_dict(json.loads(path.read_text()), str(path))
            else:
                config = load_config(path)
            result = run(config, policy_for(config), progress=False, backend=GlooComm)
        except UserError as exc:  # a user error becomes one line for the launcher
            if rank == 0 and args.error:
                Path(args.error).write_text(str(exc))
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        if rank == 0:
            result.summary["nproc"] = dist.get_world_size()
            if args.out:
                write_outputs(result, config, Path(args.out))
            if args.summary:
                Path(args.summary).write_text(json.dumps(clean_summary(result.summary)))
        dist.barrier()
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
