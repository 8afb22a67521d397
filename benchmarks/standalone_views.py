"""Centralized single-view MLP accuracy on mfeat: the ceiling each view reaches alone.

    .venv/bin/python -m dmmlkd.benchmarks.standalone_views

Same standardisation and test split as the learner (seeds 0 and 1); MLP d -> 128 -> 64 -> 10,
Adam 1e-3, weight decay 1e-4, batch 32, 150 epochs.
"""

from __future__ import annotations

import torch

from dmmlkd.learner.data import MFEAT_VIEWS, load_dataset


def standalone_accuracy(view: str, seed: int, epochs: int = 150) -> float:
    """Test accuracy of a centralized MLP trained on one view."""
    data = load_dataset("mfeat", [view], seed=seed)
    x, y = torch.as_tensor(data.train[view]), torch.as_tensor(data.train_labels)
    xt, yt = torch.as_tensor(data.test[view]), torch.as_tensor(data.test_labels)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
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


if __name__ == "__main__":
    for view in MFEAT_VIEWS:
        accs = [standalone_accuracy(view, s) for s in (0, 1)]
        print(f"{view}: " + ", ".join(f"{a:.4f}" for a in accs))
