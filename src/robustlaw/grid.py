"""Grids of runs from spec tables: each field one value or a list of values (an axis).

A section with variants (``[data]``: the ``distribution`` with its own fields; ``[model]``: the
``family`` with its own fields) is written flat: ``distribution = "mixture"`` with ``components = 10``
beside it. Each variant's fields go to its ``options``; a field no chosen variant has is an error,
and a grid point that a variant's missing field would repeat is kept once. Every run is built
(and so validated) before the first one starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass

from robustlaw.data import DISTRIBUTIONS, DataSpec
from robustlaw.errors import SpecError
from robustlaw.experiment import CertifySpec, RunSpec
from robustlaw.families import FAMILIES, ModelSpec
from robustlaw.fitting import FitSpec
from robustlaw.registry import Registry, build_variant


@dataclass(frozen=True)
class Section:
    """A spec table read into ``cls``; ``selector`` names the field that picks a variant of ``variants``
    (each with an ``options`` dataclass), or is empty for a section without variants."""

    name: str
    cls: type
    selector: str = ""
    variants: Registry | None = None

    def common(self) -> dict[str, type]:
        hints = typing.get_type_hints(self.cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(self.cls) if f.name != "options"}

    def own(self, variant: str) -> dict[str, type]:
        """The fields of one variant's options."""
        if not self.selector:
            return {}
        options = self.variants.get(variant).options
        hints = typing.get_type_hints(options)
        return {f.name: hints[f.name] for f in dataclasses.fields(options)}

    def types(self) -> dict[str, type]:
        out = self.common()
        for variant in (self.variants or []):
            out.update(self.own(variant))
        return out

    def build(self, fields: dict):
        """The section's object for one grid point (variant fields it does not have are dropped)."""
        if not self.selector:
            return self.cls(**fields)
        return build_variant(self.cls, self.selector, self.variants, fields, strict=False)

    def _default_variant(self) -> str:
        return next(f.default for f in dataclasses.fields(self.cls) if f.name == self.selector)


SECTIONS = (Section("data", DataSpec, "distribution", DISTRIBUTIONS), Section("model", ModelSpec, "family", FAMILIES),
            Section("fit", FitSpec), Section("certify", CertifySpec))


def _coerce(where: str, kind, value):
    """Check one value against its field type; integers are accepted as floats."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    else:  # tuple[int, ...]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        noun = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, "a list of integers")
        raise SpecError(where, f"must be {noun}, got {value!r}")
    return value


def axes(section: Section, table) -> dict[str, list]:
    """The values each field of one section takes: one value, or several for an axis."""
    if not isinstance(table, dict):
        raise SpecError(section.name, f"must be a table, got {table!r}")
    types = section.types()
    out = {}
    for name, value in table.items():
        where = f"{section.name}.{name}"
        if name not in types:
            raise SpecError(where, f"unknown field (known: {', '.join(types)})")
        listy = typing.get_origin(types[name]) is tuple
        is_axis = isinstance(value, list) and (not listy or (value and all(isinstance(v, list) for v in value)))
        values = value if is_axis else [value]
        if not values:
            raise SpecError(where, "an axis needs at least one value")
        out[name] = [_coerce(where, types[name], v) for v in values]
    _check_variant_fields(section, out)
    return out


def _check_variant_fields(section: Section, table_axes: dict[str, list]) -> None:
    """A variant's own field is an error unless some chosen variant has it."""
    if not section.selector:
        return
    chosen = table_axes.get(section.selector, [section._default_variant()])
    for variant in chosen:
        section.variants.get(variant)
    allowed = set(section.common()).union(*(section.own(v) for v in chosen))
    for name in table_axes:
        if name not in allowed:
            owners = [v for v in section.variants if name in section.own(v)]
            raise SpecError(f"{section.name}.{name}",
                            f"only for {section.selector} {' or '.join(owners)}, not {', '.join(chosen)}")


def expand(spec: dict, name: str, seeds: list[int]) -> list[RunSpec]:
    """Every run of the grid (the product of all axes, then the seeds), each validated, once each."""
    per_section = [(s, axes(s, spec.get(s.name, {}))) for s in SECTIONS]
    flat = [(s, field, values) for s, section_axes in per_section for field, values in section_axes.items()]
    runs: dict[str, RunSpec] = {}
    for combo in itertools.product(*(values for _, _, values in flat)):
        fields: dict[str, dict] = {s.name: {} for s in SECTIONS}
        for (section, field, _), value in zip(flat, combo):
            fields[section.name][field] = value
        parts = {s.name: s.build(fields[s.name]) for s in SECTIONS}
        for seed in seeds:
            run = RunSpec(seed=seed, sweep=name, **parts)
            runs.setdefault(run.key(), run)
    return list(runs.values())
