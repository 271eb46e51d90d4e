"""Grids of runs from spec tables: each field one value or a list of values (an axis).

A section with variants (``[data]``: the ``distribution`` with its own fields; ``[model]``: the
``family`` with its own fields) is written flat: ``distribution = "mixture"`` with ``components = 10``
beside it. Each variant's fields go to its ``options``; a field no chosen variant has is an error,
and a grid point that a variant's missing field would repeat is kept once. Every run is built
(and so validated) before the first one starts.

Dependent axes: a numeric field may depend on the other fields of the same grid point, written in
one of three forms (expressions are arithmetic over numbers and numeric field names, ``n``, ``d``,
``data.n``, with ``+ - * /``, ``^`` or ``**`` and parentheses; they are parsed, never executed):

- ``width = "n/d"`` or ``width = [8, "n/d", "n"]``: an expression, or a list mixing them with numbers;
- ``width = {per = "n/d", times = [1, 2, 4]}``: the expression times each factor;
- ``width = {from = "n/d", to = "n", steps = 6, scale = "log"}``: ``steps`` values from one to the
  other, evenly spaced on a log (default) or linear scale.

Integer fields are rounded to the nearest integer and repeated values kept once, per grid point.

Several grids in one spec: ``[[grid]]`` tables, each holding sections (``data.n = [...]``,
``model = {...}``) that override the spec's shared sections field by field; a grid that names a
section's variant (``model.family``) keeps only the shared fields every variant has. The sweep is
the union of the grids' runs, each run once.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
import operator
import typing
from dataclasses import dataclass

import numpy as np

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


def axes(section: Section, table) -> dict[str, list | DependentAxis]:
    """The values each field of one section takes: one value, several for an axis, or a
    :class:`DependentAxis` whose values depend on the grid point's other fields."""
    if not isinstance(table, dict):
        raise SpecError(section.name, f"must be a table, got {table!r}")
    types = section.types()
    out = {}
    for name, value in table.items():
        where = f"{section.name}.{name}"
        if name not in types:
            raise SpecError(where, f"unknown field (known: {', '.join(types)})")
        if types[name] in (int, float) and _is_dependent(value):
            out[name] = DependentAxis.read(where, types[name], value)
            continue
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


#: The operators an expression may use.
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}
#: The forms of a dependent axis written as a table, with their keys.
FORMS = {"per": {"per", "times"}, "from": {"from", "to", "steps", "scale"}}


def _is_dependent(value) -> bool:
    """A string, a table, or a list holding one: a value that refers to other fields."""
    items = value if isinstance(value, list) else [value]
    return any(isinstance(v, (str, dict)) for v in items)


def _numeric_fields() -> dict[str, list[str]]:
    """Each numeric field's bare name -> its dotted names (section.field) across the sections."""
    out: dict[str, list[str]] = {}
    for section in SECTIONS:
        for name, kind in section.types().items():
            if kind in (int, float):
                out.setdefault(name, []).append(f"{section.name}.{name}")
    return out


@dataclass(frozen=True)
class Expression:
    """Arithmetic over numbers and numeric fields of the grid point, read from ``text`` by Python's
    parser and evaluated by walking the tree (only numbers, names, + - * / ** and signs)."""

    where: str
    text: str
    tree: ast.AST
    refs: frozenset[str]

    @classmethod
    def read(cls, where: str, text) -> Expression:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = repr(text)
        if not isinstance(text, str):
            raise SpecError(where, f"must be a number or an expression such as \"n/d\", got {text!r}")
        try:
            tree = ast.parse(text.replace("^", "**"), mode="eval").body
        except (SyntaxError, ValueError):
            raise SpecError(where, f"cannot read the expression {text!r} (numbers, field names such as n and d, "
                                   "+ - * / ^ and parentheses)") from None
        refs = frozenset(_refs(where, text, tree))
        return cls(where, text, tree, refs)

    def __call__(self, env: dict[str, object]) -> float:
        try:
            value = self._walk(self.tree, env)
        except (ZeroDivisionError, OverflowError):
            value = math.nan
        if not math.isfinite(value):
            raise SpecError(self.where, f"{self.text!r} is not a finite number here ({_show(env, self.refs)})")
        return value

    def _walk(self, node: ast.AST, env: dict) -> float:
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.BinOp):
            return OPERATORS[type(node.op)](self._walk(node.left, env), self._walk(node.right, env))
        if isinstance(node, ast.UnaryOp):
            return OPERATORS[type(node.op)](self._walk(node.operand, env))
        value = env.get(_dotted(node))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SpecError(self.where, f"{self.text!r}: {_dotted(node)} has no numeric value here")
        return float(value)


