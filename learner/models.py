"""All devices' DMML-KD models as batched tensors (device axis first).

Per modality m a block: an encoder (input -> embed) with a common head c_m and a specific head
s_m (width `feature`). The encoder is an MLP (d_m -> hidden -> embed) for feature vectors, a
small 1-D CNN for (C, T) time series, a small 2-D CNN for (C, H, W) images, or any
``torch.nn.Module`` a user's factory builds. Shared blocks: the fusion classifier on
[mean of held c_m, s_1 .. s_M (zeros where missing)] and a common-feature classifier on c
used for knowledge distillation. Keeping the device axis first makes local training one
batched computation for all devices and gossip a matrix product: a module encoder's
parameters are stacked (K, ...) like the MLP's and run for all devices at once with
``torch.func.functional_call`` under ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils.flop_counter import FlopCounterMode

from dmmlkd.learner.errors import ConfigError

# (shape of one sample, embed width) -> a module mapping (B, *shape) to (B, embed)
EncoderFactory = Callable[[tuple[int, ...], int], nn.Module]
ENCODER_KINDS = ("auto", "mlp", "cnn1d", "cnn2d")
CNN_CHANNELS = 32  # channels of the second convolution of the shipped CNNs (the first: half)
# Shared-input evaluation runs this many (device x sample) encoder passes at a time for module
# encoders, so 1,000 devices x a test set do not hold every activation at once.
EVAL_CHUNK = 8192
ENC = "enc."  # prefix of a module encoder's parameters inside a block dict


def _pool(length: int) -> int:
    """Max-pool width after the first convolution: 4 (2 for short inputs, 1 for tiny ones);
    it divides the second convolution's multiply-adds (and energy) by as much."""
    return 4 if length >= 16 else 2 if length >= 4 else 1


