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

:func:`with_output` configures the selector once for everything else: it makes the model
itself return the selected tensor, so training (the engine's ``model.output`` setting),
guidance, metrics, MC prediction and the studio all call it like a plain classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Union

from torch import Tensor, nn

from rightfocus import hooks

__all__ = [
    "OutputSelector",
    "check_output_selector",
    "output_selector",
    "select_output",
    "selected_outputs",
    "with_output",
    "without_output",
]

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


# --- the selector configured once: the model returns the selected tensor ------------------------

_SELECTOR = "_rightfocus_output"


def _rebuild(base: type[nn.Module]) -> nn.Module:
    """Unpickling / deep-copy counterpart of ``_reduce_ex``: an empty selecting instance."""
    cls = _selecting_class(base)
    return cls.__new__(cls)  # type: ignore[no-any-return]


_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def _selecting_class(base: type[nn.Module]) -> type[nn.Module]:
    """The subclass of ``base`` whose ``forward`` returns the selected tensor (one per base)."""
    if base in _CLASSES:
        return _CLASSES[base]

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        return select_output(base.forward(self, *args, **kwargs), self.__dict__[_SELECTOR])

    def reduce_ex(self: nn.Module, protocol: Any) -> tuple[Any, ...]:
        # the class is made at run time, so pickle / deepcopy rebuild it from its base
        return (_rebuild, (base,), self.__dict__.copy())

    namespace = {
        "forward": forward,
        "__reduce_ex__": reduce_ex,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "_rightfocus_base": base,
    }
    _CLASSES[base] = type(base.__name__, (base,), namespace)
    return _CLASSES[base]


def _base_class(model: nn.Module) -> type[nn.Module]:
    return type(model).__dict__.get("_rightfocus_base", type(model))  # type: ignore[no-any-return]


def with_output(model: nn.Module, output: OutputSelector = None) -> nn.Module:
    """Make ``model`` return ``select_output(original_output, output)``; returns ``model``.

    The selector is configured once and every caller then sees a plain ``(B, classes)``
    tensor: training losses, guidance, metrics, MC prediction, the studio and attribution
    (whose ``output=`` then stays ``None``). The model is changed in place and stays what it
    was otherwise: an instance of its class (through a subclass with the same name that only
    overrides ``forward``), the same submodules, parameter names and ``state_dict`` keys, the
    same attributes; ``copy.deepcopy``, pickling and conversions such as
    :func:`rightfocus.bayes.to_bayesian` keep the selection. Calling it again replaces the
    selector; :func:`without_output` undoes it.

    Example:
        >>> import torch
        >>> class TwoHeads(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return {"logits": self.fc(x), "features": x}
        >>> model = with_output(TwoHeads())  # automatic: the "logits" key
        >>> model(torch.ones(2, 4)).shape, list(model.state_dict())
        (torch.Size([2, 3]), ['fc.weight', 'fc.bias'])

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``output`` is of the wrong type.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    check_output_selector(output)
    model.__dict__[_SELECTOR] = output  # not through Module.__setattr__: never a submodule
    model.__class__ = _selecting_class(_base_class(model))
    return model


def without_output(model: nn.Module) -> nn.Module:
    """Undo :func:`with_output`: ``model`` returns its original output again; returns it."""
    model.__class__ = _base_class(model)
    model.__dict__.pop(_SELECTOR, None)
    return model


def output_selector(model: nn.Module) -> tuple[bool, OutputSelector]:
    """``(configured, selector)``: whether :func:`with_output` was applied to ``model`` and with
    which selector."""
    configured = "_rightfocus_base" in type(model).__dict__
    return configured, model.__dict__.get(_SELECTOR) if configured else None
