"""Models returning tuples, dicts or ``.logits`` objects: the ``output`` selector configured once
(``with_output`` / the config's ``model.output``) for training, guidance, metrics and explanations.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from rightfocus import attribute, bayes
from rightfocus._registry import MODELS
from rightfocus.attribution.outputs import output_selector, with_output, without_output
from rightfocus.engine.config import load_config_dict
from rightfocus.engine.run import build_model, evaluate_run, explain_run, run_experiment
from rightfocus.guidance.base import GuidedBatch, guided_forward
from rightfocus.guidance.bayes_feedback import BayesFeedback
from rightfocus.guidance.rrr import RRR
from rightfocus.metrics.faithfulness import deletion, log_odds_change
from rightfocus.metrics.sanity import model_randomisation_check
from rightfocus.models import LeNet

NAME = "structured_lenet"


class HFStyleOutput(dict):  # type: ignore[type-arg]
    """A transformers ``ModelOutput``-like return value: a dict whose keys are also attributes
    (transformers' ``ModelOutput`` is an ``OrderedDict`` subclass with the same access)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class Structured(LeNet):
    """The paper's LeNet, returning its logits inside a structured value of ``kind``."""

    def __init__(self, kind: str = "dict", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind

    def forward(self, x: Tensor) -> Any:
        logits = super().forward(x)
        if self.kind == "tuple":
            return logits, x.mean()
        if self.kind == "dict":
            return {"features": x, "logits": logits}
        if self.kind == "scores":  # no automatic choice: needs model.output
            return {"features": x, "scores": logits}
        return HFStyleOutput(logits=logits, hidden_states=(x,))


@pytest.fixture
def registered() -> Iterator[str]:
    """Register the structured LeNet in the zoo for one test (the contract tests must not see
    a test-only model)."""

    def factory(kind: str = "dict", num_classes: int = 10, in_channels: int = 1, **_: Any) -> Any:
        return Structured(kind, num_classes=num_classes, in_channels=in_channels)

    MODELS.register(NAME, target_layer="features.conv2", input_size=28)(factory)
    yield NAME
    del MODELS._items[NAME], MODELS._meta[NAME]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _x(b: int = 4) -> Tensor:
    return torch.rand(b, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("kind", "output"), [("tuple", None), ("dict", None), ("hf", None), ("scores", "scores")]
)
def test_with_output_returns_the_logits_and_keeps_the_model(kind: str, output: Any) -> None:
    torch.manual_seed(0)
    model = Structured(kind).eval()
    keys = list(model.state_dict())
    selected = with_output(model, output)
    assert selected is model and isinstance(model, Structured)
    assert type(model).__name__ == "Structured"
    assert list(model.state_dict()) == keys
    logits = model(_x())
    assert isinstance(logits, Tensor) and logits.shape == (4, 10)
    assert output_selector(model) == (True, output)
    # copies, pickles and Bayesian conversions keep the selection (and are independent)
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(_x()), logits)
    assert twin.features[0] is not model.features[0]
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(_x()), logits)
    bnn = bayes.to_bayesian(model, init="copy")
    assert bnn(_x()).shape == (4, 10) and type(bnn).__name__ == "Structured"
    # attribution on the configured model needs no output= any more
    torch.testing.assert_close(
        attribute(model, _x(), method="saliency"),
        attribute(without_output(copy.deepcopy(model)), _x(), method="saliency", output=output),
    )
    without_output(model)
    assert not isinstance(model(_x()), Tensor) and output_selector(model) == (False, None)


def test_automatic_selection_refuses_an_unknown_structure_naming_the_fix() -> None:
    model = with_output(Structured("scores"))
    with pytest.raises(TypeError, match="Pass output="):
        model(_x())
    with pytest.raises(TypeError, match="output must be None"):
        with_output(Structured(), 1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["tuple", "dict", "hf"])
