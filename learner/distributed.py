"""One run as N processes with torch.distributed: the same run, the same numbers.

Each rank owns a contiguous block of devices and trains them batched, as the single process
trains all of them. Random numbers are drawn for every device and each rank keeps its rows, so
the streams do not depend on the process layout. Gossip reads neighbours on other ranks through
one ``batch_isend_irecv`` per tensor (sends and receives paired in one batch) with the same
Metropolis weights, each device's sum taken in the same order as in one process. The policy
(and the allocator behind it) runs on rank 0, which broadcasts tau; battery and drop-out
bookkeeping is replicated on every rank from the gathered speeds. Rank 0 writes the outputs.

Launch: ``dmmlkd train ... --nproc N`` (``torch.distributed.run --standalone`` underneath), or
across machines with torchrun (docs/learner.md, "Scale").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray
from torch import Tensor

from dmmlkd.learner import clock
from dmmlkd.learner.config import TrainConfig, config_from_dict
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.evaluate import consensus_accuracy, consensus_of, device_accuracy, eval_devices
from dmmlkd.learner.generator import Generator, train_generator
from dmmlkd.learner.gossip import gossip_rows, mixing
from dmmlkd.learner.local import LocalResult, local_training
from dmmlkd.learner.loop import (
    RunLog,
    RunResult,
    Setup,
    Trainer,
    _cannot_pay_cheapest_round,
    _overspending,
    build,
    effective_dropout,
    round_state,
    torch_threads,
)
from dmmlkd.learner.methods import get_method
from dmmlkd.learner.models import Network
from dmmlkd.learner.policy import Policy, as_decision
from dmmlkd.learner.schedules import RandomSchedule, uniform_dvfs_policy, uniform_policy
from dmmlkd.metrics.variation import SpeedTracker


def block_bounds(n_devices: int, world: int) -> NDArray[np.int64]:
    """Offsets (world + 1,) of the contiguous device blocks (sizes differ by at most one)."""
    sizes = np.array([len(b) for b in np.array_split(np.arange(n_devices), world)])
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@dataclass(frozen=True)
class Halo:
    """A rank's exchange plan: its rows each peer reads, and the neighbours it reads."""

    lo: int
    hi: int
    send: dict[int, NDArray[np.int64]]  # peer -> own local rows the peer needs
    recv: dict[int, NDArray[np.int64]]  # peer -> device ids received from it (ascending)
    index: NDArray[np.int64]  # (K,) device -> row of cat(own block, received rows); -1 elsewhere

    @property
    def ids(self) -> NDArray[np.int64]:
        """Device ids of the rows of cat(own block, received rows)."""
        parts = [np.arange(self.lo, self.hi)] + [self.recv[q] for q in sorted(self.recv)]
        return np.concatenate(parts).astype(np.int64)


def make_halo(table: NDArray[np.int64], bounds: NDArray[np.int64], rank: int) -> Halo:
    """The exchange plan of ``rank`` on the graph's padded neighbour table (static per run)."""
    K, world = table.shape[0], bounds.size - 1
    owner = np.searchsorted(bounds, np.arange(K), side="right") - 1
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])

    def outside(block: NDArray[np.int64], a: int, b: int) -> NDArray[np.int64]:
        ids = np.unique(block[block >= 0])
        return ids[(ids < a) | (ids >= b)]

    need = outside(table[lo:hi], lo, hi)
    recv = {int(q): need[owner[need] == q] for q in np.unique(owner[need])}
    send = {}
    for q in range(world):
        if q != rank:
            theirs = np.unique(table[bounds[q]:bounds[q + 1]])
            mine = theirs[(theirs >= lo) & (theirs < hi)]
            if mine.size:
                send[q] = mine - lo
    index = np.full(K, -1, np.int64)
    halo = Halo(lo, hi, send, recv, index)
    index[halo.ids] = np.arange(halo.ids.size)
    return halo


