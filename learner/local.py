"""Local training of all devices at once, with per-modality iteration counts.

Device k runs L_k = max_m tau[k, m] iterations; the encoder of modality m is updated only while
i <= tau[k, m]; the shared fusion and common classifiers are updated in every one of the L_k
iterations. Two fusion rules: ``"all"`` (DESIGN.md: every held encoder runs forward in every
iteration and feeds the fused prediction) and ``"training"`` (the default: only encoders still
training feed it, so a stopped encoder also stops its forward passes; see docs/learner.md). The
update is SGD with momentum applied through a (device, block) mask, so a frozen block moves by
exactly zero.

Executed = charged: the encoders are batched over devices, but a device uses only the rows of
the passes it runs (`_executed`): the rows of a stopped encoder are zeros that carry no value and
no gradient, a device past its L_k contributes no loss, an encoder stopped on every device is not
computed at all. The passes that ran are counted (`LocalResult.forward_passes/backward_passes`)
and the loop derives the executed energy from the counts (tests/test_models_local.py perturbs
the unused rows and checks that nothing changes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from dmmlkd.learner.generator import Generator, draw_rows
from dmmlkd.learner.models import Network, common_logits, fuse


@dataclass
class LossWeights:
    """Weights of the DMML-KD losses; 0 switches a term off."""

    difference: float = 0.05  # keep common and specific features apart
    similarity: float = 0.1  # pull a sample's common features together across modalities
    common: float = 0.5  # common-feature classifier on the devices' own common features
    kd: float = 0.5  # align common features with the generator and train on its samples


# (scores (K, M) of each modality on the batch, holds (K, M)) -> gradient coefficients (K, M)
Modulation = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LocalData:
    """Training views as tensors and each device's sample indices (flattened with offsets)."""

    views: list[Tensor]
    labels: Tensor
    index: NDArray[np.int64]
    offsets: NDArray[np.int64]
    sizes: NDArray[np.int64]

    @classmethod
    def create(cls, views: list[np.ndarray], labels: np.ndarray, parts: list[np.ndarray]) -> LocalData:
        """Pack the per-device partitions."""
        sizes = np.array([p.size for p in parts])
        return cls([torch.as_tensor(v) for v in views], torch.as_tensor(labels),
                   np.concatenate(parts), np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)

    def batch(self, batch_size: int, rng: np.random.Generator,
              layout: tuple[int, int] | None = None) -> Tensor:
        """Sample indices (K, B) from each device's own data.

        ``layout`` (first device, all devices): these K devices are one block of a larger run;
        numbers are drawn for all devices and the block keeps its rows (`draw_rows`).
        """
        first, total = draw_rows(layout, self.sizes.size)
        pos = (rng.random((total, batch_size))[first:first + self.sizes.size]
               * self.sizes[:, None]).astype(np.int64)
        return torch.as_tensor(self.index[self.offsets[:, None] + pos])


@dataclass
class Optimizer:
    """SGD with momentum whose updates are masked per device and block."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    buffers: dict[int, Tensor] = field(default_factory=dict)

    def step(self, params: list[Tensor], mask: Tensor) -> None:
        """Update params (K, ...) on the devices where mask (K,) is 1."""
        with torch.no_grad():
            for p in params:
                if p.grad is None:
                    continue
                m = mask.view(-1, *([1] * (p.dim() - 1)))
                # In place on one temporary: at 10,000 devices a block tensor is ~300 MB.
                step = p.grad.add(p, alpha=self.weight_decay).mul_(m)
                buf = self.buffers.get(id(p))
                if buf is None:
                    buf = torch.zeros_like(p)
                    self.buffers[id(p)] = buf
                buf.mul_(torch.where(m > 0, self.momentum, 1.0)).add_(step)
                p.sub_(torch.mul(buf, m, out=step).mul_(self.lr))


@dataclass
class LocalResult:
    """What local training measured: per-modality parameter snapshots, speeds and mean loss."""

    start: list[NDArray[np.float32]]  # per modality: (K, P_m) block parameters before the round
    end: list[NDArray[np.float32]]  # per modality: (K, P_m) block parameters after local training
    variation: NDArray[np.float64]  # v[k, m] = parameter_variation(start, end, tau) (nan: tau 0)
    loss: float
    modulation: NDArray[np.float64] | None = None  # mean gradient coefficients (K, M), OGM-GE
    # Executed passes per device and modality: encoder forward passes whose output was used,
    # and backward passes (gradient computed and applied). Energy is derived from these.
    forward_passes: NDArray[np.int64] | None = None
    backward_passes: NDArray[np.int64] | None = None
    # Mean probability the common classifier gives the true class from c_m alone, over the
    # passes that ran (nan: none ran): how well modality m has learned on its own.
    confidence: NDArray[np.float64] | None = None
    # (K, L) each device's loss in each of the round's L iterations (0 where it did not run):
    # `mean_loss` turns it into ``loss``, also over devices gathered from several processes.
    device_loss: NDArray[np.float32] | None = None


def mean_loss(device_loss: NDArray[np.float32], local_iters: NDArray[np.int64]) -> float:
    """The round's loss: per iteration the mean over the devices still iterating, then the mean
    over iterations (nan when nothing ran). Summed in float32 as torch sums the batched loss, so
    rows gathered from several processes give the bits of one process."""
    means = []
    for i in range(device_loss.shape[1]):
        on = local_iters > i
        means.append(float(torch.as_tensor(device_loss[on, i]).sum()) / max(int(on.sum()), 1))
    return float(np.mean(means)) if means else float("nan")


def flatten_block(block: dict[str, Tensor]) -> NDArray[np.float32]:
    """One modality block's parameters as a (K, P) array, one row per device."""
    tensors = [t.detach().reshape(t.shape[0], -1) for t in block.values()]
    out = np.empty((tensors[0].shape[0], sum(t.shape[1] for t in tensors)), np.float32)
    at = 0
    for t in tensors:  # straight into one array: no (K, P) intermediate at 10,000 devices
        out[:, at:at + t.shape[1]] = t.numpy()
        at += t.shape[1]
    return out


