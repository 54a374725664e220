"""The only place that registers hooks on, or changes, a user's model.

Every helper here is a context manager that scopes its change and restores the model in
``finally`` (also when the body raises): hooks are removed, patched ``forward`` methods are
deleted, ``requires_grad`` flags and per-module train/eval flags are put back as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ActivationCapture",
    "attention_probabilities",
    "capture_activations",
    "count_hooks",
    "eval_mode",
    "frozen_parameters",
    "module_call_stack",
    "patched_forward",
    "relu_backward_rule",
    "sampling",
]


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block; restore every module's own flag after."""
    if not enabled:
        yield model
        return
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextmanager
def frozen_parameters(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on the model's parameters inside the block.

    Attribution without ``create_graph`` only needs gradients with respect to the input; freezing
    the parameters keeps autograd from saving what weight gradients would need.
    """
    if not enabled:
        yield model
        return
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        yield model
    finally:
        for p in frozen:
            p.requires_grad_(True)


@dataclass
class ActivationCapture:
    """Outputs of the captured modules from the most recent forward pass, by module."""

    modules: list[nn.Module]
    outputs: dict[int, Tensor] = field(default_factory=dict)

    def __getitem__(self, module: nn.Module) -> Tensor:
        try:
            return self.outputs[id(module)]
        except KeyError:
            raise RuntimeError(
                f"No activation was captured for {type(module).__name__}: the model's forward pass "
                "did not call this layer. Choose a layer that the forward pass uses."
            ) from None


@contextmanager
def capture_activations(
    model: nn.Module,
    modules: Iterable[nn.Module],
    transform: Callable[[nn.Module, Tensor], Tensor | None] | None = None,
) -> Iterator[ActivationCapture]:
    """Record the output of each of ``modules`` on every forward pass inside the block.

    Args:
        model: the model the modules belong to (kept for symmetry and error messages).
        modules: the layers whose outputs to record.
        transform: optional ``f(module, output) -> new_output or None``; a tensor it returns
            replaces the layer's output in the forward pass (and is what gets recorded).
    """
    del model
    capture = ActivationCapture(list(modules))
    handles = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"{type(module).__name__} returned {type(output).__name__}; only layers that "
                "return a single tensor can be captured"
            )
        new = transform(module, output) if transform is not None else None
        capture.outputs[id(module)] = output if new is None else new
        return new

    try:
        for module in capture.modules:
            handles.append(module.register_forward_hook(hook))
        yield capture
    finally:
        for handle in handles:
            handle.remove()
        capture.outputs.clear()


@contextmanager
def patched_forward(
    module: nn.Module, make_forward: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> Iterator[nn.Module]:
    """Replace ``module.forward`` by ``make_forward(original_forward)`` inside the block."""
    had_own = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    new_forward = make_forward(module.forward)  # may raise: nothing is patched yet
    try:
        module.forward = new_forward  # type: ignore[method-assign]
        yield module
    finally:
        if had_own:
            module.forward = previous  # type: ignore[method-assign,assignment]
        else:
            module.__dict__.pop("forward", None)


def _guided_relu(x: Tensor) -> Tensor:
    """ReLU whose backward passes only positive gradients where the input was positive.

    Springenberg et al. 2015, "Striving for Simplicity": R_in = (x > 0) * max(R_out, 0).
    The native ReLU backward applies the mask (x > 0); a hook on the output first clamps the
    incoming gradient at 0. Two element-wise kernels per ReLU in the backward pass (a custom
    autograd function needed four), in differentiable ops, so double backward works.
    """
    out = torch.relu(x)
    if out.requires_grad:
        out.register_hook(torch.relu)
    return out


class _DeconvReLU(torch.autograd.Function):
    """ReLU whose backward is ReLU of the gradient (Zeiler & Fergus 2014, DeconvNet)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


_RELU_RULES: dict[str, Callable[[Tensor], Tensor]] = {
    "guided": _guided_relu,
    "deconvnet": _DeconvReLU.apply,
}


_OTHER_ACTIVATIONS = (
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
)


def _gated_guided_relu(gate: Callable[[], bool]) -> Callable[[Tensor], Tensor]:
    """:func:`_guided_relu` whose gradient clamp applies only while ``gate()`` is True (a
    backward pass with the gate closed gets the plain ReLU gradient)."""

    def clamp(grad: Tensor) -> Tensor:
        return torch.relu(grad) if gate() else grad

    def fn(x: Tensor) -> Tensor:
        out = torch.relu(x)
        if out.requires_grad:
            out.register_hook(clamp)
        return out

    return fn


@contextmanager
def relu_backward_rule(
    model: nn.Module, rule: str, gate: Callable[[], bool] | None = None
) -> Iterator[nn.Module]:
    """Swap the backward rule of every ``nn.ReLU`` module in ``model`` inside the block.

    ``rule`` is ``"guided"`` (guided backpropagation) or ``"deconvnet"``. Functional ``F.relu``
    calls inside a model's ``forward`` cannot be reached; a model without any ``nn.ReLU`` module
    is refused so that the caller does not silently get plain gradients. With ``gate`` (guided
    only), a backward pass through the recorded graph follows the rule only while ``gate()``
    is True: one forward pass then serves a plain and a guided gradient (Guided Grad-CAM).
    """
    if rule not in _RELU_RULES:
        raise ValueError(f"Unknown ReLU backward rule {rule!r}; use one of {sorted(_RELU_RULES)}")
    if gate is not None and rule != "guided":
        raise ValueError(f"A gate is only supported for the 'guided' rule, not {rule!r}")
    fn = _RELU_RULES[rule] if gate is None else _gated_guided_relu(gate)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(
            f"The {rule!r} rule replaces the backward pass of nn.ReLU modules, but the model has "
            "none (functional F.relu calls cannot be overridden). Use nn.ReLU modules."
        )
    others = [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if isinstance(m, _OTHER_ACTIVATIONS) or type(m).__name__ in ("GELU", "Swish", "HardSwish")
    ]
    if others:
        raise ValueError(
            f"The {rule!r} rule is defined for ReLU networks, but the model has other activations "
            f"whose gradient it would keep: {', '.join(others[:3])}. Use a gradient method "
            "(saliency, integrated_gradients) or a CAM for this model."
        )

    def make(_original: Callable[..., Any]) -> Callable[..., Any]:
        return lambda x: fn(x)

    with ExitStack() as stack:
        for relu in relus:
            stack.enter_context(patched_forward(relu, make))
        yield model


def count_hooks(model: nn.Module) -> int:
    """Number of hooks and patched ``forward`` methods on ``model`` (0 for an untouched model)."""
    total = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            total += len(getattr(m, attr, {}))
        total += int("forward" in m.__dict__)
    return total


@contextmanager
def sampling(model: nn.Module, enabled: bool | None = True) -> Iterator[nn.Module]:
    """Set the sampling switch of every Bayesian layer in ``model`` inside the block.

    Bayesian layers (those with a ``sample`` attribute and a ``moments`` method) sample their
    activations when ``sample`` is True, return the mean when False, and follow train/eval
    mode when None. The previous values are restored afterwards.
    """
    layers = [m for m in model.modules() if hasattr(m, "moments") and hasattr(m, "sample")]
    previous = [m.sample for m in layers]
    try:
        for m in layers:
            setattr(m, "sample", enabled)  # noqa: B010
        yield model
    finally:
        for m, value in zip(layers, previous):
            setattr(m, "sample", value)  # noqa: B010


@contextmanager
def paired_backward_rules(
    model: nn.Module,
    rules: dict[type[nn.Module], Callable[[nn.Module, Callable[..., Any]], Callable[..., Any]]],
) -> Iterator[list[nn.Module]]:
    """Swap the backward rule of every module whose exact type is in ``rules`` inside the block.

    For reference-based methods (DeepLIFT, DeepSHAP) that run paired forward passes on an input
    ``x`` and its reference ``x_ref``: ``rules[type(m)](m, original_forward)`` builds the
    forward that replaces ``m.forward`` (same values, but an autograd backward that uses both
    passes' values, e.g. the rescale multiplier ``(f(x) - f(x_ref)) / (x - x_ref)``). Yields the
    patched modules; every ``forward`` is restored in ``finally``, also when a rule or the body
    raises.
    """
    targets = [m for m in model.modules() if type(m) in rules]
    with ExitStack() as stack:
        for module in targets:
            # build first, so that a rule that raises leaves this module untouched
            forward = rules[type(module)](module, module.forward)

            def replace(_original: Callable[..., Any], f: Callable[..., Any] = forward) -> Any:
                return f

            stack.enter_context(patched_forward(module, replace))
        yield targets


@contextmanager
def patched_forwards(
    replacements: dict[nn.Module, Callable[[Callable[..., Any]], Callable[..., Any]]],
) -> Iterator[list[nn.Module]]:
    """Replace the ``forward`` of several modules at once inside the block.

    ``replacements[m](original_forward)`` builds the forward that replaces ``m.forward`` (as in
    :func:`patched_forward`); used by LRP to swap each layer's backward for its rule and to run
    canonized forms (merged batch norms, explicit residual sums) without changing the model.
    Every replacement is built before any module is touched, and every ``forward`` is restored in
    ``finally``, also when building one or the body raises. Yields the patched modules.
    """
    forwards = {m: make(m.forward) for m, make in replacements.items()}
    with ExitStack() as stack:
        for module, forward in forwards.items():

            def replace(_original: Callable[..., Any], f: Callable[..., Any] = forward) -> Any:
                return f

            stack.enter_context(patched_forward(module, replace))
        yield list(forwards)


def _attention_blocks(model: nn.Module) -> list[nn.Module]:
    """timm-style attention modules: a ``fused_attn`` switch and an ``attn_drop`` applied to
    the attention probabilities ``softmax(q k^T / sqrt(d))`` on the unfused path."""
    return [
        m
        for m in model.modules()
        if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module)
    ]


