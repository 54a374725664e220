"""Canonizers: rewrite a model into an equivalent form whose layers LRP rules apply to.

Nothing here changes a model. The functions find what to rewrite and build replacement forward
functions; :mod:`rightfocus.hooks` installs those for the duration of one call.

- **BatchNorm merging.** An eval-mode batch norm right after a dense or convolution layer is an
  affine map per channel, ``y = s (z - μ) + β`` with ``s = γ / sqrt(σ² + eps)``. Folding it into
  the layer, ``W' = s W`` and ``b' = s (b - μ) + β``, gives the same outputs with one linear
  layer, so the layer's rule sees the whole affine map (Montavon et al. 2019, Sec. 10.3).
  Pairs are found like Zennit's ``SequentialMergeBatchNorm``: a linear leaf module directly
  followed by a batch-norm leaf in registration order; at run time the batch norm must receive
  exactly that layer's output, otherwise the call fails instead of computing a wrong forward.
- **Residual blocks** of torchvision ResNets (``BasicBlock``, ``Bottleneck``): the in-place
  ``out += identity`` is rewritten as an explicit sum so that the relevance of the sum splits
  over both branches in proportion to their contributions, ``R_a = a / (a + b) R`` (the ``Norm``
  rule), as Zennit's ``ResNetCanonizer`` does.
- **DenseNet** (torchvision): the head's functional ``F.adaptive_avg_pool2d`` is run through a
  pooling module so that the ``Norm`` rule applies (its gradient would hand relevance to
  positions the ReLU before it zeroed, and lose it). The concatenations need no rule: their
  gradient hands each part exactly its own relevance. A batch norm after a concatenation is
  not merged (it normalises the concatenation, not the conv registered before it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "densenet_forward",
    "explicit_block_forward",
    "find_batchnorm_merges",
    "is_linear_layer",
    "merged_parameters",
    "residual_blocks",
]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_linear_layer(module: nn.Module) -> bool:
    """``nn.Linear`` or ``nn.Conv1d/2d/3d``: the layers LRP's weight rules apply to."""
    return isinstance(module, _LINEAR_LAYERS)


def _leaves(module: nn.Module, parent: nn.Module | None = None) -> Iterator[tuple[nn.Module, Any]]:
    """``(leaf, its parent)`` in registration order."""
    children = list(module.children())
    if not children:
        yield module, parent
    for child in children:
        yield from _leaves(child, module)


def find_batchnorm_merges(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """``{linear layer: batch norm}`` for each batch norm registered right after a linear leaf.

    Batch norms without running statistics (``track_running_stats=False``) normalise with batch
    statistics and cannot be merged; they are left out. Both must have the same parent module:
    a DenseNet layer's last conv is registered just before the next layer's first batch norm,
    which normalises the concatenation of all features, not that conv's output.
    """
    merges: dict[nn.Module, nn.Module] = {}
    previous: nn.Module | None = None
    previous_parent: nn.Module | None = None
    for leaf, parent in _leaves(model):
        if (
            previous is not None
            and parent is previous_parent
            and is_linear_layer(previous)
            and isinstance(leaf, _BATCH_NORMS)
            and leaf.running_mean is not None
            and leaf.running_var is not None
            and previous not in merges
        ):
            merges[previous] = leaf
        previous, previous_parent = leaf, parent
    return merges


def merged_parameters(layer: nn.Module, batch_norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``(W', b')`` of ``bn(layer(x))`` as one layer; differentiable in every parameter."""
    bn: Any = batch_norm
    weight: Tensor = layer.weight  # type: ignore[assignment]
    bias: Tensor | None = layer.bias  # type: ignore[assignment]
    scale = torch.rsqrt(bn.running_var + bn.eps)
    mean: Tensor = bn.running_mean
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    new_weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    new_bias = shift if bias is None else bias * scale + shift
    return new_weight, new_bias


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The torchvision ResNet ``BasicBlock`` and ``Bottleneck`` modules of ``model``."""
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return []
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def explicit_block_forward(
    block: nn.Module, add: Callable[[Tensor, Tensor], Tensor]
) -> Callable[[Tensor], Tensor]:
    """The forward of a torchvision residual block with its sum done by ``add(identity, out)``.

    Submodules are called as modules, so their own (patched) forwards apply.
    """
    b: Any = block
    names = ("conv1", "bn1", "conv2", "bn2") + (("conv3", "bn3") if hasattr(b, "conv3") else ())
    stages = [(getattr(b, names[i]), getattr(b, names[i + 1])) for i in range(0, len(names), 2)]

    def forward(x: Tensor) -> Tensor:
        out = x
        for k, (conv, bn) in enumerate(stages):
            out = bn(conv(out))
            if k < len(stages) - 1:
                out = b.relu(out)
        identity = b.downsample(x) if b.downsample is not None else x
        return b.relu(add(identity, out))

    return forward


def densenet_forward(model: nn.Module, pool: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The forward of a torchvision ``DenseNet`` with its global pooling done by ``pool``
    (``None`` for other models)."""
    try:
        from torchvision.models.densenet import DenseNet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    if not isinstance(model, DenseNet):
        return None
    m: Any = model

    def forward(x: Tensor) -> Tensor:
        out = torch.relu(m.features(x))
        return m.classifier(torch.flatten(pool(out), 1))  # type: ignore[no-any-return]

    return forward
