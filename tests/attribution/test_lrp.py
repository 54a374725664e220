"""LRP (``method="lrp"``): conservation, a matrix-form reference per rule, Zennit's numbers,
canonizers, differentiability and bad input. Float64 throughout.

Deliberate difference from Zennit: Zennit's canonizer folds a batch norm into the preceding layer
and turns the batch norm into "identity" parameters (mean 0, var 1, weight 1, bias 0), which
still divides by ``sqrt(1 + eps)``; its canonized model is therefore not exactly the original
one. We patch the batch norm to a true identity, so the VGG / ResNet comparisons set the batch
norms' ``eps`` to 0, where both canonized models equal the original exactly (with the default
``eps = 1e-5`` the two differ by ~1e-4 relative on VGG-11, all of it from that factor;
:func:`test_batchnorm_merge_matches_a_hand_folded_model` checks our merge at the default eps).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from rightfocus import attribute, hooks
from rightfocus.attribution.propagation import LRP, Epsilon, Gamma

zennit_attr = pytest.importorskip("zennit.attribution")
zennit_comp = pytest.importorskip("zennit.composites")
zennit_tv = pytest.importorskip("zennit.torchvision")

RTOL = 1e-5
DT = torch.float64


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.detach().abs().max()))


def lrp(model: nn.Module, x: torch.Tensor, target, **opts) -> torch.Tensor:
    return attribute(model, x, target, "lrp", **opts)


def zennit_lrp(model, x, target, composite) -> torch.Tensor:
    """Zennit's relevance with the target logit, one-hot, as output relevance."""
    with zennit_attr.Gradient(model=model, composite=composite) as attributor:
        onehot = torch.eye(model(x[:1]).shape[1], dtype=x.dtype)[target]
        _, rel = attributor(x.clone(), lambda out: out * onehot)
    return rel


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def small_cnn(bias: bool = True) -> nn.Module:
    """Conv/ReLU/max-pool twice, adaptive average pool, two dense layers."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, bias=bias), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 12, bias=bias), nn.ReLU(), nn.Linear(12, 5, bias=bias),
    ).to(DT).eval()  # fmt: skip


class TinyNet(nn.Module):
    """The matrix-reference net: conv(2->3, 3x3, pad 1) - ReLU - avgpool 2 - dense 27-6 - ReLU -
    dense 6-4, on 2x6x6 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu1, self.pool = nn.ReLU(), nn.AvgPool2d(2)
        self.fc1, self.relu2, self.fc2 = nn.Linear(27, 6), nn.ReLU(), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu1(self.conv(x))).flatten(1)
        return self.fc2(self.relu2(self.fc1(h)))


def randomize_batchnorms(model: nn.Module, eps: float | None = None) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            if eps is not None:
                m.eps = eps
    return model


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    torch.manual_seed(1)
    model = torchvision.models.vgg11_bn(weights=None)
    # VGG-11-bn's own features, avgpool and head layout; a narrow head keeps the test fast.
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(),
        nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10),
    )  # fmt: skip
    return randomize_batchnorms(model.to(DT).eval(), eps=0.0)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(2)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    return randomize_batchnorms(model.to(DT).eval(), eps=0.0)


# ---------------------------------------------------------------------------------------------
# Conservation
# ---------------------------------------------------------------------------------------------


def test_epsilon_conserves_the_target_logit_on_a_bias_free_relu_net():
    model, x = small_cnn(bias=False), torch.randn(4, 3, 10, 10, dtype=DT)
    target = torch.tensor([0, 3, 4, 1])
    rel = lrp(model, x, target, composite="epsilon", epsilon=1e-9, stabilizer=1e-12)
    logit = model(x).gather(1, target[:, None]).squeeze(1).detach()
    close(rel.flatten(1).sum(1), logit, rtol=1e-6)


@pytest.mark.parametrize("rule", ["zplus", "alpha2_beta1", "alpha1_beta0"])
def test_zplus_and_alpha_beta_conserve_on_positive_inputs(rule):
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, bias=False), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 6 * 6, 16, bias=False), nn.ReLU(), nn.Linear(16, 3, bias=False),
    ).to(DT).eval()  # fmt: skip
    x = torch.rand(3, 2, 8, 8, dtype=DT) + 0.1
    rel = lrp(model, x, None, composite={nn.Conv2d: rule, nn.Linear: rule}, stabilizer=1e-12)
    close(rel.flatten(1).sum(1), model(x).max(1).values.detach(), rtol=1e-6)
    if rule == "alpha2_beta1":  # negative evidence is kept, unlike z+
        assert float(rel.min()) < 0