def _hf_attention_modules(model: nn.Module) -> list[nn.Module]:
    """transformers attention modules (``...Attention`` with a ``config`` that has an
    ``_attn_implementation``), innermost only, returning ``(output, probabilities, ...)``."""
    found = [
        m
        for m in model.modules()
        if type(m).__name__.endswith("Attention")
        and hasattr(getattr(m, "config", None), "_attn_implementation")
    ]
    ids = {id(m) for m in found}
    return [m for m in found if not any(id(c) in ids for c in list(m.modules())[1:])]


@contextmanager
def _hf_attention_probabilities(blocks: list[nn.Module]) -> Iterator[list[Tensor]]:
    configs: dict[int, Any] = {id(m.config): m.config for m in blocks}
    saved = {key: c._attn_implementation for key, c in configs.items()}
    maps: list[Tensor] = []
    handles = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not isinstance(probs, Tensor) or probs.dim() != 4:
            raise ValueError(
                f"{type(module).__name__} returned no (B, heads, N, N) attention probabilities "
                "with the eager attention implementation; this transformers version keeps them "
                "internal. Use a gradient method or a CAM for this model."
            )
        maps.append(probs)

    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        handles = [m.register_forward_hook(hook) for m in blocks]
        yield maps
    finally:
        for handle in handles:
            handle.remove()
        for key, c in configs.items():
            c._attn_implementation = saved[key]
        maps.clear()


