"""One registry class and the project's registries.

Every attribution method, model factory, dataset and guidance method is registered by name so
that the CLI's choices, configs and the contract tests all come from one place. Registering is
the only import-time side effect a module may have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from difflib import get_close_matches
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["DATASETS", "GUIDANCE", "METHODS", "MODELS", "Registry"]


class Registry(Generic[T]):
    """A name -> object mapping with metadata and helpful lookup errors.

    Example:
        >>> reg: Registry[type] = Registry("widget")
        >>> @reg.register("round", doc="a round widget")
        ... class Round: ...
        >>> reg.get("round") is Round
        True
        >>> reg.names()
        ['round']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **metadata: Any) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` with free-form ``metadata``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            self._meta[name] = dict(metadata)
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the known ones."""
        try:
            return self._items[name]
        except KeyError:
            close = get_close_matches(str(name), self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"Unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}"
            ) from None

    def metadata(self, name: str) -> dict[str, Any]:
        """Metadata given at registration (a copy)."""
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


METHODS: Registry[Any] = Registry("attribution method")
MODELS: Registry[Any] = Registry("model")
DATASETS: Registry[Any] = Registry("dataset")
GUIDANCE: Registry[Any] = Registry("guidance method")