def cnn1d_encoder(shape: tuple[int, ...], embed: int) -> nn.Module:
    """Small 1-D CNN for (C, T): two convolutions (width 5), max-pool, global average, linear."""
    channels, length = shape
    return nn.Sequential(
        nn.Conv1d(channels, CNN_CHANNELS // 2, 5, padding=2), nn.ReLU(),
        nn.MaxPool1d(_pool(length)),
        nn.Conv1d(CNN_CHANNELS // 2, CNN_CHANNELS, 5, padding=2), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(CNN_CHANNELS, embed), nn.ReLU())


def cnn2d_encoder(shape: tuple[int, ...], embed: int) -> nn.Module:
    """Small 2-D CNN for (C, H, W): two 3x3 convolutions, max-pool, global average, linear."""
    channels, height, width = shape
    return nn.Sequential(
        nn.Conv2d(channels, CNN_CHANNELS // 2, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(_pool(min(height, width))),
        nn.Conv2d(CNN_CHANNELS // 2, CNN_CHANNELS, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CNN_CHANNELS, embed), nn.ReLU())


@dataclass(frozen=True)
class EncoderSpec:
    """How one modality's encoder runs: the hand-written batched MLP, or a module template
    whose parameters live (stacked over devices) in the block under ``enc.<name>``."""

    kind: str  # "mlp", "cnn1d", "cnn2d" or "custom"
    sample_shape: tuple[int, ...]
    module: nn.Module | None = None  # None: the MLP (block keys w1, b1, w2, b2)
    forward_cycles: float = 0.0  # encoder cycles per sample and forward pass (heads excluded)

    def batched(self, x: Tensor) -> bool:
        """Whether x is per device (K, B, *shape) rather than shared (N, *shape)."""
        return x.dim() == len(self.sample_shape) + 2


def resolve_encoder(kind: str | EncoderFactory, shape: tuple[int, ...], view: str = "?") -> str:
    """The encoder kind for a view: "auto" picks mlp, cnn1d or cnn2d from the sample's rank."""
    if callable(kind):
        return "custom"
    if kind not in ENCODER_KINDS:
        raise ConfigError(f"encoders.{view} must be one of {', '.join(ENCODER_KINDS)} or a "
                          f"factory (got {kind!r})")
    if kind == "auto":
        return {1: "mlp", 2: "cnn1d", 3: "cnn2d"}[len(shape)]
    need = {"cnn1d": 2, "cnn2d": 3}.get(kind)
    if need is not None and len(shape) != need:
        want = "(N, C, T)" if kind == "cnn1d" else "(N, C, H, W)"
        raise ConfigError(f"encoders.{view} = {kind!r} needs {want} arrays "
                          f"(view {view!r} is (N, {', '.join(map(str, shape))}))")
    return kind


def forward_cycles(module: nn.Module, shape: tuple[int, ...]) -> float:
    """Cycles of one sample's forward pass: 2 x (multiply-adds + bias additions).

    Multiply-adds are counted by ``torch.utils.flop_counter`` (2 FLOPs each); a bias adds one
    value per output element of its layer. For a fully-connected layer this is exactly
    2 x its parameters, the rule the MLP encoder has always used. Activations and pooling
    are not counted.
    """
    bias_adds = [0]

    def count_bias(mod: nn.Module, _inputs: object, output: Tensor) -> None:
        if isinstance(getattr(mod, "bias", None), nn.Parameter):
            bias_adds[0] += output.numel()  # batch of one: elements of one sample

    hooks = [m.register_forward_hook(count_bias) for m in module.modules()
             if not list(m.children())]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros(1, *shape))
    finally:
        for h in hooks:
            h.remove()
    return float(counter.get_total_flops() + 2 * bias_adds[0])


def _init(shape: tuple[int, ...], fan_in: int, gen: torch.Generator) -> Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).requires_grad_(True)


@dataclass
class Network:
    """Parameters of every device: ``blocks[m]`` per modality, ``shared``; all (K, ...).

    ``encoders[m]`` says how block m's encoder runs (None: every block is an MLP on (N, d)).
    """

    blocks: list[dict[str, Tensor]]
    shared: dict[str, Tensor]
    n_classes: int
    feature: int
    encoders: list[EncoderSpec] | None = field(default=None)

    @classmethod
    def create(cls, n_devices: int, dims: Sequence[int | tuple[int, ...]], n_classes: int,
               hidden: int = 128, embed: int = 64, feature: int = 32, seed: int = 0,
               encoders: Sequence[str | EncoderFactory] | None = None,
               views: Sequence[str] | None = None) -> Network:
        """Fresh parameters, identical on every device (a common initialisation, as usual in
        decentralized learning).

        ``dims`` is each view's sample shape ((d,) or d, (C, T), (C, H, W)); ``encoders`` per
        view "auto" (default), "mlp", "cnn1d", "cnn2d" or a factory (shape, embed) -> module.
        An MLP on a (C, T) or (C, H, W) view flattens it.
        """
        gen = torch.Generator().manual_seed(seed)
        K = n_devices
        shapes = [(d,) if isinstance(d, int) else tuple(int(n) for n in d) for d in dims]
        kinds = list(encoders) if encoders is not None else ["auto"] * len(shapes)
        names = list(views) if views is not None else [f"m{j}" for j in range(len(shapes))]
        if len(kinds) != len(shapes):
            raise ConfigError(f"{len(shapes)} views but {len(kinds)} encoders")

        def rep(t: Tensor) -> Tensor:
            return t.detach().unsqueeze(0).repeat(K, *([1] * t.dim())).requires_grad_(True)

        blocks, specs = [], []
        for m, (shape, kind) in enumerate(zip(shapes, kinds)):
            resolved = resolve_encoder(kind, shape, names[m])
            if resolved == "mlp":
                d = math.prod(shape)
                block = {"w1": rep(_init((d, hidden), d, gen)), "b1": rep(torch.zeros(hidden)),
                         "w2": rep(_init((hidden, embed), hidden, gen)),
                         "b2": rep(torch.zeros(embed))}
                specs.append(EncoderSpec("mlp", shape, None, 2.0 * (d * hidden + hidden
                                                                    + hidden * embed + embed)))
            else:
                factory = kind if callable(kind) else \
                    {"cnn1d": cnn1d_encoder, "cnn2d": cnn2d_encoder}[resolved]
                module = _build_module(factory, shape, embed, names[m], seed * 7919 + m)
                block = {ENC + n: rep(p) for n, p in module.named_parameters()}
                specs.append(EncoderSpec(resolved, shape, module, forward_cycles(module, shape)))
            block.update({
                "wc": rep(_init((embed, feature), embed, gen)), "bc": rep(torch.zeros(feature)),
                "ws": rep(_init((embed, feature), embed, gen)), "bs": rep(torch.zeros(feature)),
            })
            blocks.append(block)
        fused = feature * (1 + len(shapes))
        shared = {
            "wf": rep(_init((fused, n_classes), fused, gen)), "bf": rep(torch.zeros(n_classes)),
            "wk": rep(_init((feature, n_classes), feature, gen)), "bk": rep(torch.zeros(n_classes)),
        }
        return cls(blocks, shared, n_classes, feature, specs)

    def parameters(self) -> list[Tensor]:
        """Every parameter tensor."""
        return [t for b in self.blocks for t in b.values()] + list(self.shared.values())

    def block_sizes(self) -> list[int]:
        """Parameters per device in each modality block."""
        return [sum(t[0].numel() for t in b.values()) for b in self.blocks]

    def shared_size(self) -> int:
        """Parameters per device in the shared blocks."""
        return sum(t[0].numel() for t in self.shared.values())

    def block_cycles(self) -> list[float]:
        """Cycles per sample of each modality block's forward pass: 2 x (multiply-adds + bias
        additions) of the encoder and the two heads (for an MLP block: 2 x its parameters)."""
        out = []
        for m, block in enumerate(self.blocks):
            heads = sum(block[k][0].numel() for k in ("wc", "bc", "ws", "bs"))
            spec = self.encoder(m)
            encoder = spec.forward_cycles if spec is not None else 2.0 * sum(
                block[k][0].numel() for k in ("w1", "b1", "w2", "b2"))
            out.append(encoder + 2.0 * heads)
        return out

    def encoder(self, m: int) -> EncoderSpec | None:
        """How block m's encoder runs (None: an MLP on (N, d) inputs)."""
        return self.encoders[m] if self.encoders is not None else None

    def encode(self, m: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Common and specific features of modality m (see `encode`)."""
        return encode(self.blocks[m], x, self.encoder(m))


def _build_module(factory: EncoderFactory, shape: tuple[int, ...], embed: int, view: str,
                  seed: int) -> nn.Module:
    """Build an encoder from a factory with a seeded initialisation and check it can run for
    all devices at once (no buffers, (B, *shape) -> (B, embed), vmap-able)."""
    with torch.random.fork_rng(devices=[]):  # seeded, leaving the global stream untouched
        torch.manual_seed(seed)
        module = factory(shape, embed)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"encoder factory for view {view!r} must return a torch.nn.Module "
                          f"(got {type(module).__name__})")
    buffers = [n for n, _ in module.named_buffers()]
    if buffers:
        raise ConfigError(f"encoder for view {view!r} has buffers ({', '.join(buffers[:3])}); "
                          f"stacked over devices only parameters are kept: drop BatchNorm etc.")
    module.requires_grad_(False)  # a template: the trained parameters live in the block
    params = {n: p.detach().unsqueeze(0).repeat(2, *([1] * p.dim()))
              for n, p in module.named_parameters()}
    try:
        out = vmap(lambda p, x: functional_call(module, p, (x,)))(params, torch.zeros(2, 3, *shape))
    except Exception as exc:  # a user's module: any failure means it cannot be batched
        raise ConfigError(f"encoder for view {view!r} cannot run batched over devices "
                          f"(torch.func.vmap): {exc}") from None
    if tuple(out.shape) != (2, 3, embed):
        raise ConfigError(f"encoder for view {view!r} must map (B, {', '.join(map(str, shape))}) "
                          f"to (B, {embed}) (got {tuple(out.shape[1:])})")
    return module


def encode(block: dict[str, Tensor], x: Tensor,
           spec: EncoderSpec | None = None) -> tuple[Tensor, Tensor]:
    """Common and specific features of one modality for all devices; x is per device
    (K, B, *shape) or shared (N, *shape); out (K, B or N, feature) each."""
    if spec is not None and spec.module is not None:
        e = _module_embed(block, x, spec)
    else:
        if spec is not None and len(spec.sample_shape) > 1:  # an MLP on a (C, T)/(C, H, W) view
            x = x.flatten(start_dim=x.dim() - len(spec.sample_shape))
        if x.dim() == 2:
            h = torch.relu(torch.einsum("nd,kdh->knh", x, block["w1"]) + block["b1"][:, None])
        else:
            h = torch.relu(torch.bmm(x, block["w1"]) + block["b1"][:, None])
        e = torch.relu(torch.bmm(h, block["w2"]) + block["b2"][:, None])
    c = torch.bmm(e, block["wc"]) + block["bc"][:, None]
    s = torch.bmm(e, block["ws"]) + block["bs"][:, None]
    return c, s


def _module_embed(block: dict[str, Tensor], x: Tensor, spec: EncoderSpec) -> Tensor:
    """Run a module encoder with every device's own parameters: vmap over the device axis."""
    params = {k[len(ENC):]: t for k, t in block.items() if k.startswith(ENC)}
    module = spec.module
    assert module is not None

    def one_device(p: dict[str, Tensor], xb: Tensor) -> Tensor:
        return functional_call(module, p, (xb,))

    if spec.batched(x):
        return vmap(one_device)(params, x)
    # Shared input (evaluation): chunk the devices so K x N activations never sit in memory.
    K, N = next(iter(params.values())).shape[0], x.shape[0]
    step = max(1, EVAL_CHUNK // max(N, 1))
    parts = [vmap(one_device, in_dims=(0, None))({k: t[i:i + step] for k, t in params.items()}, x)
             for i in range(0, K, step)]
    return torch.cat(parts)


def fuse(net: Network, commons: list[Tensor | None], specifics: list[Tensor | None],
         mask: Tensor) -> tuple[Tensor, Tensor]:
    """Fused logits and mean common feature; ``mask`` (K, M) says which modalities are present."""
    ref = next(c for c in commons if c is not None)
    zeros = torch.zeros_like(ref)
    weights = mask.to(ref.dtype)
    count = weights.sum(dim=1).clamp(min=1.0)[:, None, None]
    c_mean = sum(
        (c if c is not None else zeros) * weights[:, m, None, None] for m, c in enumerate(commons)
    ) / count
    parts = [c_mean] + [
        (s if s is not None else zeros) * weights[:, m, None, None] for m, s in enumerate(specifics)
    ]
    logits = torch.bmm(torch.cat(parts, dim=-1), net.shared["wf"]) + net.shared["bf"][:, None]
    return logits, c_mean


def common_logits(net: Network, c: Tensor) -> Tensor:
    """The common-feature classifier applied to features c (K, B, feature)."""
    return torch.bmm(c, net.shared["wk"]) + net.shared["bk"][:, None]


def predict(net: Network, views: list[Tensor | None], mask: Tensor) -> Tensor:
    """Logits (K, N, C) of every device's model on shared inputs ``views`` (N, *shape) each."""
    with torch.no_grad():
        commons: list[Tensor | None] = []
        specifics: list[Tensor | None] = []
        for m, x in enumerate(views):
            if x is None or not bool(mask[:, m].any()):
                commons.append(None)
                specifics.append(None)
                continue
            c, s = net.encode(m, x)
            commons.append(c)
            specifics.append(s)
        logits, _ = fuse(net, commons, specifics, mask)
        return logits
