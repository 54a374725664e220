"""Convert a model's ``Conv2d``/``Linear`` layers to Bayesian LRT layers and back.

``to_bayesian(model)`` returns a copy in which every ``nn.Conv2d`` and ``nn.Linear`` (see
:func:`to_bayesian` for subclasses and what stays deterministic) is replaced by
a :class:`~rightfocus.bayes.layers.BayesConv2d` / :class:`~rightfocus.bayes.layers.BayesLinear`
whose ``rho`` is the constant ``rho_init`` (the Bayesian-feedback paper starts from large
variance, e.g. ``rho_init=-2`` on Decoy MNIST) and whose means are either

* ``init="paper"``: drawn fresh as in the paper's layers, Kaiming-uniform for ReLU,
  ``mu_w ~ U(-b, b)`` with ``b = sqrt(6 / fan_in)`` (std ``sqrt(2 / fan_in)``; He et al. 2015,
  "Delving Deep into Rectifiers"), bias means ``U(+-1/sqrt(fan_in))``; or
* ``init="copy"``: the model's weights and biases (pretrained or trained weights become the
  means, e.g. the paper's AlexNet starts from ImageNet weight means).

The default ``init="auto"`` copies when the model's weights were loaded and draws the paper's
init otherwise. "Loaded" means the model carries the mark set by :func:`mark_weights_loaded`:
``rightfocus.models.zoo.load_weights_file`` and the zoo factories' ``weights=`` /
``pretrained=True`` set it (so ``model.weights`` in a config does); a model you trained or
loaded yourself is not marked - pass ``init="copy"`` (or call ``mark_weights_loaded``). A fresh
PyTorch layer's default init (``kaiming_uniform_(a=sqrt(5))``) is about sqrt(6) times narrower
than the paper's, too narrow against ``sigma = softplus(-2) = 0.127``, so it is never copied by
default. ``to_deterministic(model)`` returns the mean network as a plain model.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from rightfocus.bayes.layers import BayesConv2d, BayesLinear, check_prior, check_rho

__all__ = [
    "INIT_MODES",
    "bayesian_layers",
    "is_bayesian",
    "kl",
    "mark_weights_loaded",
    "to_bayesian",
    "to_deterministic",
    "weights_loaded",
]

BayesLayer = BayesConv2d | BayesLinear

INIT_MODES = ("auto", "paper", "copy")
_LOADED_ATTR = "rightfocus_weights_loaded"


def mark_weights_loaded(model: nn.Module) -> nn.Module:
    """Mark ``model`` as carrying loaded (pretrained or trained) weights; returns it.

    ``to_bayesian(model)`` (``init="auto"``) then keeps the weights as the posterior means.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    setattr(model, _LOADED_ATTR, True)
    return model


def weights_loaded(model: nn.Module) -> bool:
    """True when ``model`` was marked by :func:`mark_weights_loaded` (copies keep the mark)."""
    return bool(getattr(model, _LOADED_ATTR, False))


def _check_init(init: str, model: nn.Module) -> str:
    if init not in INIT_MODES:
        raise ValueError(
            f"init must be one of {', '.join(INIT_MODES)}, got {init!r}: 'paper' draws the "
            "paper's Kaiming-uniform (ReLU) means, 'copy' keeps the model's weights as means, "
            "'auto' copies only when the weights were loaded (bayes.weights_loaded(model))"
        )
    if init == "auto":
        return "copy" if weights_loaded(model) else "paper"
    return init