# ---------------------------------------------------------------------------------------------
# Matrix-form reference (Bach et al. 2015; Montavon et al. 2019), layer by layer
# ---------------------------------------------------------------------------------------------


def stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def rule_matrix(rule: str, a, W, b, R, *, low=None, high=None, C=None, eps=1e-6):
    """``R_in`` of one layer ``z = W a + b`` from the contributions ``Z_ij = W_ji a_i``."""
    Z = W * a[None, :]  # (out, in)
    Zp, Zn = Z.clamp(min=0), Z.clamp(max=0)
    if rule.startswith("epsilon"):
        e = float(rule.split(":")[1])
        return (Z * (R / stab(Z.sum(1) + b, e))[:, None]).sum(0)
    if rule in ("zplus", "alpha1_beta0"):
        return (Zp * (R / stab(Zp.sum(1) + b.clamp(min=0), eps))[:, None]).sum(0)
    if rule == "alpha2_beta1":
        pos = Zp * (R / stab(Zp.sum(1) + b.clamp(min=0), eps))[:, None]
        neg = Zn * (R / stab(Zn.sum(1) + b.clamp(max=0), eps))[:, None]
        return (2 * pos - neg).sum(0)
    if rule == "gamma":
        z, g = Z.sum(1) + b, 0.25
        up, up_d = Z + g * Zp, (Z + g * Zp).sum(1) + b + g * b.clamp(min=0)
        dn, dn_d = Z + g * Zn, (Z + g * Zn).sum(1) + b + g * b.clamp(max=0)
        s_up, s_dn = R * (z > 0) / stab(up_d, eps), R * (z < 0) / stab(dn_d, eps)
        return (up * s_up[:, None] + dn * s_dn[:, None]).sum(0)
    if rule == "zbox":
        Zb = Z - W.clamp(min=0) * low[None, :] - W.clamp(max=0) * high[None, :]
        return (Zb * (R / stab(Zb.sum(1), eps))[:, None]).sum(0)
    if rule == "flat":
        return (C * (R / stab(C.sum(1), eps))[:, None]).sum(0)
    raise ValueError(rule)


def as_matrix(f, in_shape) -> torch.Tensor:
    """The matrix of a linear map (no bias), column i = f(e_i)."""
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n, dtype=DT).view(n, *in_shape)
    return f(basis).reshape(n, -1).T


def reference_lrp(net: TinyNet, x, target, conv_rule, dense_rule, low=None, high=None):
    """Relevance of one sample ``x`` (2, 6, 6) through TinyNet, every layer as a matrix."""
    conv = net.conv
    M = as_matrix(lambda e: F.conv2d(e, conv.weight, None, padding=1), (2, 6, 6))
    ones = torch.ones_like(conv.weight)
    M_ones = as_matrix(lambda e: F.conv2d(e, ones, None, padding=1), (2, 6, 6))
    P = as_matrix(lambda e: F.avg_pool2d(e, 2), (3, 6, 6))
    b1 = conv.bias.repeat_interleave(36)
    a0 = x.flatten()
    a1 = torch.relu(M @ a0 + b1)
    a2 = P @ a1
    a3 = torch.relu(net.fc1.weight @ a2 + net.fc1.bias)
    z4 = net.fc2.weight @ a3 + net.fc2.bias
    R = torch.zeros_like(z4).index_put((torch.tensor(target),), z4[target])
    dense = {"C": torch.ones_like(net.fc2.weight)}
    R = rule_matrix(dense_rule, a3, net.fc2.weight, net.fc2.bias, R, **dense)
    dense = {"C": torch.ones_like(net.fc1.weight)}
    R = rule_matrix(dense_rule, a2, net.fc1.weight, net.fc1.bias, R, **dense)
    R = rule_matrix("epsilon:1e-6", a1, P, torch.zeros(P.shape[0], dtype=DT), R)  # norm rule
    box = {"low": torch.full_like(a0, low or 0.0), "high": torch.full_like(a0, high or 0.0)}
    R = rule_matrix(conv_rule, a0, M, b1, R, C=M_ones, **box)
    return R.view(2, 6, 6)


