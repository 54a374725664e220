"""Which part of a model's return value is explained: the ``output=`` selector.

Many models return more than a logits tensor: a tuple ``(logits, aux)``, a dict
``{"logits": ..., "features": ...}``, or a HuggingFace ``ImageClassifierOutput`` with a
``.logits`` field. Every attribution method explains one ``(B, classes)`` tensor, chosen by

- ``output=None`` (automatic): a tensor is used as is; an object with a tensor ``.logits``
  attribute or a mapping with a ``"logits"`` key gives that; a tuple or list gives its first
  element (recursively); anything else is a clear error asking for ``output=``;
- ``output=<int>``: that element of a tuple or list;
- ``output=<str>``: that key of a mapping, or that attribute of an object;
- ``output=<callable>``: ``f(model_output) -> Tensor``.

:func:`selected_outputs` applies the selector to every forward pass of a model inside a
block (through :func:`rightfocus.hooks.patched_forward`), so methods that call the model many
times (IG, occlusion, RISE, Score-CAM, the surrogates) all see the selected tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Union

from torch import Tensor, nn

from rightfocus import hooks

__all__ = ["OutputSelector", "check_output_selector", "select_output", "selected_outputs"]

OutputSelector = Union[None, int, str, Callable[[Any], Tensor]]  # noqa: UP007


def check_output_selector(output: Any) -> OutputSelector:
    """Validate an ``output=`` value before any forward pass (type only)."""
    if output is None or callable(output):
        return output  # type: ignore[no-any-return]
    if isinstance(output, bool) or not isinstance(output, (int, str)):
        raise TypeError(
            "output must be None (automatic), an int (tuple index), a str (dict key or "
            f"attribute name) or a callable on the model's output, not {type(output).__name__}"
        )
    return output


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"{type(value).__name__} with keys {list(value)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)} ({', '.join(_describe(v) for v in value)})"
    return type(value).__name__


def _automatic(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    logits = value.get("logits") if isinstance(value, Mapping) else getattr(value, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(value, (tuple, list)) and value:
        return _automatic(value[0])
    raise TypeError(
        f"The model returned {_describe(value)}; no logits tensor could be found automatically. "
        "Pass output=<tuple index | dict key | attribute name | callable> to choose the tensor "
        "to explain."
    )


def select_output(value: Any, output: OutputSelector = None) -> Tensor:
    """The tensor that ``output`` picks from a model's return ``value`` (module docstring).

    Example:
        >>> import torch
        >>> select_output((torch.ones(2, 3), torch.zeros(2))).shape
        torch.Size([2, 3])
        >>> select_output({"logits": torch.ones(2, 3), "aux": 1}, "logits").shape
        torch.Size([2, 3])
    """
    if output is None:
        return _automatic(value)
    if callable(output):
        picked = output(value)
    elif isinstance(output, int):
        if not isinstance(value, (tuple, list)) or not -len(value) <= output < len(value):
            raise ValueError(
                f"output={output} needs a tuple or list long enough; got {_describe(value)}"
            )
        picked = value[output]
    elif isinstance(value, Mapping):
        if output not in value:
            raise ValueError(f"output={output!r} is not a key of the model's {_describe(value)}")
        picked = value[output]
    elif hasattr(value, output):
        picked = getattr(value, output)
    else:
        raise ValueError(f"output={output!r}: the model's {_describe(value)} has no such field")
    if not isinstance(picked, Tensor):
        raise TypeError(f"output={output!r} selected {_describe(picked)}, not a tensor")
    return picked


@contextmanager
def selected_outputs(model: nn.Module, output: OutputSelector = None) -> Iterator[nn.Module]:
    """Inside the block, calling ``model`` returns ``select_output(model(...), output)``."""
    check_output_selector(output)

    def make(original: Callable[..., Any]) -> Callable[..., Tensor]:
        def forward(*args: Any, **kwargs: Any) -> Tensor:
            return select_output(original(*args, **kwargs), output)

        return forward

    with hooks.patched_forward(model, make):
        yield model