@contextmanager
def attention_probabilities(model: nn.Module) -> Iterator[list[Tensor]]:
    """Record the attention probabilities of every attention block, in call order.

    Works on timm's attention modules (ViT/DeiT ``Attention``, Swin ``WindowAttention``), which
    compute ``A = softmax(q k^T / sqrt(d))`` explicitly when ``fused_attn`` is False and pass it
    through ``attn_drop``: inside the block ``fused_attn`` is switched off (restored after) and
    a forward hook on each ``attn_drop`` appends its output ``A`` of shape
    ``(B, heads, N, N)`` to the yielded list (still attached to the autograd graph, so
    gradients with respect to ``A`` can be taken). transformers models (e.g.
    ``ViTForImageClassification``) are switched to the eager attention implementation inside
    the block (restored after), whose attention modules return ``(output, A)``; a forward hook
    records ``A``. Models without such blocks are refused.
    """
    hf_blocks = _hf_attention_modules(model)
    if hf_blocks:
        with _hf_attention_probabilities(hf_blocks) as hf_maps:
            yield hf_maps
        return
    blocks = _attention_blocks(model)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no attention block whose probabilities can be read (timm "
            "Attention with fused_attn and attn_drop, or a transformers attention module); "
            "attention-based explanations need a vision transformer. Use a gradient method or "
            "a CAM for other models."
        )
    maps: list[Tensor] = []
    flags = [(m, m.fused_attn) for m in blocks]
    handles = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        maps.append(output)

    try:
        for m in blocks:
            setattr(m, "fused_attn", False)  # noqa: B010
            drop: nn.Module = m.attn_drop  # type: ignore[assignment]
            handles.append(drop.register_forward_hook(hook))
        yield maps
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in flags:
            setattr(m, "fused_attn", flag)  # noqa: B010
        maps.clear()


@contextmanager
def module_call_stack(model: nn.Module) -> Iterator[list[str]]:
    """Inside the block, the yielded list holds the dotted names of the modules of ``model``
    whose forward is running, outermost first (for error messages that name a module)."""
    stack: list[str] = []
    handles = []

    def push(name: str) -> Callable[..., None]:
        return lambda *_args: stack.append(name)

    def pop(*_args: Any) -> None:
        if stack:
            stack.pop()

    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(push(name or type(model).__name__)))
            handles.append(module.register_forward_hook(pop, always_call=True))
        yield stack
    finally:
        for handle in handles:
            handle.remove()
        stack.clear()