RULES = ["epsilon:0.1", "zplus", "alpha1_beta0", "alpha2_beta1", "gamma", "flat"]


def our_rule(name: str) -> object:
    return Epsilon(0.1) if name == "epsilon:0.1" else name


@pytest.mark.parametrize("conv_rule", [*RULES, "zbox"])
def test_conv_rules_match_the_matrix_reference(conv_rule):
    net = TinyNet().to(DT).eval()
    x = torch.rand(2, 2, 6, 6, dtype=DT) * 2 - 1  # signed inputs exercise the x- terms
    composite = {nn.Conv2d: our_rule(conv_rule), nn.Linear: "epsilon"}
    rel = lrp(net, x, torch.tensor([1, 3]), composite=composite, low=-1.0, high=1.0)
    for i, t in enumerate((1, 3)):
        ref = reference_lrp(net, x[i], t, conv_rule, "epsilon:1e-6", low=-1.0, high=1.0)
        close(rel[i], ref, rtol=1e-10)


@pytest.mark.parametrize("dense_rule", RULES)
def test_dense_rules_match_the_matrix_reference(dense_rule):
    net = TinyNet().to(DT).eval()
    x = torch.rand(2, 2, 6, 6, dtype=DT)
    rel = lrp(net, x, torch.tensor([0, 2]), composite={"conv": "epsilon", nn.Linear:
                                                        our_rule(dense_rule)})  # fmt: skip
    for i, t in enumerate((0, 2)):
        close(rel[i], reference_lrp(net, x[i], t, "epsilon:1e-6", dense_rule), rtol=1e-10)


@pytest.mark.parametrize("conv_rule", ["epsilon:0.1", "zplus", "alpha2_beta1", "gamma", "zbox"])
def test_create_graph_gives_the_reference_parameter_gradients(conv_rule):
    """Second order: d/dθ of a loss on the relevance equals autograd through the reference."""
    net = TinyNet().to(DT).eval()
    x = torch.rand(2, 2, 6, 6, dtype=DT) * 2 - 1
    weights = torch.randn(2, 2, 6, 6, dtype=DT)
    params = list(net.parameters())
    composite = {nn.Conv2d: our_rule(conv_rule), nn.Linear: "gamma"}
    method = LRP(composite=composite, low=-1.0, high=1.0, create_graph=True)
    ours = torch.autograd.grad((method(net, x, torch.tensor([1, 2])) * weights).sum(), params)
    ref_rel = torch.stack(
        [reference_lrp(net, x[i], t, conv_rule, "gamma", -1.0, 1.0) for i, t in enumerate((1, 2))]
    )
    ref = torch.autograd.grad((ref_rel * weights).sum(), params)
    for g_ours, g_ref in zip(ours, ref):
        close(g_ours, g_ref, rtol=1e-8)


def test_create_graph_through_merged_batchnorm_and_residual_sum_matches_finite_differences():
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), BasicBlock(4, 4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip
    model = randomize_batchnorms(model.to(DT).eval())
    x, weights = torch.rand(2, 2, 5, 5, dtype=DT), torch.randn(2, 2, 5, 5, dtype=DT)
    target = torch.tensor([0, 2])

    def loss(**opts):
        return (lrp(model, x, target, composite="epsilon_alpha2_beta1", **opts) * weights).sum()

    grads = torch.autograd.grad(loss(create_graph=True), list(model.parameters()))
    named = dict(zip([n for n, _ in model.named_parameters()], grads))
    for name in ("1.weight", "3.bn1.bias", "3.conv2.weight", "6.bias"):
        p = dict(model.named_parameters())[name]
        idx = (0,) * p.dim()
        with torch.no_grad():
            p[idx] += 1e-6
            up = float(loss())
            p[idx] -= 2e-6
            down = float(loss())
            p[idx] += 1e-6
        assert abs((up - down) / 2e-6 - float(named[name][idx])) < 1e-5 * (
            1 + abs(float(named[name][idx]))
        ), name


# ---------------------------------------------------------------------------------------------
# Zennit's numbers
# ---------------------------------------------------------------------------------------------

BOX = {"low": -1.0, "high": 2.0}


def composites(canonizers=None):
    can = {"canonizers": canonizers}
    return {
        "epsilon_plus": (zennit_comp.EpsilonPlus(**can), {}),
        "epsilon_alpha2_beta1": (zennit_comp.EpsilonAlpha2Beta1(**can), {}),
        "epsilon_gamma_box": (zennit_comp.EpsilonGammaBox(**BOX, **can), BOX),
        "epsilon_plus_flat": (zennit_comp.EpsilonPlusFlat(**can), {}),
    }


@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_alpha2_beta1", "epsilon_gamma_box",
                                  "epsilon_plus_flat"])  # fmt: skip
