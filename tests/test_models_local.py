"""Models, local training with per-modality iteration counts, the generator, OGM-GE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmmlkd.learner.generator import Generator, train_generator
from dmmlkd.learner.local import LocalData, LossWeights, Optimizer, local_training, ogm_ge_modulation
from dmmlkd.learner.models import Network, encode, fuse, predict
from dmmlkd.metrics.variation import parameter_variation


def tiny_setup(seed: int = 0, devices: int = 2):
    rng = np.random.default_rng(seed)
    views = [rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(60, 3)).astype(np.float32)]
    labels = rng.integers(0, 3, size=60)
    parts = np.array_split(np.arange(60), devices)
    net = Network.create(devices, [5, 3], 3, hidden=8, embed=6, feature=4, seed=seed)
    return net, LocalData.create(views, labels, parts)


def snapshot(net: Network) -> list[dict[str, torch.Tensor]]:
    """Per modality block, then the shared blocks last."""
    return [{k: t.detach().clone() for k, t in b.items()} for b in net.blocks] + [
        {k: t.detach().clone() for k, t in net.shared.items()}]


def changed(a: dict, b: dict, device: int) -> bool:
    return any(not torch.equal(a[k][device], b[k][device]) for k in a)


def train(net, data, tau, holds=None, seed=0, **kw):
    holds = np.ones(np.shape(tau), bool) if holds is None else holds
    return local_training(net, data, np.asarray(tau), holds, np.ones(len(tau), bool),
                          kw.pop("opt", Optimizer(lr=0.1)), np.random.default_rng(seed),
                          torch.Generator().manual_seed(seed), batch_size=8, **kw)


@pytest.mark.parametrize("fusion_rule", ["all", "training"])
@pytest.mark.parametrize("with_generator", [False, True])
def test_encoder_updates_only_in_its_first_tau_iterations(with_generator: bool, fusion_rule: str) -> None:
    net, data = tiny_setup()
    opt = Optimizer(lr=0.1)
    generator = Generator.create(2, 3, 4, seed=0) if with_generator else None
    # Device 0: modality 0 tau = 2, modality 1 tau = 0. Device 1: tau (1, 3).
    tau = np.array([[2, 0], [1, 3]])
    states = [snapshot(net)]
    orig_step = opt.step
    calls = []

    def recording_step(params, mask):
        orig_step(params, mask)
        calls.append(1)
        if len(calls) % 3 == 0:  # block 0, block 1, shared: one iteration done
            states.append(snapshot(net))

    opt.step = recording_step  # type: ignore[method-assign]
    train(net, data, tau, opt=opt, generator=generator, fusion_rule=fusion_rule)
    assert len(states) == 4  # L = max tau = 3 iterations
    for i in range(1, 4):
        prev, cur = states[i - 1], states[i]
        assert changed(prev[0], cur[0], 0) == (i <= 2)  # device 0, modality 0, tau 2
        assert not changed(prev[1], cur[1], 0)  # device 0, modality 1, tau 0: never
        assert changed(prev[0], cur[0], 1) == (i <= 1)  # device 1, modality 0, tau 1
        assert changed(prev[1], cur[1], 1)  # device 1, modality 1, tau 3
        assert changed(prev[2], cur[2], 1)  # shared blocks: every iteration up to L = 3
        assert changed(prev[2], cur[2], 0) == (i <= 2)  # device 0 has L = 2: classifier moves


@pytest.mark.parametrize("fusion_rule", ["all", "training"])
def test_tau_zero_freezes_the_block_and_leaves_v_unmeasured(fusion_rule: str) -> None:
    net, data = tiny_setup()
    before = snapshot(net)
    res = train(net, data, [[3, 0], [3, 0]], fusion_rule=fusion_rule)
    assert all(not changed(before[1], snapshot(net)[1], k) for k in range(2))
    assert np.isnan(res.variation[:, 1]).all() and (res.variation[:, 0] > 0).all()
    assert all(p.grad is None for p in net.parameters())  # gradients are cleared afterwards


def test_measured_variation_is_the_metrics_formula() -> None:
    net, data = tiny_setup(1)
    before = snapshot(net)
    tau = np.array([[2, 1], [3, 2]])
    res = train(net, data, tau, seed=1)
    for m in range(2):
        for k in range(2):
            start = torch.cat([before[m][n][k].reshape(-1) for n in before[m]])
            end = torch.cat([net.blocks[m][n][k].detach().reshape(-1) for n in before[m]])
            np.testing.assert_array_equal(res.start[m][k], start.numpy())
            np.testing.assert_array_equal(res.end[m][k], end.numpy())
            expected = parameter_variation(start.numpy(), end.numpy(), tau[k, m])
            assert res.variation[k, m] == pytest.approx(expected, rel=1e-12)
            by_hand = float((end - start).norm() / (start.norm() * tau[k, m]))
            assert res.variation[k, m] == pytest.approx(by_hand, rel=1e-5)


def test_inactive_device_and_unheld_modality_never_move() -> None:
    net, data = tiny_setup(devices=3)
    before = snapshot(net)
    holds = np.array([[True, False], [True, True], [True, True]])
    local_training(net, data, np.full((3, 2), 2), holds, np.array([True, True, False]),
                   Optimizer(), np.random.default_rng(0), torch.Generator().manual_seed(0),
                   batch_size=8)
    after = snapshot(net)
    assert not changed(before[1], after[1], 0)  # device 0 does not hold modality 1
    assert all(not changed(before[j], after[j], 2) for j in range(3))  # device 2 inactive
    assert changed(before[2], after[2], 0) and changed(before[1], after[1], 1)


def test_each_loss_switches_off_and_training_reproduces() -> None:
    outcomes = []
    for weights in (LossWeights(), LossWeights(0, 0, 0, 0), LossWeights(difference=0.0)):
        net, data = tiny_setup()
        res = train(net, data, [[3, 3], [3, 3]], weights=weights,
                    generator=Generator.create(2, 3, 4, seed=0))
        outcomes.append(res.loss)
    net, data = tiny_setup()
    again = train(net, data, [[3, 3], [3, 3]], generator=Generator.create(2, 3, 4, seed=0))
    assert again.loss == outcomes[0]  # same seed, same numbers
    assert len(set(outcomes)) == 3  # every weight setting changes the objective


def test_unimodal_fusion_masks_other_modalities() -> None:
    net, _ = tiny_setup()
    x = [torch.randn(10, 5), torch.randn(10, 3)]
    only0 = torch.tensor([[True, False], [True, False]])
    a = predict(net, x, only0)
    b = predict(net, [x[0], torch.randn(10, 3) * 100], only0)  # modality 1 must not matter
    torch.testing.assert_close(a, b)
    c0, s0 = encode(net.blocks[0], x[0])
    logits, c_mean = fuse(net, [c0, None], [s0, None], only0)
    torch.testing.assert_close(c_mean, c0)
    torch.testing.assert_close(logits, a)


def test_generator_learns_to_fool_fixed_classifiers_and_inactive_copies_stay() -> None:
    torch.manual_seed(0)
    K, C, f = 3, 4, 5
    w = torch.randn(K, f, C)
    b = torch.zeros(K, C)
    gen_model = Generator.create(K, C, f, seed=0)
    frozen = gen_model.params["w1"][2].detach().clone()
    adj = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], bool)
    active = np.array([True, True, False])
    gen = torch.Generator().manual_seed(0)
    first = train_generator(gen_model, w, b, adj, active, 1, 64, 1e-2, gen)
    last = train_generator(gen_model, w, b, adj, active, 100, 64, 1e-2, gen)
    assert last < 0.5 * first
    assert torch.equal(gen_model.params["w1"][2], frozen)


def test_ogm_ge_coefficients_by_hand() -> None:
    coefficients = ogm_ge_modulation(alpha=0.5)
    scores = torch.tensor([[30.0, 10.0, 20.0], [5.0, 5.0, 0.0], [9.0, 1.0, 0.0]])
    present = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    coeff = coefficients(scores, present)
    # device 0: ratio_0 = 30 / 15 = 2 -> 1 - tanh(0.5); ratio_1 = 10/25 < 1 -> 1; ratio_2 = 20/20 -> 1
    torch.testing.assert_close(coeff[0], torch.tensor([1 - np.tanh(0.5), 1.0, 1.0], dtype=torch.float32))
    torch.testing.assert_close(coeff[1, :2], torch.ones(2))  # equal scores: no modulation
    torch.testing.assert_close(coeff[2], torch.ones(3))  # one modality: nothing to balance


def test_modulation_hook_scales_the_encoder_update() -> None:
    """A coefficient 0 freezes a modality as tau = 0 would (without GE noise)."""
    net, data = tiny_setup()
    before = snapshot(net)

    def freeze_modality_1(scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        assert scores.shape == present.shape == (2, 2) and (scores >= 0).all()
        return torch.tensor([[1.0, 0.0], [1.0, 0.0]])

    res = train(net, data, [[2, 2], [2, 2]], modulation=freeze_modality_1,
                opt=Optimizer(lr=0.1, momentum=0.0, weight_decay=0.0))
    after = snapshot(net)
    assert not changed(before[1], after[1], 0) and not changed(before[1], after[1], 1)
    assert changed(before[0], after[0], 0)
    np.testing.assert_array_equal(res.modulation, [[1.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize("fusion_rule", ["all", "training"])
def test_stopped_encoder_is_unused_under_the_training_rule(fusion_rule: str) -> None:
    """Under "training" an encoder with tau = 0 runs no forward pass: its parameters cannot
    influence anything; under "all" its features feed the fusion and the auxiliary losses."""
    results = []
    for shift in (0.0, 0.5):
        net, data = tiny_setup()
        with torch.no_grad():
            net.blocks[0]["w1"].add_(shift)
        generator = Generator.create(2, 3, 4, seed=0)
        train(net, data, [[0, 2], [0, 3]], fusion_rule=fusion_rule, generator=generator,
              modality_dropout=0.3)
        results.append(snapshot(net))
    same = all(torch.equal(results[0][j][k], results[1][j][k]) for j in (1, 2) for k in results[0][j])
    assert same == (fusion_rule == "training")


@pytest.mark.parametrize("fusion_rule", ["all", "training"])
@pytest.mark.parametrize("poison", [1e3, float("nan")])
def test_masked_encoder_outputs_change_nothing(monkeypatch, fusion_rule: str, poison: float) -> None:
    """The batched encoder computes every device's rows; rows of passes a device does not run
    (stopped encoder under "training", any encoder of a device past its L_k) are overwritten
    with garbage: parameters and losses after the round are identical to the clean run."""

    tau = np.array([[2, 0], [1, 3], [4, 4]])  # L = (2, 3, 4): devices idle at different times
    running_rule = {  # which (device, modality) passes run in iteration i
        "training": lambda i: tau >= i,
        "all": lambda i: np.ones_like(tau, bool) & (tau.max(1) >= i)[:, None],
    }[fusion_rule]

    def run_once(perturb: bool):
        net, data = tiny_setup(devices=3)
        it = {"i": 0}
        batch, encode_ = LocalData.batch, Network.encode

        def counting_batch(self, *a, **k):
            it["i"] += 1
            return batch(self, *a, **k)

        def poisoned_encode(self, m, x):
            c, s = encode_(self, m, x)
            if not perturb:
                return c, s
            idle = torch.as_tensor(~running_rule(it["i"])[:, m])[:, None, None]
            return torch.where(idle, c + poison, c), torch.where(idle, s - poison, s)

        monkeypatch.setattr(LocalData, "batch", counting_batch)
        monkeypatch.setattr(Network, "encode", poisoned_encode)
        res = train(net, data, tau, fusion_rule=fusion_rule, generator=Generator.create(3, 3, 4, seed=0),
                    modality_dropout=0.3, modulation=ogm_ge_modulation(0.5))
        monkeypatch.undo()
        return res, snapshot(net)

    (clean, a), (dirty, b) = run_once(False), run_once(True)
    assert clean.loss == dirty.loss and np.isfinite(clean.loss)
    assert all(torch.equal(a[j][k], b[j][k]) for j in range(3) for k in a[j])
    np.testing.assert_array_equal(clean.modulation, dirty.modulation)


def test_executed_passes_by_hand() -> None:
    """Device 0: tau (2, 0); device 1: tau (1, 3); device 2 inactive."""
    tau = np.array([[2, 0], [1, 3], [5, 5]])
    for rule, forward in (("training", [[2, 0], [1, 3], [0, 0]]),
                          ("all", [[2, 2], [3, 3], [0, 0]])):  # "all": every held encoder, L_k times
        net, data = tiny_setup(devices=3)
        res = local_training(net, data, tau, np.ones((3, 2), bool), np.array([True, True, False]),
                             Optimizer(), np.random.default_rng(0), torch.Generator().manual_seed(0),
                             batch_size=4, fusion_rule=rule)
        np.testing.assert_array_equal(res.forward_passes, forward)
        np.testing.assert_array_equal(res.backward_passes, [[2, 0], [1, 3], [0, 0]])


def test_confidence_signal_by_hand() -> None:
    """One iteration: the mean true-class probability of the common classifier on each c_m,
    computed before the update on the batch the round draws; nan where the encoder did not run."""
    net, data = tiny_setup()
    import copy

    before = copy.deepcopy(net)
    res = train(net, data, [[1, 0], [1, 1]], fusion_rule="training")
    idx = data.batch(8, np.random.default_rng(0))  # the same first draw as the round's
    y = data.labels[idx]
    for m in range(2):
        c, _ = before.encode(m, data.views[m][idx])
        logits = torch.bmm(c, before.shared["wk"]) + before.shared["bk"][:, None]
        prob = torch.softmax(logits, -1).gather(-1, y[..., None]).mean((1, 2)).detach().numpy()
        for k in range(2):
            if (k, m) == (0, 1):
                assert np.isnan(res.confidence[k, m])
            else:
                assert res.confidence[k, m] == pytest.approx(prob[k], rel=1e-5)
