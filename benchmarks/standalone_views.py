"""Centralized ceilings: each view alone and each pair fused, on mfeat and BasicMotions.

    python -m dmmlkd.benchmarks.standalone_views            # each mfeat view alone (2 seeds)
    python -m dmmlkd.benchmarks.standalone_views --pairs    # + every pair fused, BasicMotions

Same standardisation and test split as the learner (seeds 0 and 1); MLP d -> 128 -> 64 -> C,
Adam 1e-3, weight decay 1e-4, batch 32, 150 epochs (``--epochs``). A fused pair is the same MLP
on the two views' features concatenated (early fusion, one centralized model): the room a
decentralized method has is fused - best view alone.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from dmmlkd.learner.data import BASICMOTIONS_VIEWS, MFEAT_VIEWS, load_dataset


def standalone_accuracy(view: str | list[str], seed: int, epochs: int = 150,
                        dataset: str = "mfeat") -> float:
    """Test accuracy of a centralized MLP trained on one view (or several, concatenated)."""
    views = [view] if isinstance(view, str) else list(view)
    data = load_dataset(dataset, views, seed=seed)

    def flat(split: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(np.concatenate([split[v].reshape(len(split[v]), -1) for v in views],
                                              axis=1))

    x, y = flat(data.train), torch.as_tensor(data.train_labels)
    xt, yt = flat(data.test), torch.as_tensor(data.test_labels)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, data.n_classes))
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).float().mean())


def ceilings(seeds: list[int], epochs: int) -> list[str]:
    """Markdown rows: every mfeat pair and BasicMotions, views alone and fused (mean over seeds)."""
    def mean(views: str | list[str], dataset: str = "mfeat") -> float:
        return float(np.mean([standalone_accuracy(views, s, epochs, dataset) for s in seeds]))

    alone = {v: mean(v) for v in MFEAT_VIEWS}
    rows = ["| data | pair | first alone | second alone | fused | room (fused - best alone) |",
            "|---|---|---|---|---|---|"]
    for a, b in itertools.combinations(MFEAT_VIEWS, 2):
        fused = mean([a, b])
        rows.append(f"| mfeat | {a}+{b} | {100 * alone[a]:.1f} | {100 * alone[b]:.1f} | "
                    f"{100 * fused:.1f} | {100 * (fused - max(alone[a], alone[b])):+.1f} |")
    bm = {v: mean(v, "basicmotions") for v in BASICMOTIONS_VIEWS}
    fused = mean(list(BASICMOTIONS_VIEWS), "basicmotions")
    a, b = BASICMOTIONS_VIEWS
    rows.append(f"| basicmotions | {a}+{b} | {100 * bm[a]:.1f} | {100 * bm[b]:.1f} | "
                f"{100 * fused:.1f} | {100 * (fused - max(bm.values())):+.1f} |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", action="store_true", help="every pair fused, and BasicMotions")
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.pairs:
        print("\n".join(ceilings([0, 1], args.epochs)))
    else:
        for view in MFEAT_VIEWS:
            accs = [standalone_accuracy(view, s, args.epochs) for s in (0, 1)]
            print(f"{view}: " + ", ".join(f"{a:.4f}" for a in accs))