def test_guidance_and_metrics_on_a_configured_model(kind: str) -> None:
    """RRR and Bayesian feedback train through the selector; metrics that call the model and
    MC prediction see the logits."""
    torch.manual_seed(0)
    mask = torch.zeros(4, 1, 28, 28)
    mask[..., :6, :6] = 1.0
    batch = GuidedBatch(_x(), torch.tensor([0, 3, 5, 9]), mask)
    model = with_output(Structured(kind)).train()
    logits, _, terms = guided_forward(model, batch, [RRR(lam=1.0)])
    assert logits.shape == (4, 10) and float(terms["rrr"].detach()) > 0
    bnn = with_output(bayes.to_bayesian(without_output(Structured(kind)), rho_init=-3.0))
    logits, _, terms = guided_forward(bnn.train(), batch, [BayesFeedback()])
    (value,) = terms.values()
    assert logits.shape == (4, 10) and float(value.detach()) != 0.0
    value.backward()
    assert bayes.bayesian_layers(bnn)[0].mu_weight.grad is not None
    pred = bayes.mc_predict(bnn.eval(), _x(), samples=3)
    assert pred.logits.shape == (3, 4, 10)
    sal = attribute(model.eval(), _x(), method="saliency")
    target = model(_x()).argmax(-1)
    curve = deletion(model, _x(), sal, target, steps=4)
    assert curve.scores.shape == (4, 5) and bool(torch.isfinite(curve.auc).all())
    assert log_odds_change(model, _x(), sal, target, k=50).shape == (4,)
    check = model_randomisation_check(model, _x(), target)  # randomises deep copies
    assert len(check.layers) == len(check.correlation) > 0


def _config(tmp_path: Path, run: str, model: dict[str, Any], guidance: list[Any]) -> Any:
    raw = {
        "runs_dir": str(tmp_path / "runs"),
        "experiment": "structured",
        "run": run,
        "data": {
            "dataset": "decoy_mnist",
            "variant": "position",
            "max_train": 48,
            "max_test": 16,
            "batch_size": 16,
            "folds": 2,
        },
        "model": model,
        "guidance": guidance,
        "optim": {"epochs": 1, "lr": 1e-3},
        "evaluation": {"mc_samples": 2, "val_mc_samples": 2},
        "trainer": {"log_every_n_steps": 1, "progress_bar": False},
    }
    return load_config_dict(raw)


@pytest.mark.parametrize(
    ("kind", "output", "bayesian"),
    [("tuple", None, False), ("hf", None, True), ("scores", "scores", False)],
)
def test_train_evaluate_explain_from_a_config(
    tmp_path: Path, registered: str, kind: str, output: Any, bayesian: bool
) -> None:
    """A few steps from a config (RRR, or Bayesian feedback + RRR on the Bayesian form), then
    evaluate and explain the run; the checkpoint holds the plain model's parameter names."""
    guidance: list[Any] = [{"name": "rrr", "lam": 1.0}]
    if bayesian:
        guidance.insert(0, {"name": "bayes_feedback", "lam": 1e-3})
    model = {"name": registered, "options": {"kind": kind}, "bayesian": bayesian}
    if output is not None:
        model["output"] = output
    cfg = _config(tmp_path, kind, model, guidance)
    metrics = run_experiment(cfg, quiet=True)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["nll"] > 0
    assert evaluate_run(cfg.run_dir) == pytest.approx(metrics, nan_ok=True)
    png = explain_run(cfg.run_dir, methods=["saliency", "gradcam"], n=2)
    assert png.is_file()
    state = torch.load(cfg.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    plain = Structured(kind)
    expected = bayes.to_bayesian(plain) if bayesian else plain
    assert set(state) == {f"model.{k}" for k in expected.state_dict()}


def test_config_output_is_validated_and_applied(tmp_path: Path, registered: str) -> None:
    model = {"name": registered, "options": {"kind": "tuple"}, "output": 0}
    built = build_model(_config(tmp_path, "t", model, []))
    assert built(_x()).shape == (4, 10)
    model["output"] = 3
    with pytest.raises(ValueError, match="output=3 needs a tuple or list long enough"):
        build_model(_config(tmp_path, "t", model, []))(_x())
    with pytest.raises(Exception, match="output"):
        _config(tmp_path, "t", {**model, "output": [1]}, [])