def measure_variation(start: list[NDArray[np.float32]], end: list[NDArray[np.float32]],
                      tau: NDArray[np.int64]) -> NDArray[np.float64]:
    """v[k, m] = ||end - start|| / (||start|| tau[k, m]) (metrics.variation), nan where tau is 0.

    metrics.variation.parameter_variation's rule, vectorised over devices (row norms in float64).
    """
    K, M = tau.shape
    v = np.full((K, M), np.nan)
    change, norm = np.zeros(K), np.zeros(K)
    for m in range(M):
        for r in range(0, K, 256):  # row chunks: float64 copies of a few MB, not of (K, P)
            s, e = start[m][r:r + 256].astype(np.float64), end[m][r:r + 256].astype(np.float64)
            n = s.shape[0]
            if n == 1:  # einsum sums a lone row in another order: pad it, so that a row's
                s, e = np.pad(s, ((0, 1), (0, 0))), np.pad(e, ((0, 1), (0, 0)))  # value never
                # depends on how many rows are computed with it (a process's block of devices)
            change[r:r + n] = np.sqrt(np.einsum("kp,kp->k", e - s, e - s))[:n]
            norm[r:r + n] = np.sqrt(np.einsum("kp,kp->k", s, s))[:n]
        t = tau[:, m]
        v[:, m] = np.where(t > 0, change / (np.where(norm > 0, norm, 1.0) * np.maximum(t, 1)), np.nan)
    return v


