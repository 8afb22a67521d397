"""The per-device energy model of DESIGN.md: CMOS computation energy and Shannon-rate
communication energy. Pure NumPy functions, vectorised over devices and modalities.

Units: J, Hz, W, bits, seconds. The allocator and the learner's battery accounting both use
these functions, so a round's planned energy and its accounted energy are the same numbers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Plausible defaults for a mobile device (used by generators and the learner's accounting).
DEFAULT_CAPACITANCE = 1e-28  # kappa, effective switched capacitance (J / (Hz^2 * cycle))
DEFAULT_NOISE_PSD_W_PER_HZ = 10 ** (-174 / 10) * 1e-3  # -174 dBm/Hz thermal noise
DEFAULT_BATCH_SIZE = 32  # samples per local iteration when a problem does not say
BACKWARD_CYCLES_FACTOR = 2.0  # a backward/update pass costs twice the forward pass
# The simulated fleet (allocator/generate.py and learner/energy.py draw from the same ranges).
CPU_RANGE_HZ = (0.5e9, 2.0e9)  # f_max of a device, drawn uniformly
PARAMETER_BITS = 32.0  # bits per transmitted parameter (float32)
BANDWIDTH_HZ = 1e6  # bandwidth of a device's broadcast link
TX_POWER_W = 0.1  # transmit power (the generator draws from [TX_POWER_W, 2 TX_POWER_W])

# The long-tailed fleet (learner/fleet.py, fleet = "longtail"; sources in docs/learner.md,
# "Fleets"). Device speed: log-normal f_max, median 1 GHz and sigma 0.7, so the 5th-95th
# percentile spread is exp(2 x 1.645 x 0.7) = 10x (the >= 10x compute spread of the device
# profiles FedScale and Oort use); clipped to a phone-like range.
LONGTAIL_CPU_MEDIAN_HZ = 1.0e9
LONGTAIL_CPU_SIGMA = 0.7
LONGTAIL_CPU_RANGE_HZ = (0.15e9, 3.0e9)
# Broadcast distance to the farthest neighbour: log-normal, median 40 m, sigma 0.6 (a few
# devices far from the rest pay most of the radio energy), clipped to [5, 300] m.
LONGTAIL_DISTANCE_MEDIAN_M = 40.0
LONGTAIL_DISTANCE_SIGMA = 0.6
LONGTAIL_DISTANCE_RANGE_M = (5.0, 300.0)
# Battery at the start, as a multiple of the automatic battery (what uniform tau costs over the
# run): Beta(0.8, 1.6) / its mean, i.e. mean 1, from nearly empty to 3x; many devices start low.
LONGTAIL_BATTERY_BETA = (0.8, 1.6)

# The one energy-feasibility tolerance: a cost fits a budget when cost <= budget (1 + RTOL) + ATOL.
# Relative, because budgets are float sums (a battery sized for exactly k rounds must pay the
# k-th in full); the absolute part only matters for zero budgets.
ENERGY_RTOL = 1e-9
ENERGY_ATOL_J = 1e-12


def budget_limit_j(budget_j: ArrayLike) -> NDArray[np.float64]:
    """The largest cost that counts as within ``budget_j`` (the shared tolerance applied)."""
    return np.asarray(budget_j, float) * (1 + ENERGY_RTOL) + ENERGY_ATOL_J


def fits_budget(cost_j: ArrayLike, budget_j: ArrayLike) -> NDArray[np.bool_]:
    """Whether each cost is payable from its budget, under the one shared tolerance."""
    return np.asarray(cost_j, float) <= budget_limit_j(budget_j)


# The one time-feasibility tolerance (the same shape as the energy rule): a round time fits a
# deadline when time <= deadline (1 + TIME_RTOL) + TIME_ATOL_S.
TIME_RTOL = 1e-9
TIME_ATOL_S = 1e-12


def deadline_limit_s(deadline_s: ArrayLike) -> NDArray[np.float64]:
    """The longest round time that counts as within ``deadline_s`` (the shared tolerance)."""
    return np.asarray(deadline_s, float) * (1 + TIME_RTOL) + TIME_ATOL_S


def fits_deadline(time_s: ArrayLike, deadline_s: ArrayLike) -> NDArray[np.bool_]:
    """Whether each round time meets its deadline, under the one shared tolerance."""
    return np.asarray(time_s, float) <= deadline_limit_s(deadline_s)


def round_cycles(
    tau: ArrayLike, holds: ArrayLike, batch_size: ArrayLike, cycles_forward: ArrayLike,
    cycles_backward: ArrayLike,
) -> NDArray[np.float64]:
    """CPU cycles of a round per device: C = B (L sum_m c_f + sum_m tau c_b), L = max_m tau.

    The cycle count behind both the computation energy kappa f^2 C and the time C / f.
    """
    per_batch = computation_energy_j(tau, holds, cycles_forward, cycles_backward)
    return np.asarray(batch_size, float) * per_batch


def cheapest_round_j(
    holds: ArrayLike, forward_j: ArrayLike, backward_j: ArrayLike, comm_j: ArrayLike, tau_min: int
) -> NDArray[np.float64]:
    """Energy of the cheapest admissible round: tau_min on every held modality plus comm (K,).

    The one definition of "can this device take part": a device whose budget does not
    ``fits_budget`` this cost sits the round out (allocator, learner and policies alike).
    """
    holds = np.asarray(holds, bool)
    tau = np.where(holds, float(tau_min), 0.0)
    compute = computation_energy_j(tau, holds, forward_j, backward_j)
    return compute + np.where(holds.any(axis=-1), np.asarray(comm_j, float), 0.0)


def iteration_energy_j(
    capacitance: ArrayLike,
    cpu_hz: ArrayLike,
    batch_size: ArrayLike,
    cycles_per_sample: ArrayLike,
) -> NDArray[np.float64]:
    """Energy of one pass over a batch: kappa * f^2 * D_b * cycles per sample.

    Used for both the forward cost ef[k,m] (forward cycles) and the backward/update cost
    eb[k,m] (backward cycles). Broadcasts: e.g. ``cpu_hz`` of shape (K, 1) against
    ``cycles_per_sample`` of shape (M,) gives a (K, M) table.
    """
    return (
        np.asarray(capacitance, float)
        * np.asarray(cpu_hz, float) ** 2
        * np.asarray(batch_size, float)
        * np.asarray(cycles_per_sample, float)
    )


def computation_energy_j(
    tau: ArrayLike, holds: ArrayLike, forward_j: ArrayLike, backward_j: ArrayLike
) -> NDArray[np.float64]:
    """Round computation energy per device: L_k * sum_m a ef + sum_m tau eb, L_k = max_m tau.

    Every held encoder runs forward in each of the L_k local iterations (the fused prediction
    needs all of them) but only updates while i <= tau[k, m]. Shapes (K, M) -> (K,).
    """
    tau = np.asarray(tau, float)
    holds = np.asarray(holds, bool)
    tau = np.where(holds, tau, 0.0)
    local_iters = tau.max(axis=-1) if tau.shape[-1] else np.zeros(tau.shape[:-1])
    forward = np.where(holds, np.asarray(forward_j, float), 0.0).sum(axis=-1)
    backward = (tau * np.where(holds, np.asarray(backward_j, float), 0.0)).sum(axis=-1)
    return local_iters * forward + backward


def shannon_rate_bps(
    power_w: ArrayLike, gain: ArrayLike, bandwidth_hz: ArrayLike, noise_psd_w_per_hz: ArrayLike
) -> NDArray[np.float64]:
    """Achievable rate r = B log2(1 + p g / (N0 B)) in bits per second."""
    bandwidth = np.asarray(bandwidth_hz, float)
    snr = np.asarray(power_w, float) * np.asarray(gain, float) / (
        np.asarray(noise_psd_w_per_hz, float) * bandwidth
    )
    return bandwidth * np.log2(1.0 + snr)


def communication_energy_j(
    power_w: ArrayLike,
    model_bits: ArrayLike,
    gain: ArrayLike,
    bandwidth_hz: ArrayLike,
    noise_psd_w_per_hz: ArrayLike = DEFAULT_NOISE_PSD_W_PER_HZ,
) -> NDArray[np.float64]:
    """Energy to broadcast S_k bits once at the weakest neighbour's rate: p S / r."""
    rate = shannon_rate_bps(power_w, gain, bandwidth_hz, noise_psd_w_per_hz)
    return np.asarray(power_w, float) * np.asarray(model_bits, float) / rate


def communication_time_s(
    power_w: ArrayLike,
    model_bits: ArrayLike,
    gain: ArrayLike,
    bandwidth_hz: ArrayLike,
    noise_psd_w_per_hz: ArrayLike = DEFAULT_NOISE_PSD_W_PER_HZ,
) -> NDArray[np.float64]:
    """Time to broadcast S_k bits at the weakest neighbour's rate: S / r."""
    rate = shannon_rate_bps(power_w, gain, bandwidth_hz, noise_psd_w_per_hz)
    return np.asarray(model_bits, float) / rate


def path_gain(
    distance_m: ArrayLike, exponent: float = 3.0, ref_gain: float = 1e-3, ref_distance_m: float = 1.0
) -> NDArray[np.float64]:
    """Large-scale channel gain g = g0 (d0 / d)^alpha (distances below d0 are clipped to d0)."""
    d = np.maximum(np.asarray(distance_m, float), ref_distance_m)
    return ref_gain * (ref_distance_m / d) ** exponent