def test_small_cnn_with_biases_matches_zennit(name):
    model, x = small_cnn(), torch.rand(3, 3, 10, 10, dtype=DT) * 3 - 1
    target = torch.tensor([4, 0, 2])
    zc, opts = composites()[name]
    close(lrp(model, x, target, composite=name, **opts), zennit_lrp(model, x, target, zc))


@pytest.mark.parametrize("name", ["epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_dilated_grouped_strided_and_padded_convolutions_match_zennit(name):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, dilation=2), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding="same", padding_mode="reflect"), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).to(DT).eval()  # fmt: skip
    x, target = torch.rand(2, 3, 11, 12, dtype=DT) * 3 - 1, torch.tensor([2, 0])
    zc, opts = composites()[name]
    close(lrp(model, x, target, composite=name, **opts), zennit_lrp(model, x, target, zc))


def test_rule_dict_options_match_zennit():
    model, x = small_cnn(), torch.rand(2, 3, 10, 10, dtype=DT)
    target = torch.tensor([1, 3])
    rules = {nn.Conv2d: Gamma(0.5), nn.Linear: "epsilon"}
    ours = lrp(model, x, target, composite=rules, epsilon=0.05)
    zr = __import__("zennit.rules", fromlist=["rules"])
    zt = __import__("zennit.types", fromlist=["types"])
    zc = zennit_comp.LayerMapComposite(
        [
            (zt.Activation, zr.Pass()),
            (zt.AvgPool, zr.Norm()),
            (nn.Conv2d, zr.Gamma(gamma=0.5)),
            (nn.Linear, zr.Epsilon(epsilon=0.05)),
        ]
    )
    close(ours, zennit_lrp(model, x, target, zc))


@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_gamma_box"])
def test_vgg11_bn_matches_zennit(vgg, name):
    x, target = torch.rand(1, 3, 32, 32, dtype=DT) * 3 - 1, torch.tensor([3])
    zc, opts = composites([zennit_tv.VGGCanonizer()])[name]
    close(lrp(vgg, x, target, composite=name, **opts), zennit_lrp(vgg, x, target, zc))


@pytest.mark.parametrize("name", ["epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_resnet18_matches_zennit(resnet, name):
    x, target = torch.rand(1, 3, 32, 32, dtype=DT) * 3 - 1, torch.tensor([5])
    zc, opts = composites([zennit_tv.ResNetCanonizer()])[name]
    close(lrp(resnet, x, target, composite=name, **opts), zennit_lrp(resnet, x, target, zc))


# ---------------------------------------------------------------------------------------------
# Canonizers and the user's model
# ---------------------------------------------------------------------------------------------


def bn_cnn() -> nn.Module:
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False),
        nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3),
    )  # fmt: skip
    return randomize_batchnorms(model.to(DT).eval())


def test_batchnorm_merge_matches_a_hand_folded_model():
    model = bn_cnn()
    folded = copy.deepcopy(model)
    for i in (0, 3):
        conv, bn = folded[i], folded[i + 1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.bias)
        new = nn.Conv2d(4 if i else 3, 4, 3).to(DT)
        new.weight.data = (conv.weight * scale[:, None, None, None]).detach()
        new.bias.data = ((bias - bn.running_mean) * scale + bn.bias).detach()
        folded[i], folded[i + 1] = new, nn.Identity()
    x = torch.rand(2, 3, 8, 8, dtype=DT)
    close(folded(x), model(x), rtol=1e-12)
    for name in ("epsilon_plus", "epsilon_alpha2_beta1"):
        close(lrp(model, x, None, composite=name), lrp(folded, x, None, composite=name), 1e-10)


@pytest.mark.parametrize("kind", ["bn", "resnet_block"])
def test_users_model_is_unchanged_after_a_canonized_call(kind):
    if kind == "bn":
        model = bn_cnn()
    else:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), BasicBlock(4, 4), nn.Flatten(), nn.Linear(144, 3))
        model = randomize_batchnorms(model.to(DT).eval())
    x = torch.rand(2, 3, 8, 8, dtype=DT)
    state = copy.deepcopy(model.state_dict())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    out = model(x)
    box = {"composite": "epsilon_gamma_box", "low": 0.0, "high": 0.5}
    for opts in ({}, box):
        if opts is box:  # fails inside the forward: x (in [0, 1]) exceeds the box
            with pytest.raises(ValueError, match=r"outside \[low, high\]"):
                lrp(model, x, None, **opts)
        else:
            lrp(model, x, None, **opts)
        assert hooks.count_hooks(model) == 0
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
        assert state.keys() == model.state_dict().keys()
        assert [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == bns
        torch.testing.assert_close(model(x), out, rtol=0, atol=0)


def test_without_canonize_batchnorm_passes_relevance():
    model, x = bn_cnn(), torch.rand(2, 3, 8, 8, dtype=DT)
    zc = zennit_comp.EpsilonPlus()  # no canonizer: Zennit's batch norms pass relevance too
    close(lrp(model, x, None, canonize=False), zennit_lrp(model, x, model(x).argmax(1), zc))


def test_callable_target_matches_the_class_target():
    model, x = small_cnn(), torch.rand(2, 3, 10, 10, dtype=DT)
    close(lrp(model, x, lambda out: out[:, 2]), lrp(model, x, 2), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_unknown_composite_and_rule_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"epsilon_plus.*epsilon_gamma_box"):
        LRP(composite="epsilon_pluss")
    with pytest.raises(ValueError, match=r"known rules: epsilon.*zplus"):
        LRP(composite={nn.Conv2d: "z++"})
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        LRP(composite={nn.Conv2d: "alpha3_beta1"})
    with pytest.raises(TypeError, match="keys"):
        LRP(composite={3: "epsilon"})
    with pytest.raises(TypeError, match="composite must be"):
        LRP(composite=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epsilon must be"):
        LRP(epsilon=-1.0)


def test_box_rule_needs_a_valid_range():
    with pytest.raises(ValueError, match="low= and high="):
        LRP(composite="epsilon_gamma_box")
    with pytest.raises(ValueError, match="low= and high="):
        LRP(composite={nn.Conv2d: "zbox"}, low=0.0)
    with pytest.raises(ValueError, match="low < high"):
        LRP(composite="epsilon_gamma_box", low=1.0, high=0.0)
    with pytest.raises(ValueError, match="finite"):
        LRP(composite="epsilon_gamma_box", low=float("-inf"), high=1.0)
    model, x = small_cnn(), torch.rand(2, 3, 10, 10, dtype=DT)
    with pytest.raises(ValueError, match="does not broadcast"):
        lrp(model, x, None, composite="epsilon_gamma_box", low=torch.zeros(5), high=1.0)
    with pytest.raises(ValueError, match="outside"):
        lrp(model, x * 3, None, composite="epsilon_gamma_box", low=0.0, high=1.0)
    per_channel = lrp(model, x, None, composite="epsilon_gamma_box", low=torch.zeros(3),
                      high=torch.ones(3))  # fmt: skip
    close(per_channel, lrp(model, x, None, composite="epsilon_gamma_box", low=0.0, high=1.0))


def test_rules_that_do_not_fit_the_layer_are_refused():
    model, x = small_cnn(), torch.rand(1, 3, 10, 10, dtype=DT)
    with pytest.raises(ValueError, match="needs a layer with weights"):
        lrp(model, x, None, composite={nn.ReLU: "zplus"})
    with pytest.raises(ValueError, match=r"no layer named 'features\.0'.*0, 3, 7, 9"):
        lrp(model, x, None, composite={"features.0": "epsilon"})
    with pytest.raises(ValueError, match="pass rule cannot"):
        lrp(model, x, None, composite={nn.Linear: "pass"})


def test_train_mode_batchnorm_is_refused_with_create_graph():
    model = bn_cnn().train()
    with pytest.raises(ValueError, match="eval mode"):
        LRP(create_graph=True)(model, torch.rand(2, 3, 8, 8, dtype=DT))
    assert hooks.count_hooks(model) == 0 and model.training