def local_training(net: Network, data: LocalData, tau: NDArray[np.int64], holds: NDArray[np.bool_],
                   active: NDArray[np.bool_], opt: Optimizer, rng: np.random.Generator,
                   gen: torch.Generator, batch_size: int = 32, weights: LossWeights | None = None,
                   generator: Generator | None = None, modulation: Modulation | None = None,
                   ge_noise: bool = False, modality_dropout: float = 0.0,
                   fusion_rule: str = "training", rows: tuple[int, int] | None = None,
                   ) -> LocalResult:
    """Run every device's local iterations (vectorised over devices).

    tau (K, M): iterations per device and modality (0 where not held or inactive). Device k runs
    L_k = max_m tau[k, m] iterations; modality m's block is updated in iterations 1..tau[k, m]
    only, the shared blocks in all L_k. ``weights`` sets each loss term (0 switches it off);
    ``generator`` enables the KD terms; ``modulation`` maps per-modality scores (K, M) to
    gradient coefficients (K, M) (OGM-GE), ``ge_noise`` adds Gaussian noise with the
    gradient's own std. Returns the blocks' start/end snapshots and v[k, m].

    ``rows`` (lo, hi): ``net`` and ``data`` hold only devices lo..hi-1 of the tau, holds and
    active given (a process's block of a distributed run). Every random number is drawn for all
    devices and the block keeps its rows, for as many iterations as the longest device anywhere,
    so the streams and the results do not depend on how devices are split over processes.
    """
    weights = weights or LossWeights()
    tau_all = np.where(holds & active[:, None], tau, 0)
    lo, hi = (0, tau_all.shape[0]) if rows is None else rows
    layout = None if rows is None else (lo, tau_all.shape[0])
    tau, holds = tau_all[lo:hi], holds[lo:hi]
    K, M = holds.shape
    local_iters = tau.max(axis=1)
    forward_passes = np.zeros((K, M), np.int64)
    backward_passes = np.zeros((K, M), np.int64)
    confidence = np.zeros((K, M))
    start = [flatten_block(b) for b in net.blocks]
    device_loss = np.zeros((K, int(tau_all.max(initial=0))), np.float32)
    mods = []
    for i in range(1, device_loss.shape[1] + 1):
        # This iteration's random numbers, drawn for every device (in this order) even when
        # no device of this block still iterates.
        idx = data.batch(batch_size, rng, layout)
        dropped = rng.random((tau_all.shape[0], M))[lo:hi] if modality_dropout > 0 else None
        eps = generator.noise(batch_size, gen) if generator is not None and weights.kd else None
        # GE noise is drawn for each block some device anywhere updates in this iteration.
        noisy = np.asarray((tau_all >= i).any(axis=0) & (modulation is not None and ge_noise))
        device_on = local_iters >= i  # devices still in their L_k iterations
        if not device_on.any():
            for j in np.flatnonzero(noisy):
                for p in net.blocks[int(j)].values():
                    _ge_noise(p, gen, layout)
            continue
        y = data.labels[idx]
        updating = tau >= i  # encoders that run backward and update in iteration i
        # Encoders whose forward pass runs (and is paid for) in iteration i: under "training"
        # only those still updating; under "all" every held one on a device still iterating.
        running = updating if fusion_rule == "training" else holds & device_on[:, None]
        forward_passes += running
        backward_passes += updating
        run_t, upd_t = torch.as_tensor(running), torch.as_tensor(updating)
        commons: list[Tensor | None] = []
        specifics: list[Tensor | None] = []
        for m in range(M):
            if not running[:, m].any():  # stopped on every device: skip the computation
                commons.append(None)
                specifics.append(None)
                continue
            if updating[:, m].any():
                c, s = net.encode(m, data.views[m][idx])
            else:
                with torch.no_grad():
                    c, s = net.encode(m, data.views[m][idx])
            # The batched encoder computes every device's rows; a simulated device uses only
            # the rows of passes it runs: others are replaced by zeros (no value or gradient
            # reaches anything), and a forward-only pass ("all" rule) sends no gradient back.
            c, s = _executed(c, run_t[:, m], upd_t[:, m]), _executed(s, run_t[:, m], upd_t[:, m])
            commons.append(c)
            specifics.append(s)
        with torch.no_grad():  # each modality's own learning: the common classifier on its c_m
            for m, cm in enumerate(commons):
                if cm is not None:
                    prob = torch.softmax(common_logits(net, cm), -1).gather(-1, y[..., None])
                    confidence[:, m] += np.where(running[:, m], prob.mean((1, 2)).numpy(), 0.0)
        fusion_mask = run_t
        running_f = run_t.to(torch.float32)
        if dropped is not None:
            # Modality dropout: the fused prediction must also work from a subset of the views
            # (devices hold different subsets); every device keeps at least one running view.
            keep = torch.as_tensor(dropped >= modality_dropout) & fusion_mask
            none_left = ~keep.any(dim=1)
            keep[none_left] = fusion_mask[none_left]
            fusion_mask = keep
        logits, c_mean = fuse(net, commons, specifics, fusion_mask)
        flat_y = y.reshape(-1)
        per_dev = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat_y,
                                  reduction="none").view(K, -1).mean(1)
        # Auxiliary losses use only the encoders that ran forward this iteration (a stopped
        # encoder's features must not train the shared blocks: its pass is not paid for).
        pres = running_f
        if weights.difference:
            for m, (cm, sm) in enumerate(zip(commons, specifics)):
                if cm is None or sm is None:
                    continue
                cn = F.normalize(cm, dim=-1)
                sn = F.normalize(sm, dim=-1)
                cross = torch.bmm(cn.transpose(1, 2), sn)  # (K, f, f)
                per_dev = per_dev + weights.difference * pres[:, m] * cross.pow(2).sum((1, 2)) / batch_size
        if weights.similarity:
            for m, cm in enumerate(commons):
                if cm is not None:
                    gap = (cm - c_mean.detach()).pow(2).mean((1, 2))
                    per_dev = per_dev + weights.similarity * pres[:, m] * gap
        if weights.common:
            # The common classifier must work on each modality's common features alone (a
            # device may hold any subset), so it is trained on each running c_m.
            for m, cm in enumerate(commons):
                if cm is None:
                    continue
                ce_c = F.cross_entropy(common_logits(net, cm).reshape(-1, net.n_classes), flat_y,
                                       reduction="none").view(K, -1).mean(1)
                per_dev = per_dev + weights.common * pres[:, m] * ce_c / pres.sum(1).clamp(min=1)
        if generator is not None and weights.kd:
            with torch.no_grad():
                target = generator.sample(y, gen, eps)
            align = sum(pres[:, m] * (c - target).pow(2).mean((1, 2))
                        for m, c in enumerate(commons) if c is not None)
            ce_g = F.cross_entropy(common_logits(net, target).reshape(-1, net.n_classes), flat_y,
                                   reduction="none").view(K, -1).mean(1)
            per_dev = per_dev + weights.kd * (align / pres.sum(1).clamp(min=1) + ce_g)
        coeff = None
        if modulation is not None:
            coeff = _modulation_coefficients(net, commons, specifics, run_t, y, modulation)
            mods.append(coeff.numpy())
        # Only devices still iterating contribute: an idle device runs nothing.
        loss = per_dev[torch.as_tensor(device_on)].sum()
        for p in net.parameters():
            p.grad = None
        loss.backward()
        for m, block in enumerate(net.blocks):
            mask = torch.as_tensor(updating[:, m], dtype=torch.float32)
            if coeff is not None:
                _modulate(block, coeff[:, m], bool(noisy[m]), gen, layout)
            opt.step(list(block.values()), mask)
        shared_mask = torch.as_tensor(device_on, dtype=torch.float32)
        opt.step(list(net.shared.values()), shared_mask)
        device_loss[:, i - 1] = np.where(device_on, per_dev.detach().numpy(), 0.0)
    for p in net.parameters():
        p.grad = None  # before the end snapshot, so gradients and snapshots never coexist
    end = [flatten_block(b) for b in net.blocks]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(forward_passes > 0, confidence / forward_passes, np.nan)
    return LocalResult(start, end, measure_variation(start, end, tau),
                       mean_loss(device_loss, local_iters),
                       np.mean(mods, axis=0) if mods else None, forward_passes, backward_passes,
                       confidence, device_loss)


