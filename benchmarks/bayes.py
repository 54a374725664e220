"""Cost and gradient noise of the local reparameterization trick (rightfocus.bayes).

One training step (forward, negative-ELBO backward, Adam step) of LeNet-5, batch 128 of 28x28
inputs, 2 threads, in one run with interleaved repetitions (medians):

* the deterministic LeNet-5 (the baseline),
* our LRT Bayesian LeNet-5 (``bayes.to_bayesian``),
* bayesian-torch's weight-sampling ``Reparameterization`` and ``Flipout`` layers (through its
  ``dnn_to_bnn``), when installed (``pip install -e '.[bench]'``).

Gradient noise: for one fixed minibatch and identical posterior parameters (the means and
``rho`` copied into every implementation), the gradient of the negative ELBO w.r.t. the weight
means is computed 50 times with fresh noise; the figure is the total variance (sum over
parameters of the per-element variance across the 50 draws). The LRT samples activations
independently per example, so its estimator has lower variance than sampling one weight set
per minibatch (Kingma, Salimans & Welling 2015).

Goals (issue 3): the LRT step at most 2.2x the deterministic step; LRT gradient variance below
bayesian-torch's Reparameterization layers'. Prints a table; writes
benchmarks/results/bayes.json.

    .venv/bin/python benchmarks/bayes.py [--reps 20] [--threads 2] [--draws 50]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import interleaved_medians
from torch import Tensor, nn

from rightfocus import bayes
from rightfocus._io import atomic_write_json
from rightfocus.models import LeNet5

BATCH = 128
NUM_BATCHES = 60000 // BATCH
RHO = -3.0


def _bayesian_torch(model: nn.Module, kind: str) -> nn.Module | None:
    """A copy of ``model`` with bayesian-torch layers of ``kind`` holding our means and rho."""
    try:
        from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn
    except ImportError:
        return None
    det = bayes.to_deterministic(model)
    peer = copy.deepcopy(det)
    dnn_to_bnn(
        peer,
        {
            "prior_mu": 0.0,
            "prior_sigma": 0.1,
            "posterior_mu_init": 0.0,
            "posterior_rho_init": RHO,
            "type": kind,
            "moped_enable": False,
        },
    )
    ours = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in peer.named_parameters():
            layer, leaf = name.rsplit(".", 1)
            leaf = leaf.replace("kernel", "weight")
            if leaf in ("mu_weight", "rho_weight", "mu_bias", "rho_bias"):
                param.copy_(ours[f"{layer}.{leaf}"])
    return peer


def _kl(model: nn.Module) -> Tensor:
    if bayes.is_bayesian(model):
        return bayes.kl(model)
    from bayesian_torch.models.dnn_to_bnn import get_kl_loss

    return get_kl_loss(model)  # type: ignore[no-any-return]


def _loss(model: nn.Module, x: Tensor, y: Tensor, bayesian: bool) -> Tensor:
    logits = model(x)
    if not bayesian:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits, y, reduction="sum") + _kl(model) / NUM_BATCHES


def _step(model: nn.Module, x: Tensor, y: Tensor, bayesian: bool) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def run() -> None:
        loss = _loss(model, x, y, bayesian)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return run


def _gradient_variance(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> float:
    """Total variance over ``draws`` of the negative-ELBO gradient w.r.t. the weight means."""
    model.train()
    params = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1].startswith("mu_")]
    grads = []
    for _ in range(draws):
        g = torch.autograd.grad(_loss(model, x, y, True), params)
        grads.append(torch.cat([t.flatten() for t in g]))
    return float(torch.stack(grads).var(dim=0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--draws", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (BATCH,), generator=g)

    ours = bayes.to_bayesian(LeNet5(), rho_init=RHO)
    models: dict[str, tuple[nn.Module, bool]] = {
        "deterministic LeNet-5": (LeNet5(), False),
        "rightfocus LRT": (ours, True),
    }
    for kind in ("Reparameterization", "Flipout"):
        peer = _bayesian_torch(ours, kind)
        if peer is not None:
            models[f"bayesian-torch {kind}"] = (peer, True)

    variances = {
        name: _gradient_variance(copy.deepcopy(m), x, y, args.draws)
        for name, (m, bayesian) in models.items()
        if bayesian
    }
    cases = {name: _step(copy.deepcopy(m), x, y, b) for name, (m, b) in models.items()}
    med = interleaved_medians(cases, args.reps)
    base = med["deterministic LeNet-5"]
    rows = []
    print(f"{'case':<34}{'median ms':>11}{'x determ.':>11}{'grad var':>12}")
    for name, t in med.items():
        var = variances.get(name)
        rows.append({"case": name, "median_ms": 1e3 * t, "ratio": t / base, "grad_var": var})
        var_s = f"{var:.4g}" if var is not None else ""
        print(f"{name:<34}{1e3 * t:>11.2f}{t / base:>11.2f}{var_s:>12}")
    lrt = med["rightfocus LRT"] / base
    verdict = "met" if lrt <= 2.2 else "MISSED"
    print(f"goal: LRT step <= 2.2x deterministic -> {lrt:.2f}x ({verdict})")
    peer_var = variances.get("bayesian-torch Reparameterization")
    if peer_var is not None:
        ratio = variances["rightfocus LRT"] / peer_var
        print(f"goal: LRT gradient variance < bayesian-torch reparameterization -> {ratio:.3f}x")
    out = Path(__file__).parent / "results" / "bayes.json"
    atomic_write_json(
        out,
        {"batch": BATCH, "reps": args.reps, "threads": args.threads, "draws": args.draws,
         "rows": rows},
    )  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
