"""Encoders per view: auto choice, batched-over-devices = per-device loop, cycles by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dmmlkd.learner.config import TrainConfig
from dmmlkd.learner.energy import make_profile
from dmmlkd.learner.errors import ConfigError
from dmmlkd.learner.local import LocalData, Optimizer, flatten_block, local_training
from dmmlkd.learner.loop import build, run
from dmmlkd.learner.models import CNN_CHANNELS, ENC, Network, cnn1d_encoder, cnn2d_encoder, predict
from dmmlkd.learner.topology import make_topology


def _perturbed(net: Network, seed: int = 1) -> Network:
    """Give every device its own parameters (a common init would hide device mix-ups)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def _device_module(net: Network, m: int, k: int, factory) -> nn.Module:
    """An ordinary module holding device k's encoder parameters of block m."""
    spec = net.encoder(m)
    module = factory(spec.sample_shape, net.blocks[m]["wc"].shape[1])
    state = {name[len(ENC):]: t[k].detach() for name, t in net.blocks[m].items()
             if name.startswith(ENC)}
    module.load_state_dict(state)
    return module


@pytest.mark.parametrize("shape,factory,kind", [
    ((3, 40), cnn1d_encoder, "cnn1d"),
    ((2, 8, 8), cnn2d_encoder, "cnn2d"),
])
def test_cnn_batched_over_devices_equals_a_per_device_loop(shape, factory, kind) -> None:
    K, B, N = 5, 4, 7
    net = _perturbed(Network.create(K, [shape, (6,)], n_classes=3, seed=0))
    assert net.encoder(0).kind == kind and net.encoder(1).kind == "mlp"
    gen = torch.Generator().manual_seed(2)
    per_device = torch.randn((K, B, *shape), generator=gen)
    shared = torch.randn((N, *shape), generator=gen)
    c_b, s_b = net.encode(0, per_device)
    c_s, s_s = net.encode(0, shared)
    block = net.blocks[0]
    for k in range(K):
        module = _device_module(net, 0, k, factory)
        for x, c, s in ((per_device[k], c_b[k], s_b[k]), (shared, c_s[k], s_s[k])):
            e = module(x)
            torch.testing.assert_close(c, e @ block["wc"][k] + block["bc"][k], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(s, e @ block["ws"][k] + block["bs"][k], rtol=1e-5, atol=1e-5)


def test_shared_input_evaluation_is_chunked_without_changing_outputs(monkeypatch) -> None:
    import dmmlkd.learner.models as models

    net = _perturbed(Network.create(6, [(2, 12)], n_classes=3, seed=3))
    x = torch.randn(9, 2, 12, generator=torch.Generator().manual_seed(0))
    whole = predict(net, [x], torch.ones(6, 1, dtype=torch.bool))
    monkeypatch.setattr(models, "EVAL_CHUNK", 10)  # one device per chunk
    torch.testing.assert_close(predict(net, [x], torch.ones(6, 1, dtype=torch.bool)), whole)


def test_gradients_reach_each_device_own_cnn_parameters_only() -> None:
    K = 3
    net = Network.create(K, [(2, 10)], n_classes=2, seed=0)
    x = torch.randn(K, 4, 2, 10)
    c, s = net.encode(0, x)
    (c[0].sum() + s[0].sum()).backward()  # only device 0's output enters the loss
    for name, p in net.blocks[0].items():
        assert p.grad is not None, name
        assert p.grad[1:].abs().max() == 0.0, name  # other devices' parameters get nothing
    assert any(p.grad[0].abs().max() > 0 for p in net.blocks[0].values())


def test_auto_encoder_choice_and_overrides() -> None:
    net = Network.create(2, [(5,), (3, 20), (1, 6, 6)], n_classes=2)
    assert [net.encoder(m).kind for m in range(3)] == ["mlp", "cnn1d", "cnn2d"]
    flat = Network.create(2, [(3, 20)], n_classes=2, encoders=["mlp"])
    assert flat.encoder(0).kind == "mlp" and flat.blocks[0]["w1"].shape == (2, 60, 128)
    c, _ = flat.encode(0, torch.randn(2, 4, 3, 20))  # an MLP flattens a (C, T) view
    assert c.shape == (2, 4, 32)
    with pytest.raises(ConfigError, match=r"encoders.v0 = 'cnn2d' needs \(N, C, H, W\)"):
        Network.create(2, [(3, 20)], n_classes=2, encoders=["cnn2d"], views=["v0"])
    with pytest.raises(ConfigError, match="encoders.a must be one of auto, mlp"):
        Network.create(2, [(3,)], n_classes=2, encoders=["lstm"], views=["a"])


def test_all_mlp_network_is_unchanged() -> None:
    # The parameters and cycles of an all-MLP network are what they were before encoders
    # existed: same generator draws in the same order, cycles = 2 x parameters.
    net = Network.create(3, [7, 4], n_classes=5, hidden=16, embed=8, feature=4, seed=9)
    gen = torch.Generator().manual_seed(9)
    bound = 1 / np.sqrt(7)
    w1 = (torch.rand((7, 16), generator=gen) * 2 - 1) * bound
    torch.testing.assert_close(net.blocks[0]["w1"][2].detach(), w1)
    assert list(net.blocks[0]) == ["w1", "b1", "w2", "b2", "wc", "bc", "ws", "bs"]
    assert net.block_cycles() == [2.0 * n for n in net.block_sizes()]


def test_cnn_cycles_by_hand() -> None:
    embed, feature, C, T = 64, 32, 3, 100
    net = Network.create(2, [(C, T)], n_classes=4, embed=embed, feature=feature)
    ch, h = CNN_CHANNELS, CNN_CHANNELS // 2
    conv1 = T * h * (C * 5) + T * h  # multiply-adds at every position + a bias per output
    conv2 = (T // 4) * ch * (h * 5) + (T // 4) * ch  # after max-pool by 4
    linear = ch * embed + embed
    heads = 2 * (embed * feature + feature)
    assert net.block_cycles() == [2.0 * (conv1 + conv2 + linear + heads)]
    # Parameters (what gossip sends) are far fewer than the multiply-adds of a convolution.
    params = (C * 5 * h + h) + (h * 5 * ch + ch) + linear + heads
    assert net.block_sizes() == [params]
    img = Network.create(2, [(1, 8, 8)], n_classes=4, embed=embed, feature=feature)
    conv1 = 64 * h * 9 + 64 * h
    conv2 = 16 * ch * (h * 9) + 16 * ch  # 8x8 pooled by 2 -> 4x4
    assert img.block_cycles() == [2.0 * (conv1 + conv2 + linear + heads)]


def test_energy_profile_charges_cycles_not_parameters() -> None:
    holds = np.ones((2, 2), bool)
    topo = make_topology("complete", 2, 0)
    by_params = make_profile(holds, [100, 300], 50, topo, 8, seed=1)
    same = make_profile(holds, [100, 300], 50, topo, 8, seed=1, block_cycles=[200.0, 600.0])
    np.testing.assert_allclose(by_params.forward_j, same.forward_j)
    tripled = make_profile(holds, [100, 300], 50, topo, 8, seed=1, block_cycles=[600.0, 600.0])
    np.testing.assert_allclose(tripled.forward_j[:, 0], 3 * by_params.forward_j[:, 0])
    np.testing.assert_allclose(tripled.comm_j, by_params.comm_j)  # parameters are what is sent


class _DepthwiseEncoder(nn.Module):
    """A user's encoder: a depthwise convolution then a linear map (no buffers)."""

    def __init__(self, shape: tuple[int, ...], embed: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(shape[0], shape[0], 3, padding=1, groups=shape[0])
        self.out = nn.Linear(shape[0] * shape[1], embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(torch.relu(self.conv(x)).flatten(1)))


def test_user_factory_is_batched_the_same_way() -> None:
    net = _perturbed(Network.create(4, [(2, 9)], n_classes=3, encoders=[_DepthwiseEncoder]))
    assert net.encoder(0).kind == "custom"
    x = torch.randn(4, 5, 2, 9)
    c, _ = net.encode(0, x)
    for k in range(4):
        e = _device_module(net, 0, k, _DepthwiseEncoder)(x[k])
        torch.testing.assert_close(c[k], e @ net.blocks[0]["wc"][k] + net.blocks[0]["bc"][k])
    # cycles: depthwise conv 9 positions x 2 channels x 3 taps, + biases; linear 18 x embed.
    conv = 9 * 2 * 3 + 9 * 2
    linear = 18 * 64 + 64
    heads = 2 * (64 * 32 + 32)
    assert net.block_cycles() == [2.0 * (conv + linear + heads)]


@pytest.mark.parametrize("factory,message", [
    (lambda shape, embed: nn.Sequential(nn.Conv1d(shape[0], 4, 3), nn.BatchNorm1d(4),
                                        nn.Flatten(), nn.LazyLinear(embed)), "has buffers"),
    (lambda shape, embed: nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1], embed + 1)),
     "must map"),
    (lambda shape, embed: "not a module", "must return a torch.nn.Module"),
])
def test_unusable_user_factories_are_refused(factory, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Network.create(2, [(2, 9)], n_classes=3, encoders=[factory], views=["ts"])


def test_local_training_updates_cnn_blocks_and_masks_stopped_ones() -> None:
    config = TrainConfig(dataset="basicmotions", devices=3, rounds=1, min_samples=5)
    s = build(config)
    data = LocalData.create([s.data.train[v] for v in s.data.views], s.data.train_labels, s.parts)
    tau = np.array([[2, 0], [2, 2], [1, 3]])  # device 0 does not train gyro
    before = [flatten_block(b) for b in s.net.blocks]
    result = local_training(s.net, data, tau, s.holds, np.ones(3, bool), Optimizer(),
                            np.random.default_rng(0), torch.Generator().manual_seed(0))
    after = [flatten_block(b) for b in s.net.blocks]
    np.testing.assert_array_equal(after[1][0], before[1][0])  # tau 0: not moved at all
    for k, m in [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1)]:
        assert not np.array_equal(after[m][k], before[m][k])
        assert np.isfinite(result.variation[k, m]) and result.variation[k, m] > 0