def _executed(x: Tensor, ran: Tensor, updated: Tensor) -> Tensor:
    """Rows (devices) of a batched encoder output as executed: zeros where the pass did not
    run, detached where it ran forward only, unchanged where it also runs backward."""
    x = torch.where(updated[:, None, None], x, x.detach())
    return torch.where(ran[:, None, None], x, torch.zeros((), dtype=x.dtype))


def _modulation_coefficients(net: Network, commons, specifics, present: Tensor, y: Tensor,
                             modulation: Modulation) -> Tensor:
    """Per-modality scores on the batch (sum of softmax prob of the true class, unimodal)."""
    K, M = present.shape
    scores = torch.zeros(K, M)
    with torch.no_grad():
        for m in range(M):
            if commons[m] is None:
                continue
            only = torch.zeros_like(present)
            only[:, m] = present[:, m]
            cs = [commons[j] if j == m else None for j in range(M)]
            ss = [specifics[j] if j == m else None for j in range(M)]
            logits, _ = fuse(net, cs, ss, only)
            prob = torch.softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
            scores[:, m] = prob.sum(1) * present[:, m]
    return modulation(scores, present)


def _ge_noise(p: Tensor, gen: torch.Generator, layout: tuple[int, int] | None) -> Tensor:
    """Standard normal noise shaped like ``p`` (K, ...), drawn for every device (`draw_rows`)."""
    first, total = draw_rows(layout, p.shape[0])
    return torch.randn((total, *p.shape[1:]), generator=gen)[first:first + p.shape[0]]


def _modulate(block: dict[str, Tensor], coeff: Tensor, ge_noise: bool, gen: torch.Generator,
              layout: tuple[int, int] | None = None) -> None:
    """Scale a block's gradients per device; OGM-GE adds noise with the gradient's own std
    (drawn whenever ``ge_noise``, also for a block whose rows here got no gradient, so the
    stream is the same in every process)."""
    with torch.no_grad():
        for p in block.values():
            noise = _ge_noise(p, gen, layout) if ge_noise else None
            if p.grad is None:
                continue
            c = coeff.view(-1, *([1] * (p.dim() - 1)))
            g = p.grad * c
            if noise is not None:
                std = p.grad.reshape(p.shape[0], -1).std(dim=1).view_as(c)
                g = g + noise * std
            p.grad.copy_(g)


def ogm_ge_modulation(alpha: float = 0.5) -> Modulation:
    """OGM-GE's coefficient generalised to M modalities: 1 - tanh(alpha * relu(ratio - 1)),
    ratio = a modality's score over the mean score of the device's other held modalities."""

    def coefficients(scores: Tensor, present: Tensor) -> Tensor:
        pres = present.to(scores.dtype)
        count_other = (pres.sum(1, keepdim=True) - pres).clamp(min=1.0)
        mean_other = ((scores * pres).sum(1, keepdim=True) - scores * pres) / count_other
        ratio = torch.where(mean_other > 0, scores / mean_other.clamp(min=1e-12), torch.ones_like(scores))
        coeff = 1.0 - torch.tanh(alpha * torch.relu(ratio - 1.0))
        # A device holding one modality has nothing to balance against.
        return torch.where(pres.sum(1, keepdim=True) > 1, coeff, torch.ones_like(coeff))

    return coefficients
