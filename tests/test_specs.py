"""Every grid point is validated before the first run: an impossible value is one SpecError naming its
field, raised while the spec is read (so `robustlaw run` exits 2 before any work)."""

from pathlib import Path

import pytest

from robustlaw.errors import SpecError
from robustlaw.sweep import SweepSpec


@pytest.mark.parametrize("spec, field, words", [
    ({"data": {"distribution": "mixture", "components": 0}}, "data.components", "integer >= 1"),
    ({"data": {"distribution": "mixture", "spread": -1.0}}, "data.spread", "> 0"),
    ({"data": {"distribution": "manifold", "d": 5, "intrinsic_dim": 5}}, "data.intrinsic_dim", "below d = 5"),
    ({"data": {"distribution": "manifold", "d": 20, "intrinsic_dim": [3, 25]}}, "data.intrinsic_dim", "below d"),
    ({"data": {"n": 10**20}}, "data.n", "[2, 1e+07]"),
    ({"data": {"n": 10**6, "d": 10**8}}, "data.n", "values exceed"),
    ({"seeds": [-1]}, "seeds", "[0, 2^63)"),
    ({"seeds": [2**63]}, "seeds", "[0, 2^63)"),
    ({"seeds": [0, 0]}, "seeds", "repeats"),
    ({"model": {"width": 10**8}}, "model.width", "parameters exceed"),
    ({"model": {"family": "mlp", "widths": [[64, 10**7]]}}, "model.width", "parameters exceed"),
    ({"model": {"family": "construction", "construction": "hexagons"}}, "model.construction", "unknown construction"),
    ({"model": {"family": "construction", "construction": "rbf", "width": 3}}, "model.width", "only for family"),
    ({"data": {"spread": 0.5}}, "data.spread", "only for distribution mixture"),
    ({"certify": {"domain": "local"}}, "certify.radius", "radius > 0"),
    ({"certify": {"domain": "torus"}}, "certify.domain", "unknown domain"),
    ({"certify": {"search_points": 64}}, "certify.search_points", "unknown field"),
])
def test_impossible_grid_points_are_refused_before_any_run(spec, field, words):
    with pytest.raises(SpecError) as info:
        SweepSpec.from_dict(spec)
    assert info.value.field == field and words in str(info.value)


def test_a_variant_field_applies_to_the_variants_that_have_it():
    sweep = SweepSpec.from_dict({"data": {"distribution": ["sphere", "mixture"], "components": [2, 4]}})
    # the sphere does not have components: it is one run, the mixture two
    assert sorted((r.data.distribution, getattr(r.data.options, "components", None)) for r in sweep.runs) == [
        ("mixture", 2), ("mixture", 4), ("sphere", None)]


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_example_expands_and_validates(path):
    """Each spec in examples/ reads, expands and validates every grid point (what `robustlaw run` does before
    its first run), with at least one run per grid."""
    from robustlaw.sweep import SweepSpec

    sweep = SweepSpec.from_toml(path)
    assert sweep.runs and len({r.key() for r in sweep.runs}) == len(sweep.runs)
