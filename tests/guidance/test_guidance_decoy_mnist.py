"""Behaviour on real data: explanation feedback on Decoy MNIST built from the bundled digits.

A plain hand-written loop around ``guided_forward`` (not the engine), LeNet, Adam, batch 128.
Shortened from the paper (200 epochs, 60k digits) to a few epochs on 4,000 real digits; the
KL term is scaled to the paper's training-set size (60,000) because with 4,000 digits the full
KL (divided by the number of batches) outweighs the likelihood and the Bayesian LeNet
collapses to the prior. 70 % of the training samples keep their mask, as in the paper.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rightfocus import bayes
from rightfocus.data.mnist import bundled_mnist
from rightfocus.guidance import RRR, BayesFeedback, GuidedBatch, guided_forward
from rightfocus.models import LeNet

# the 10 decoy squares (REFERENCE.md §1): 4 corners + 6 edge squares next to them
_SQUARES = [
    (slice(0, 4), slice(0, 4)), (slice(0, 4), slice(24, 28)), (slice(24, 28), slice(0, 4)),
    (slice(24, 28), slice(24, 28)), (slice(4, 8), slice(0, 4)), (slice(0, 4), slice(4, 8)),
    (slice(0, 4), slice(20, 24)), (slice(4, 8), slice(24, 28)), (slice(24, 28), slice(4, 8)),
    (slice(20, 24), slice(0, 4)),
]  # fmt: skip


def _decoy(x: torch.Tensor, y: torch.Tensor, variant: str, train: bool, seed: int):  # type: ignore[no-untyped-def]
    """color: train gray 255-25*label at a random square; position: train square = label."""
    rng = np.random.default_rng(seed)
    x, mask = x.clone(), torch.zeros_like(x)
    for i in range(len(x)):
        label = int(y[i])
        square = label if (train and variant == "position") else int(rng.integers(10))
        value = label if (train and variant == "color") else int(rng.integers(10))
        rows, cols = _SQUARES[square]
        x[i, 0, rows, cols] = (255 - 25 * value) / 255.0
        mask[i, 0, rows, cols] = 1
    return x, mask


def _data(variant: str):  # type: ignore[no-untyped-def]
    (xtr, ytr), (xte, yte) = bundled_mnist(seed=0)
    xtr, mtr = _decoy(xtr, ytr, variant, True, 1)
    xte, mte = _decoy(xte, yte, variant, False, 2)
    keep = torch.from_numpy(np.random.default_rng(3).random(len(xtr)) < 0.7).float()
    return xtr, ytr, mtr * keep.view(-1, 1, 1, 1), xte, yte, mte


def _train(data, guidance, bayesian: bool, seed: int, epochs: int, lr: float):  # type: ignore[no-untyped-def]
    xtr, ytr, mtr, xte, yte, mte = data
    torch.manual_seed(seed)
    model = LeNet()
    if bayesian:
        model = bayes.to_bayesian(model, rho_init=-3.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    num_batches = math.ceil(len(xtr) / 128)
    kl_scale = len(xtr) / 60000
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr))
        for k in range(0, len(xtr), 128):
            i = perm[k : k + 128]
            logits, _, terms = guided_forward(model, GuidedBatch(xtr[i], ytr[i], mtr[i]), guidance)
            if bayesian:
                loss = F.cross_entropy(logits, ytr[i], reduction="sum")
                loss = loss + kl_scale * bayes.kl(model) / num_batches
            else:
                loss = F.cross_entropy(logits, ytr[i])
            loss = loss + sum(terms.values(), torch.zeros(()))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    x = xte.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, yte.view(-1, 1)).sum(), x)
    a = grad.abs().flatten(1)
    overlap = ((mte.flatten(1) * a).sum(1) / (a.sum(1) + 1e-8)).mean().item()
    return acc, overlap


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_feedback_beats_plain_training_on_decoy_mnist(seed: int) -> None:
    torch.set_num_threads(1)
    data = _data("position")
    plain = _train(data, [], False, seed, epochs=10, lr=1e-3)
    rrr = _train(data, [RRR(lam=1.0)], False, seed, epochs=10, lr=1e-3)
    bplain = _train(data, [], True, seed, epochs=10, lr=3e-3)
    bfb = _train(data, [BayesFeedback(lam=3e-3)], True, seed, epochs=10, lr=3e-3)
    print(f"seed {seed}: plain {plain}, rrr {rrr}, bayes {bplain}, bayes+feedback {bfb}")
    assert rrr[0] > plain[0] + 0.03 and rrr[1] < plain[1] / 2
    assert bfb[0] > bplain[0] + 0.03 and bfb[1] < bplain[1] / 2