def bayesian_layers(model: nn.Module) -> list[BayesLayer]:
    """Every :class:`BayesConv2d` / :class:`BayesLinear` in ``model`` (definition order)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, (BayesConv2d, BayesLinear))]


def is_bayesian(model: nn.Module) -> bool:
    """True when ``model`` holds at least one Bayesian layer."""
    return bool(bayesian_layers(model))


def kl(model: nn.Module) -> Tensor:
    """Sum of the closed-form KL(q || p) of every Bayesian layer of ``model``.

    Raises:
        ValueError: the model has no Bayesian layer (convert it with ``to_bayesian`` first).
    """
    layers = bayesian_layers(model)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no Bayesian layer, so it has no KL term. Convert it "
            "with rightfocus.bayes.to_bayesian(model), or check bayes.is_bayesian(model) first."
        )
    total = layers[0].kl()
    for layer in layers[1:]:
        total = total + layer.kl()
    return total


def _bayes_conv(conv: nn.Conv2d, rho_init: float, prior_sigma: float, keep: bool) -> BayesConv2d:
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"Conv2d with padding_mode={conv.padding_mode!r} cannot be converted: BayesConv2d "
            "supports zero padding only. Pad the input explicitly (e.g. nn.ReflectionPad2d)."
        )
    new = BayesConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
        rho_init=rho_init,
        prior_sigma=prior_sigma,
    )
    _copy_means(new, conv.weight, conv.bias, keep)
    return new


def _bayes_linear(
    linear: nn.Linear, rho_init: float, prior_sigma: float, keep: bool
) -> BayesLinear:
    new = BayesLinear(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        rho_init=rho_init,
        prior_sigma=prior_sigma,
    )
    _copy_means(new, linear.weight, linear.bias, keep)
    return new


def _copy_means(new: BayesLayer, weight: Tensor, bias: Tensor | None, keep: bool) -> None:
    """Means <- the deterministic weights when ``keep`` (else the layer's own paper init
    stays); everything on the weight's device and dtype."""
    new.to(device=weight.device, dtype=weight.dtype)
    if not keep:
        return
    with torch.no_grad():
        new.mu_weight.copy_(weight)
        if bias is not None and new.mu_bias is not None:
            new.mu_bias.copy_(bias)


def _plain_conv(layer: BayesConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.mu_bias is not None,
    )
    _copy_plain(conv, layer)
    return conv


def _plain_linear(layer: BayesLinear) -> nn.Linear:
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.mu_bias is not None)
    _copy_plain(linear, layer)
    return linear


def _copy_plain(new: nn.Conv2d | nn.Linear, layer: BayesLayer) -> None:
    new.to(device=layer.mu_weight.device, dtype=layer.mu_weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.mu_weight)
        if new.bias is not None and layer.mu_bias is not None:
            new.bias.copy_(layer.mu_bias)


def _replace(model: nn.Module, swap: dict[int, nn.Module]) -> None:
    """Put ``swap[id(child)]`` in place of every child (shared modules stay shared)."""
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if id(child) in swap:
                setattr(parent, name, swap[id(child)])


def _plain_forward(module: nn.Conv2d | nn.Linear) -> bool:
    """Whether a ``Conv2d``/``Linear`` (or subclass) computes the plain convolution / affine map
    (its class overrides neither ``forward`` nor ``_conv_forward``)."""
    if isinstance(module, nn.Conv2d):
        conv = type(module)
        return conv.forward is nn.Conv2d.forward and conv._conv_forward is nn.Conv2d._conv_forward
    return type(module).forward is nn.Linear.forward