def exchange(t: Tensor, halo: Halo) -> Tensor:
    """cat(own rows, neighbours' rows from other ranks): one batch of paired sends/receives."""
    own = t.detach()
    ops, bufs = [], {}
    for q, rows in sorted(halo.send.items()):
        ops.append(dist.P2POp(dist.isend, own[torch.as_tensor(rows)].contiguous(), q))
    for q, ids in sorted(halo.recv.items()):
        bufs[q] = torch.empty((ids.size, *own.shape[1:]), dtype=own.dtype)
        ops.append(dist.P2POp(dist.irecv, bufs[q], q))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    return torch.cat([own] + [bufs[q] for q in sorted(bufs)])


def gather_rows(block: NDArray[Any]) -> NDArray[Any]:
    """Every rank's block of rows, concatenated in rank order (= device order)."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, block)
    return np.concatenate(parts)


class BlockRng:
    """A NumPy generator that draws for every device and keeps a block's rows.

    ``random((rows, ...))`` with ``rows`` = the block size draws ``(n_devices, ...)`` and
    returns the block's rows, so a rank consumes the stream exactly as one process does.
    """

    def __init__(self, rng: np.random.Generator, lo: int, hi: int, n_devices: int) -> None:
        self.rng, self.lo, self.hi, self.n = rng, lo, hi, n_devices

    def random(self, size: Any = None) -> Any:
        """Uniform [0, 1) numbers; a block-sized first axis is drawn for all devices."""
        shape = (size,) if isinstance(size, int) else tuple(size) if size is not None else None
        if shape and shape[0] == self.hi - self.lo:
            return self.rng.random((self.n, *shape[1:]))[self.lo:self.hi]
        return self.rng.random(size)


def _advance_streams(iterations: int, s: Setup, trainer: Trainer, generator: Generator | None,
                     dropout: float) -> None:
    """Draw what ``iterations`` more local iterations draw in one process (this block ran
    fewer than the longest device elsewhere): keeps every rank on the same random stream."""
    K, M = s.holds.shape
    B = s.config.batch_size
    rng = trainer.rng.rng if isinstance(trainer.rng, BlockRng) else trainer.rng
    for _ in range(iterations):
        rng.random((K, B))
        if dropout > 0:
            rng.random((K, M))
        if generator is not None and trainer.weights.kd:
            torch.randn((K, B, generator.noise_dim), generator=trainer.gen)


def _gather_optional(block: NDArray[Any] | None) -> NDArray[Any] | None:
    """gather_rows, or None when local training did not measure it (same on every rank)."""
    return None if block is None else gather_rows(block)


def _block_of(s: Setup, lo: int, hi: int) -> Setup:
    """The rank's view of a run: its devices' rows of the network, generator and data."""
    def cut(t: Tensor) -> Tensor:
        return t.detach()[lo:hi].clone().requires_grad_(True)

    net = Network([{k: cut(t) for k, t in b.items()} for b in s.net.blocks],
                  {k: cut(t) for k, t in s.net.shared.items()}, s.net.n_classes, s.net.feature,
                  s.net.encoders)
    gen = None
    if s.generator is not None:
        gen = Generator({k: cut(t) for k, t in s.generator.params.items()}, s.generator.n_classes,
                        s.generator.noise_dim, layout=(lo, s.holds.shape[0]))
    return dataclasses.replace(s, parts=s.parts[lo:hi], holds=s.holds[lo:hi], net=net,
                               generator=gen)


def run_rank(config: TrainConfig, policy: Policy | None = None) -> RunResult:
    """This rank's part of the run (call inside an initialised process group).

    Every rank returns the same tables; the policy is asked on rank 0 only.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    t_start = time.perf_counter()
    with torch_threads(config.threads):
        s = build(config)
        if s.method.modulation is not None:
            raise ConfigError(f"method {config.method!r}: OGM-GE gradient noise is not supported "
                              "with --nproc yet (run it in one process)")
        if s.method.policy == "external" and policy is None and rank == 0:
            raise ConfigError(f"method {config.method!r} needs an allocation policy")
        if policy is None and s.method.policy == "random":
            policy = RandomSchedule(config.schedule_spread, config.seed)
        policy = policy or (uniform_dvfs_policy if s.method.policy == "uniform-dvfs"
                            else uniform_policy)
        K, M = s.holds.shape
        bounds = block_bounds(K, world)
        lo, hi = int(bounds[rank]), int(bounds[rank + 1])
        table = s.topology.neighbor_table
        halo = make_halo(table, bounds, rank)
        own = np.arange(lo, hi)
        sb = _block_of(s, lo, hi)
        s.net = sb.net  # the full network is not kept: only this block's rows live on
        s.generator = sb.generator
        trainer = Trainer.create(sb)
        trainer.rng = BlockRng(trainer.rng, lo, hi, K)  # type: ignore[assignment]
        dropout = effective_dropout(s)
        views, labels = trainer.test_views, s.data.test_labels
        tracker = SpeedTracker(K, M, beta=config.speed_beta)

        def row_sum(t: Tensor, rows: NDArray[np.bool_]) -> tuple[Tensor, int]:
            part = t.detach()[torch.as_tensor(rows[lo:hi])].to(torch.float64).sum(0, keepdim=True)
            dist.all_reduce(part)
            return part, int(rows.sum())

        def gossip(tensors: list[Tensor], mask: NDArray[np.bool_]) -> None:
            mix = mixing(table, mask)
            with torch.no_grad():
                for p in tensors:
                    p.copy_(gossip_rows(p.detach(), mix, own, exchange(p, halo), halo.index))

        def evaluate_block(views: list[Tensor], labels: NDArray[np.int64],
                           picked: NDArray[np.int64]) -> dict[str, Any]:
            """learner.evaluate.evaluate over the ranks: own devices here, consensus summed."""
            mine = picked[(picked >= lo) & (picked < hi)]
            acc = np.full(hi - lo, np.nan)
            acc[mine - lo] = device_accuracy(sb.net, sb.holds, views, labels, mine - lo)
            device = gather_rows(acc)
            acc_all, alone = consensus_accuracy(consensus_of(sb.net, s.holds, active, row_sum),
                                                views, labels)
            return {"device": device,
                    "accuracy": float(device[picked].mean()) if picked.size else float("nan"),
                    "consensus": acc_all,
                    "modality": {v: alone[m] for m, v in enumerate(s.data.views)},
                    "evaluated": int(picked.size)}

        battery, active = s.battery_j.copy(), np.ones(K, bool)
        last_tau = np.zeros((K, M), np.int64)
        log = RunLog(s)
        for t in range(config.rounds):
            log.drop(t, active, _cannot_pay_cheapest_round(s, battery, active))
            speed = tracker.speed(s.holds)
            box: list[Any] = [None, 0.0]
            if rank == 0:
                state = round_state(s, t, speed, battery, active, last_tau)
                t0 = time.perf_counter()
                box[0] = as_decision(policy(state))
                box[1] = time.perf_counter() - t0
            dist.broadcast_object_list(box, src=0)  # tau, frequencies and the policy's log
            decision = box[0]
            log.policy_s_round = box[1]
            log.policy_s += log.policy_s_round
            log.drop(t, active, {k: "policy: cannot pay the cheapest round" for k in decision.dropped})
            tau = np.where(s.holds & active[:, None], decision.tau, 0).astype(np.int64)
            cpu = clock.check_cpu_hz(decision.cpu_hz, s.profile.levels_hz())
            log.drop(t, active, _overspending(s, tau, battery, active, cpu))
            tau[~active] = 0
            cost = np.where(active, s.profile.round_cost(tau, s.holds, cpu), 0.0)
            t0 = time.perf_counter()
            local = local_training(sb.net, trainer.data, tau[lo:hi], sb.holds, active[lo:hi],
                                   trainer.opt, trainer.rng, trainer.gen,
                                   config.batch_size, trainer.weights, sb.generator, None,
                                   modality_dropout=dropout, fusion_rule=config.fusion_rule)
            _advance_streams(int(tau.max(initial=0)) - int(tau[lo:hi].max(initial=0)), s, trainer,
                             sb.generator, dropout)
            n_active = int(active[lo:hi].sum())
            losses = gather_rows(np.array([[local.loss * n_active if n_active else 0.0, n_active]]))
            whole = LocalResult(
                [], [], gather_rows(local.variation),
                float(losses[:, 0].sum() / max(losses[:, 1].sum(), 1)),
                forward_passes=_gather_optional(local.forward_passes),
                backward_passes=_gather_optional(local.backward_passes),
                confidence=_gather_optional(local.confidence))
            signal = whole.confidence if config.signal == "confidence" and \
                whole.confidence is not None else whole.variation
            tracker.update(signal)
            battery = battery - cost
            talking = active & (tau.max(axis=1) > 0)  # as in learner.loop.run
            for m, block in enumerate(sb.net.blocks):
                gossip(list(block.values()), s.holds[:, m] & talking)
            gossip(list(sb.net.shared.values()), talking)
            if sb.generator is not None and talking.any():
                w_src = exchange(sb.net.shared["wk"], halo)
                b_src = exchange(sb.net.shared["bk"], halo)
                local_table = np.where(table[lo:hi] >= 0, halo.index[np.maximum(table[lo:hi], 0)], -1)
                train_generator(sb.generator, w_src, b_src, local_table, talking[halo.ids],
                                config.generator_steps, config.batch_size, config.generator_lr,
                                trainer.gen, own=np.arange(hi - lo))
                gossip(list(sb.generator.params.values()), talking)
            log.train_s_round = time.perf_counter() - t0
            log.train_s += log.train_s_round
            executed = s.profile.executed_cost(whole.forward_passes, whole.backward_passes, talking,
                                               cpu)
            log.record(t, decision, tau, speed, whole, cost, executed, battery, active,
                       evaluate_block(views, labels, eval_devices(config, t, active)))
            del local
            log.record_clock(cpu, s.profile.device_time_s(tau, s.holds, cpu), active)
            last_tau = tau
        if s.data.val_labels.size:  # as learner.loop.run: validation at the end
            log.validation = evaluate_block(trainer.val_views, s.data.val_labels,
                                            eval_devices(config, config.rounds - 1, active))
        return log.result(time.perf_counter() - t_start)


