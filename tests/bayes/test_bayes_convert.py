"""to_bayesian / to_deterministic: weights to means, function preserved, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rightfocus import _modules, bayes, hooks
from rightfocus.bayes import BayesConv2d, BayesLinear
from rightfocus.models import LeNet, LeNet5


@pytest.mark.parametrize("arch", [LeNet, LeNet5])
def test_every_conv_and_linear_becomes_bayesian_with_copied_means(arch) -> None:
    model = arch()
    bnn = bayes.to_bayesian(model, rho_init=-2.0, prior_sigma=0.2, init="copy")
    plain = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    layers = bayes.bayesian_layers(bnn)
    assert len(layers) == len(plain) == 5
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in bnn.modules())
    assert [type(m) for m in layers] == [BayesConv2d] * 2 + [BayesLinear] * 3
    for old, new in zip(plain, layers):
        assert torch.equal(new.mu_weight, old.weight) and torch.equal(new.mu_bias, old.bias)  # type: ignore[arg-type]
        assert torch.all(new.rho_weight == -2.0) and new.prior_sigma == 0.2
    assert bayes.is_bayesian(bnn) and not bayes.is_bayesian(model)
    assert _modules.last_conv(bnn) is bnn.features.conv2  # the paper's feedback layer


@pytest.mark.parametrize("arch", [LeNet, LeNet5])
def test_near_zero_variance_reproduces_the_original_function(arch) -> None:
    model = arch().double().eval()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    bnn = bayes.to_bayesian(model, rho_init=-40.0, init="copy")
    with torch.no_grad():
        reference = model(x)
        torch.testing.assert_close(bnn(x), reference, rtol=0, atol=1e-5)  # eval: mean network
        bnn.train()
        with hooks.sampling(bnn, False):
            torch.testing.assert_close(bnn(x), reference, rtol=0, atol=1e-5)
        # Sampling: sigma ~ 4e-18, but the paper's sqrt(var + 1e-8) floors each pre-activation's
        # std at 1e-4, so sampled logits differ by a few 1e-4 (5e-3 is > 10 such std).
        torch.testing.assert_close(bnn(x), reference, rtol=0, atol=5e-3)
        back = bayes.to_deterministic(bnn)
        torch.testing.assert_close(back.eval()(x), reference, rtol=0, atol=1e-12)
    assert list(back.state_dict()) == list(model.state_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values())
    )


def test_conversion_keeps_original_untouched_and_flags_dtype_sharing() -> None:
    shared = nn.Linear(4, 4)
    inner = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), shared)
    model = nn.Sequential(inner, shared).double()
    model[0][0].eval()
    bnn = bayes.to_bayesian(model, init="copy")
    assert isinstance(model[0][0], nn.Conv2d) and isinstance(model[1], nn.Linear)
    assert bnn[0][2] is bnn[1] and isinstance(bnn[1], BayesLinear)
    assert not bnn[0][0].training and bnn[1].training
    assert bnn[1].mu_weight.dtype == torch.float64
    back = bayes.to_deterministic(bnn)
    assert back[0][2] is back[1] and not back[0][0].training
    assert back[1].weight.dtype == torch.float64


def test_bare_layers_convert_too() -> None:
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    bconv = bayes.to_bayesian(conv)
    assert isinstance(bconv, BayesConv2d) and bconv.stride == (2, 2) and bconv.padding == (1, 1)
    assert isinstance(bayes.to_deterministic(bconv), nn.Conv2d)


def test_model_kl_is_the_sum_over_layers() -> None:
    bnn = bayes.to_bayesian(LeNet(), rho_init=-2.0)
    expected = sum(layer.kl() for layer in bayes.bayesian_layers(bnn))
    torch.testing.assert_close(bayes.kl(bnn), expected)
    with pytest.raises(ValueError, match="has no Bayesian layer"):
        bayes.kl(LeNet())


def test_rho_init_sets_sigma() -> None:
    bnn = bayes.to_bayesian(LeNet(), rho_init=-2.0)
    sigma = bnn.features.conv1.sigma_weight
    torch.testing.assert_close(sigma, torch.full_like(sigma, math.log1p(math.exp(-2.0)) + 1e-8))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rho_init": float("nan")}, ValueError, "rho_init must be finite"),
        ({"rho_init": float("-inf")}, ValueError, "rho_init must be finite"),
        ({"prior_sigma": 0.0}, ValueError, "prior_sigma must be a finite number > 0"),
        ({"prior_sigma": -0.1}, ValueError, "prior_sigma must be a finite number > 0"),
        ({"rho_init": 1e6}, ValueError, "overflow to Inf/NaN; use rho_init <= 10"),
        ({"init": "kaiming"}, ValueError, "init must be one of auto, paper, copy"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, error, message: str) -> None:
    with pytest.raises(error, match=message):
        bayes.to_bayesian(LeNet(), **kwargs)


def test_models_without_layers_to_convert_are_refused() -> None:
    with pytest.raises(ValueError, match=r"no nn.Conv2d or nn.Linear layer to convert \(none\)"):
        bayes.to_bayesian(nn.Sequential(nn.ReLU(), nn.Flatten()))
    with pytest.raises(ValueError, match="already Bayesian"):
        bayes.to_bayesian(bayes.to_bayesian(LeNet()))
    with pytest.raises(ValueError, match="nothing to convert back"):
        bayes.to_deterministic(LeNet())
    with pytest.raises(TypeError, match=r"must be an nn.Module"):
        bayes.to_bayesian("lenet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        bayes.to_bayesian(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))


def test_rho_init_at_the_bound_still_gives_finite_outputs() -> None:
    bnn = bayes.to_bayesian(LeNet(), rho_init=bayes.layers.MAX_RHO_INIT).train()
    out = bnn(torch.rand(2, 1, 28, 28))
    assert torch.isfinite(out).all() and torch.isfinite(bayes.kl(bnn))


def _fan_in(layer: nn.Module) -> int:
    return int(layer.mu_weight[0].numel())


@pytest.mark.parametrize(
    "model",
    [
        nn.Linear(2048, 512),
        nn.Sequential(nn.Conv2d(64, 128, 5), nn.Flatten(), nn.Linear(4000, 300)),
    ],
    ids=["linear", "conv+linear"],
)
def test_fresh_model_gets_the_papers_kaiming_uniform_relu_means(model: nn.Module) -> None:
    torch.manual_seed(0)
    bnn = bayes.to_bayesian(model, rho_init=-2.0)  # init="auto": not loaded -> "paper"
    for layer in bayes.bayesian_layers(bnn):
        fan_in = _fan_in(layer)
        expected = math.sqrt(2.0 / fan_in)  # He et al. 2015, U(+-sqrt(6/fan_in))
        std = float(layer.mu_weight.detach().std())
        assert abs(std / expected - 1.0) < 0.05, (fan_in, std, expected)
        assert float(layer.mu_weight.abs().max()) <= math.sqrt(6.0 / fan_in) + 1e-6
        # PyTorch's default (kaiming_uniform_(a=sqrt(5))) is sqrt(6) narrower: not what we got
        assert std > 2.0 * math.sqrt(1.0 / (3.0 * fan_in))
        bound = 1.0 / math.sqrt(fan_in)
        assert float(layer.mu_bias.abs().max()) <= bound + 1e-7  # type: ignore[union-attr]
        assert torch.all(layer.rho_weight == -2.0)


def test_loaded_weights_are_kept_exactly(tmp_path) -> None:
    from rightfocus.models.zoo import load_weights_file

    trained = LeNet()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    model = load_weights_file(LeNet(), tmp_path / "w.pt")
    assert bayes.weights_loaded(model)
    for bnn in (bayes.to_bayesian(model), bayes.to_bayesian(trained, init="copy")):
        for old, new in zip(
            [m for m in trained.modules() if isinstance(m, (nn.Conv2d, nn.Linear))],
            bayes.bayesian_layers(bnn),
            strict=True,
        ):
            assert torch.equal(new.mu_weight, old.weight) and torch.equal(new.mu_bias, old.bias)
    # the mark survives copies; an unmarked (e.g. hand-trained) model needs init="copy"
    assert bayes.weights_loaded(bayes.to_bayesian(model))
    marked = bayes.mark_weights_loaded(LeNet())
    fresh = bayes.to_bayesian(marked)
    assert torch.equal(fresh.features.conv1.mu_weight, marked.features.conv1.weight)
    paper = bayes.to_bayesian(model, init="paper")
    assert not torch.equal(paper.features.conv1.mu_weight, model.features.conv1.weight)


def test_config_weights_file_reaches_the_means(tmp_path) -> None:
    from rightfocus.engine.config import load_config_dict
    from rightfocus.engine.run import build_model

    trained = LeNet()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    raw = {
        "experiment": "x",
        "data": {"dataset": "decoy_mnist"},
        "model": {"name": "lenet", "bayesian": True, "weights": str(tmp_path / "w.pt")},
    }
    bnn = build_model(load_config_dict(raw))
    assert torch.equal(bnn.classifier.fc1.mu_weight, trained.classifier.fc1.weight)
    raw["model"].pop("weights")
    fresh = build_model(load_config_dict(raw))
    fan_in = _fan_in(fresh.classifier.fc1)
    assert float(fresh.classifier.fc1.mu_weight.abs().max()) > math.sqrt(1.0 / fan_in)


@pytest.mark.slow
def test_bayesian_lenet_at_the_papers_rho_and_lr_trains_on_the_bundled_digits() -> None:
    """rho_init -2, Adam lr 1e-3, NLL(sum) + KL / minibatches (KL weight 4000/60000): 400 steps
    of 32 of the bundled digits take the mean network above 70 % on 500 held-out digits
    (chance 10 %; with PyTorch's default init copied into the means it stays near chance)."""
    from rightfocus.data.mnist import load_mnist

    torch.manual_seed(0)
    x, y = load_mnist("train", source="bundled")
    xt, yt = x[3000:3500], y[3000:3500]
    x, y = x[:2000], y[:2000]
    bnn = bayes.to_bayesian(LeNet(), rho_init=-2.0, prior_sigma=0.1).train()
    opt = torch.optim.Adam(bnn.parameters(), lr=1e-3)
    n_batches = len(x) // 32
    for _ in range(400):
        idx = torch.randint(len(x), (32,))
        nll = nn.functional.cross_entropy(bnn(x[idx]), y[idx], reduction="sum")
        loss = nll + bayes.kl(bnn) * (4000 / 60000) / n_batches
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((bnn.eval()(xt).argmax(-1) == yt).float().mean())
    assert acc > 0.7, acc


class _PlainSubclass(nn.Linear):
    """A subclass that only adds an attribute: its forward is nn.Linear's."""

    tag = "plain"


class _SameConv(nn.Conv2d):
    """A subclass with its own forward (here: a doubled output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_subclasses_with_the_plain_forward_convert_and_others_are_refused_by_name() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), _PlainSubclass(2 * 26 * 26, 3))
    bnn = bayes.to_bayesian(model, init="copy")
    assert [type(m) for m in bayes.bayesian_layers(bnn)] == [BayesConv2d, BayesLinear]
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad(), hooks.sampling(bnn, False):
        torch.testing.assert_close(bnn(x), model(x))
    refused = nn.Sequential(nn.Linear(4, 4), nn.Sequential(_SameConv(1, 1, 1)))
    with pytest.raises(ValueError, match=r"1\.0 \(_SameConv\) subclasses nn\.Conv2d with its own"):
        bayes.to_bayesian(refused)


def _check_mean_network_and_sampling(model: nn.Module, bnn: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        with hooks.sampling(bnn, False):
            torch.testing.assert_close(bnn(x), model(x), rtol=1e-5, atol=1e-6)
        with hooks.sampling(bnn, True):
            assert not torch.allclose(bnn(x), bnn(x))
    assert bool(torch.isfinite(bayes.kl(bnn)))


def test_torchvision_vit_keeps_multihead_attention_deterministic() -> None:
    """nn.MultiheadAttention reads its raw in_proj_weight and its out_proj's weights directly
    (out_proj is a NonDynamicallyQuantizableLinear it never calls), so it stays as it is; the
    patch conv, the MLPs and the head become Bayesian."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5,
    ).eval()  # fmt: skip
    bnn = bayes.to_bayesian(model, init="copy").eval()
    names = {n for n, m in bnn.named_modules() if isinstance(m, (BayesConv2d, BayesLinear))}
    assert names == {
        "conv_proj", "heads.head",
        *(f"encoder.layers.encoder_layer_{i}.mlp.{j}" for i in range(2) for j in (0, 3)),
    }  # fmt: skip
    for i in range(2):
        attention = bnn.encoder.layers[i].self_attention
        assert isinstance(attention, nn.MultiheadAttention)
        assert type(attention.out_proj).__name__ == "NonDynamicallyQuantizableLinear"
    _check_mean_network_and_sampling(model, bnn, torch.rand(2, 3, 32, 32))


def test_timm_vit_attention_projections_become_bayesian() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5
    ).eval()
    linears = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    bnn = bayes.to_bayesian(model, init="copy").eval()
    names = [n for n, m in bnn.named_modules() if isinstance(m, (BayesConv2d, BayesLinear))]
    assert names == linears and "blocks.0.attn.qkv" in names and "blocks.1.attn.proj" in names
    assert isinstance(bnn.blocks[0].norm1, nn.LayerNorm)  # LayerNorm stays deterministic
    _check_mean_network_and_sampling(model, bnn, torch.rand(2, 3, 32, 32))


def test_bayesian_layers_expose_their_mean_as_weight() -> None:
    layer = BayesLinear(3, 2)
    assert layer.weight is layer.mu_weight