def _dotted(node: ast.AST) -> str:
    """The dotted name of a Name (resolved by :func:`_refs`) or a section.field Attribute."""
    return node.resolved if hasattr(node, "resolved") else f"{node.value.id}.{node.attr}"


def _refs(where: str, text: str, node: ast.AST) -> list[str]:
    """The dotted fields the expression ``node`` refers to; any node beyond the grammar is one error line."""
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return _refs(where, text, node.left) + _refs(where, text, node.right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
        return _refs(where, text, node.operand)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return []
    fields = _numeric_fields()
    if isinstance(node, ast.Name):
        names = fields.get(node.id, [])
        if len(names) != 1:
            if names:
                raise SpecError(where, f"in {text!r}, {node.id} is ambiguous: write {' or '.join(names)}")
            raise SpecError(where, f"must be a number, or an expression over numeric fields such as n and d "
                                   f"(in {text!r}, {node.id} is not a numeric field)")
        node.resolved = names[0]
        return names
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        name = f"{node.value.id}.{node.attr}"
        if name not in {d for names in fields.values() for d in names}:
            raise SpecError(where, f"in {text!r}, {name} is not a numeric field")
        return [name]
    raise SpecError(where, f"cannot read the expression {text!r} (numbers, field names such as n and d, "
                           "+ - * / ^ and parentheses)")


def _show(env: dict, refs) -> str:
    return ", ".join(f"{r} = {env.get(r)!r}" for r in sorted(refs)) or "no fields"


@dataclass(frozen=True)
class Span:
    """``{from, to, steps, scale}``: ``steps`` values from ``start`` to ``stop``, evenly on a log or
    linear scale; or ``{per, times}``: ``start`` times each factor (``stop`` is None)."""

    start: Expression
    stop: Expression | None = None
    steps: int = 0
    scale: str = "log"
    times: tuple[float, ...] = ()

    @classmethod
    def read(cls, where: str, table: dict) -> Span:
        form = next((f for f in FORMS if f in table), None)
        if form is None or set(table) - FORMS[form]:
            raise SpecError(where, f"a table axis is {{per = \"n/d\", times = [1, 2, 4]}} or "
                                   f"{{from = \"n/d\", to = \"n\", steps = 6, scale = \"log\"}}, got {table!r}")
        if form == "per":
            times = table.get("times", [1])
            if not (isinstance(times, list) and times and all(
                    isinstance(t, (int, float)) and not isinstance(t, bool) for t in times)):
                raise SpecError(where, f"times must be a non-empty list of numbers, got {times!r}")
            return cls(Expression.read(where, table["per"]), times=tuple(float(t) for t in times))
        steps, scale = table.get("steps"), table.get("scale", "log")
        if "to" not in table:
            raise SpecError(where, "a from table needs to (and steps)")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
            raise SpecError(where, f"steps must be an integer >= 2, got {steps!r}")
        if scale not in ("log", "linear"):
            raise SpecError(where, f"scale must be \"log\" or \"linear\", got {scale!r}")
        return cls(Expression.read(where, table["from"]), Expression.read(where, table["to"]), steps, scale)

    @property
    def refs(self) -> frozenset[str]:
        return self.start.refs | (self.stop.refs if self.stop else frozenset())

    def __call__(self, env: dict) -> list[float]:
        start = self.start(env)
        if self.stop is None:
            return [start * t for t in self.times]
        stop = self.stop(env)
        if self.scale == "linear":
            return list(np.linspace(start, stop, self.steps))
        if start <= 0 or stop <= 0:
            raise SpecError(self.start.where, f"a log scale needs positive ends, got {start:g} to {stop:g}")
        return list(np.geomspace(start, stop, self.steps))


@dataclass(frozen=True)
class DependentAxis:
    """A numeric field's values at one grid point, from numbers, :class:`Expression` s and :class:`Span` s."""

    where: str
    kind: type
    items: tuple

    @classmethod
    def read(cls, where: str, kind: type, value) -> DependentAxis:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise SpecError(where, "an axis needs at least one value")
        return cls(where, kind, tuple(Span.read(where, v) if isinstance(v, dict) else Expression.read(where, v)
                                      for v in items))

    @property
    def refs(self) -> frozenset[str]:
        return frozenset().union(*(item.refs for item in self.items))

    def values(self, env: dict) -> list:
        """The field's values at the point ``env`` (dotted field -> value): rounded to integers for an
        integer field, each once, in order."""
        out = []
        for item in self.items:
            raw = item(env)
            for value in raw if isinstance(raw, list) else [raw]:
                value = int(round(value)) if self.kind is int else float(value)
                if value not in out:
                    out.append(value)
        return out


def _defaults(section: Section, fields: dict) -> dict[str, object]:
    """The section's dotted field defaults at one grid point: its common fields and its chosen variant's."""
    out = {}
    for f in dataclasses.fields(section.cls):
        if f.name != "options":
            out[f"{section.name}.{f.name}"] = f.default
    if section.selector:
        options = section.variants.get(fields.get(section.selector, section._default_variant())).options
        out.update({f"{section.name}.{f.name}": f.default for f in dataclasses.fields(options)
                    if f.default is not dataclasses.MISSING})
    return out


def _environment(fields: dict[str, dict]) -> dict[str, object]:
    env = {}
    for section in SECTIONS:
        env.update(_defaults(section, fields[section.name]))
        env.update({f"{section.name}.{k}": v for k, v in fields[section.name].items()})
    return env


def _resolve(fields: dict[str, dict], pending: list[tuple[Section, str, DependentAxis]]):
    """Every completion of the grid point ``fields`` by the dependent axes ``pending``, each evaluated
    once the fields it refers to have their values."""
    if not pending:
        yield fields
        return
    waiting = {f"{s.name}.{name}" for s, name, _ in pending}
    ready = next((p for p in pending if not (p[2].refs & waiting)), None)
    if ready is None:
        raise SpecError(pending[0][2].where, "the dependent axes refer to each other in a cycle")
    section, name, axis = ready
    rest = [p for p in pending if p is not ready]
    for value in axis.values(_environment(fields)):
        point = {k: dict(v) for k, v in fields.items()}
        point[section.name][name] = _coerce(axis.where, axis.kind, value)
        yield from _resolve(point, rest)


def _points(spec: dict):
    """The grid's points, each a {section: {field: value}} dict, independent axes first."""
    per_section = [(s, axes(s, spec.get(s.name, {}))) for s in SECTIONS]
    flat = [(s, f, v) for s, section_axes in per_section for f, v in section_axes.items() if isinstance(v, list)]
    pending = [(s, f, v) for s, section_axes in per_section for f, v in section_axes.items()
               if isinstance(v, DependentAxis)]
    for combo in itertools.product(*(values for _, _, values in flat)):
        fields: dict[str, dict] = {s.name: {} for s in SECTIONS}
        for (section, field, _), value in zip(flat, combo):
            fields[section.name][field] = value
        yield from _resolve(fields, pending)


def grids(spec: dict) -> list[tuple[str, dict]]:
    """(label, sections) of each grid: the spec's sections, or each ``[[grid]]`` table over them."""
    shared = {s.name: spec.get(s.name, {}) for s in SECTIONS}
    tables = spec.get("grid")
    if tables is None:
        return [("", shared)]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise SpecError("grid", "must be a list of tables ([[grid]] in TOML)")
    out = []
    for i, table in enumerate(tables):
        where = f"grid[{i}]"
        unknown = set(table) - set(shared)
        if unknown:
            raise SpecError(f"{where}.{sorted(unknown)[0]}", f"unknown section (known: {', '.join(shared)})")
        merged = {}
        for section in SECTIONS:
            base, over = shared[section.name], table.get(section.name, {})
            if not isinstance(over, dict) or not isinstance(base, dict):
                raise SpecError(f"{where}.{section.name}", f"must be a table, got {over!r}")
            if section.selector and section.selector in over:
                base = {k: v for k, v in base.items() if k in section.common()}
            merged[section.name] = {**base, **over}
        out.append((where, merged))
    return out


def expand(spec: dict, name: str, seeds: list[int]) -> list[RunSpec]:
    """Every run of the spec's grids (the product of all axes, dependent axes per point, then the
    seeds), each validated, once each."""
    runs: dict[str, RunSpec] = {}
    for label, sections in grids(spec):
        try:
            for fields in _points(sections):
                parts = {s.name: s.build(fields[s.name]) for s in SECTIONS}
                for seed in seeds:
                    run = RunSpec(seed=seed, sweep=name, **parts)
                    runs.setdefault(run.key(), run)
        except SpecError as error:
            if not label:
                raise
            raise SpecError(f"{label}.{error.field}", error.message) from None
    return list(runs.values())