def launch(config: TrainConfig, out_dir: str | Path | None, nproc: int) -> dict[str, Any]:
    """Run ``config`` as ``nproc`` local processes (torch.distributed.run, gloo) and return the
    summary; rank 0 writes the outputs into ``out_dir``. A user error in the ranks is raised
    here as ConfigError with its message."""
    config.validate()
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc must be a positive integer (got {nproc!r})")
    if get_method(config.method).modulation is not None:
        raise ConfigError(f"method {config.method!r}: OGM-GE gradient noise is not supported "
                          "with --nproc yet (run it in one process)")
    if nproc > config.devices:
        raise ConfigError(f"nproc {nproc} exceeds devices {config.devices}: every rank needs a device")
    with tempfile.TemporaryDirectory(prefix="dmmlkd-nproc-") as tmp:
        cfg, summary, error = (Path(tmp) / n for n in ("config.json", "summary.json", "error.txt"))
        cfg.write_text(json.dumps(config.to_dict()))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "dmmlkd.learner.distributed", "--config", str(cfg),
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
    """A rank's entry point under torchrun: ``-m learner.distributed --config run.json``."""
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
                from dmmlkd.learner.config import load_config

                config = load_config(path)
            # The entry point is where the studies layer (allocator policies, writers) joins.
            from dmmlkd.bridge.training import _clean, policy_for, write_outputs

            result = run_rank(config, policy_for(config) if rank == 0 else None)
        except Exception as exc:  # noqa: BLE001 - a user error becomes one line for the launcher
            if getattr(exc, "exit_code", None) == 2:
                if rank == 0 and args.error:
                    Path(args.error).write_text(str(exc))
                print(f"error: {exc}", file=sys.stderr)
                return 2
            raise
        if rank == 0:
            result.summary["nproc"] = dist.get_world_size()
            if args.out:
                write_outputs(result, config, Path(args.out))
            if args.summary:
                Path(args.summary).write_text(json.dumps(_clean(result.summary)))
        dist.barrier()
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