def test_encoders_config_field_reaches_the_network(tmp_path) -> None:
    base = dict(dataset="basicmotions", devices=3, rounds=1, min_samples=5)
    s = build(TrainConfig(**base, encoders={"gyro": "mlp"}))
    assert [s.net.encoder(m).kind for m in range(2)] == ["cnn1d", "mlp"]
    # The profile charges the CNN its multiply-adds: far more cycles per parameter than an MLP.
    cycles = s.net.block_cycles()
    assert cycles[0] / s.net.block_sizes()[0] > 10 and cycles[1] == 2.0 * s.net.block_sizes()[1]
    with pytest.raises(ConfigError, match="encoders names view 'audio'"):
        build(TrainConfig(**base, encoders={"audio": "cnn1d"}))
    with pytest.raises(ConfigError, match="encoders.acc must be auto, mlp, cnn1d or cnn2d"):
        TrainConfig(**base, encoders={"acc": "rnn"}).validate()


def test_user_npz_with_time_series_and_tabular_view_trains_with_defaults(tmp_path, cli) -> None:
    # A user's file, written in a few lines, trained with default settings (8 rounds instead of
    # 20 to stay quick). Independent truth is the construction: class c is a sine of frequency
    # c + 1 (random phase) on the time series and a class mean on the tabular view, with noise;
    # chance is 0.25.
    rng = np.random.default_rng(0)
    n, t = 480, np.linspace(0, 1, 50)
    labels = rng.integers(0, 4, n)
    series = np.sin(2 * np.pi * (labels[:, None, None] + 1) * t + rng.uniform(0, 6, (n, 2, 1)))
    series = series + 0.5 * rng.normal(size=(n, 2, 50))
    tabular = 2.0 * np.eye(4)[labels] @ rng.normal(size=(4, 6)) + 1.5 * rng.normal(size=(n, 6))
    np.savez(tmp_path / "mine.npz", labels=labels, view_ts=series, view_tab=tabular)
    out = tmp_path / "run"
    code, stdout, err = cli("train", "--dataset", str(tmp_path / "mine.npz"), "--rounds", "8",
                            "--quiet", "--out", str(out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["views"] == ["ts", "tab"] and summary["devices"] == 6
    assert summary["consensus_accuracy"] > 0.75, summary
    assert summary["accuracy"] > 0.75, summary


def test_basicmotions_trains(tmp_path) -> None:
    result = run(TrainConfig(dataset="basicmotions", devices=3, rounds=6, min_samples=5),
                 progress=False)
    assert result.summary["consensus_accuracy"] >= 0.75  # 4 classes: chance is 0.25
    assert abs(result.summary["energy_used_j"] - result.summary["battery_total_j"]) < 1e-6 * \
        result.summary["battery_total_j"]
