"""Named registries: one per extension point (activations, domains, data sources, model families,
Lipschitz methods, executors).

A registry maps a name to a plug-in. The command line's choices and the spec validation read it,
so a plug-in becomes usable everywhere by one ``register`` call::

    from robustlaw.activations import ACTIVATIONS, Activation

    @ACTIVATIONS.register("gelu")
    class GELU(Activation): ...
"""

from __future__ import annotations

import dataclasses

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robustlaw.errors import SpecError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one kind, by name, in registration order. ``what`` names the kind in errors and
    ``field`` the spec field that selects one (e.g. "model.activation")."""

    def __init__(self, what: str, field: str):
        self.what, self.field = what, field
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """``register(name, item)``, or ``@register(name)`` as a decorator. A name is registered once."""
        def add(value: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} is registered already")
            self._items[name] = value
            return value

        return add if item is None else add(item)

    def remove(self, name: str) -> T:
        """Unregister ``name`` (e.g. a plug-in registered for one test) and return it."""
        return self._items.pop(name)

    def get(self, name: str) -> T:
        """The plug-in called ``name``; a one-line :class:`SpecError` naming the known ones otherwise."""
        if name not in self._items:
            raise SpecError(self.field, f"unknown {self.what} {name!r} (known: {', '.join(self._items)})")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def values(self) -> list[T]:
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def build_variant(cls: type, selector: str, variants: Registry, fields: dict, strict: bool = True):
    """``cls(**common, options=...)`` from flat ``fields``: the fields of ``cls`` go to it, the rest to the
    ``options`` dataclass of the variant that ``fields[selector]`` (or the class default) picks. A field
    neither has is an error if ``strict``, else dropped (a grid's other variants may have it)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"options"}
    common = {k: v for k, v in fields.items() if k in names}
    default = next(f.default for f in dataclasses.fields(cls) if f.name == selector)
    options = variants.get(common.get(selector, default)).options
    own = {f.name for f in dataclasses.fields(options)}
    stray = sorted(set(fields) - names - own)
    if strict and stray:
        section = variants.field.split(".")[0]
        raise SpecError(f"{section}.{stray[0]}", f"not a field of {selector} {common.get(selector, default)!r}")
    return cls(**common, options=options(**{k: v for k, v in fields.items() if k in own}))


def settle_options(spec, name: str, variants: Registry):
    """For a frozen spec whose variant ``name`` of ``variants`` has an ``options`` dataclass: fill
    ``spec.options`` with that dataclass's defaults if None, refuse another variant's options with one
    line, and return the variant."""
    variant = variants.get(name)
    if spec.options is None:
        object.__setattr__(spec, "options", variant.options())
    if not isinstance(spec.options, variant.options):
        raise SpecError(variants.field, f"{name} takes {variant.options.__name__}, got {type(spec.options).__name__}")
    return variant