def _layers_to_convert(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """The ``Conv2d``/``Linear`` layers (subclasses included) that :func:`to_bayesian` replaces;
    the projections of ``nn.MultiheadAttention`` stay (it reads their weights directly, never
    calling them). A subclass with its own forward is refused, naming it."""
    inside_mha = {
        id(m)
        for mha in model.modules()
        if isinstance(mha, nn.MultiheadAttention)
        for m in mha.modules()
    }
    layers: list[nn.Conv2d | nn.Linear] = []
    for name, module in model.named_modules():
        if id(module) in inside_mha or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if not _plain_forward(module):
            base = "Conv2d" if isinstance(module, nn.Conv2d) else "Linear"
            raise ValueError(
                f"{name or 'the model'} ({type(module).__name__}) subclasses nn.{base} with its "
                f"own forward, so its Bayesian form would compute something else. Replace it by "
                f"a plain nn.{base} (or a module computing the same with one), or convert the "
                "other parts of the model only."
            )
        layers.append(module)
    return layers


def to_bayesian(
    model: nn.Module,
    rho_init: float = -3.0,
    prior_sigma: float = 0.1,
    init: str = "auto",
) -> nn.Module:
    """A copy of ``model`` with every ``nn.Conv2d``/``nn.Linear`` turned into an LRT layer.

    Means: ``init="paper"`` draws the paper's Kaiming-uniform (ReLU) means,
    ``mu_w ~ U(-sqrt(6 / fan_in), sqrt(6 / fan_in))`` (He et al. 2015); ``init="copy"`` copies
    the weights and biases; ``init="auto"`` (default) copies when the weights were loaded
    (:func:`weights_loaded`: marked by ``load_weights_file`` / the zoo's ``weights=``,
    ``pretrained=True``, or :func:`mark_weights_loaded`) and uses the paper's init otherwise -
    pass ``init="copy"`` for a model you trained yourself. Every ``rho`` is ``rho_init`` (so
    ``sigma = softplus(rho_init) + 1e-8``); the prior is ``N(0, prior_sigma^2)``. Layers shared
    between several parents stay shared. The original model is not changed.

    Converted: every ``nn.Conv2d`` / ``nn.Linear``, subclasses included when their forward is
    the plain one (a subclass with its own ``forward`` / ``_conv_forward`` is refused, naming
    it), so the attention projections of timm and transformers ViTs (``qkv``, ``proj``,
    ``q_proj`` ...) and their MLPs become Bayesian. Deterministic (point estimates): every other
    parameter - normalisation layers (LayerNorm, BatchNorm, GroupNorm), class / distillation
    tokens, position embeddings, layer-scale gammas, other convolutions (Conv1d, Conv3d,
    transposed) - and the whole ``nn.MultiheadAttention`` (torchvision's ViT): its input
    projection is a raw ``in_proj_weight`` parameter and it reads its ``out_proj`` weights
    directly, never calling the layer, so neither can sample.

    Example:
        >>> from rightfocus.models import LeNet
        >>> bnn = to_bayesian(LeNet(), rho_init=-2.0)  # fresh model: the paper's init
        >>> len(bayesian_layers(bnn))
        5

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``rho_init`` not finite or above ``layers.MAX_RHO_INIT``, ``prior_sigma <= 0``,
            unknown ``init``, or no Conv2d/Linear layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    rho_init = check_rho(rho_init)  # finite and <= MAX_RHO_INIT
    prior_sigma = check_prior(prior_sigma)
    copy_means = _check_init(init, model) == "copy"
    targets = _layers_to_convert(model)
    if not targets:
        kind = "already Bayesian layers only" if is_bayesian(model) else "none"
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer to convert ({kind}). "
            "to_bayesian converts the 2-d convolutions and linear layers of a network."
        )
    if isinstance(model, (nn.Conv2d, nn.Linear)):
        # a bare layer: convert it inside a container
        mode = "copy" if copy_means else "paper"
        return to_bayesian(nn.Sequential(model), rho_init, prior_sigma, mode)[0]  # type: ignore[index]
    new_model = copy.deepcopy(model)
    swap: dict[int, nn.Module] = {}
    for module in _layers_to_convert(new_model):
        if id(module) in swap:
            continue
        if isinstance(module, nn.Conv2d):
            swap[id(module)] = _bayes_conv(module, rho_init, prior_sigma, copy_means)
        else:
            swap[id(module)] = _bayes_linear(module, rho_init, prior_sigma, copy_means)
    for old_id, new in swap.items():
        old = next(m for m in new_model.modules() if id(m) == old_id)
        new.train(old.training)
    _replace(new_model, swap)
    return new_model


def to_deterministic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every Bayesian layer replaced by its mean ``Conv2d``/``Linear``.

    The result computes the mean network (what a Bayesian model computes with ``sample=False``).

    Raises:
        ValueError: the model has no Bayesian layer.
    """
    if not is_bayesian(model):
        raise ValueError(
            f"{type(model).__name__} has no BayesConv2d/BayesLinear layer; there is nothing to "
            "convert back. to_deterministic reverses rightfocus.bayes.to_bayesian."
        )
    if isinstance(model, (BayesConv2d, BayesLinear)):
        return to_deterministic(nn.Sequential(model))[0]  # type: ignore[index]
    new_model = copy.deepcopy(model)
    swap: dict[int, nn.Module] = {}
    for module in bayesian_layers(new_model):
        if id(module) in swap:
            continue
        plain = _plain_conv(module) if isinstance(module, BayesConv2d) else _plain_linear(module)
        plain.train(module.training)
        swap[id(module)] = plain
    _replace(new_model, swap)
    return new_model
