import json

import numpy as np

from robustlaw.analysis import fit_power_law, law_fit


def test_exact_power_law_is_recovered_with_a_tight_interval():
    x = np.logspace(0, 2, 20)
    fit = fit_power_law(x, 3.0 * x**0.5)
    assert abs(fit.exponent - 0.5) < 1e-9
    assert abs(fit.prefactor - 3.0) < 1e-9
    assert fit.ci_low <= 0.5 <= fit.ci_high and fit.ci_high - fit.ci_low < 1e-6


def test_noisy_power_law_interval_covers_the_truth():
    rng = np.random.default_rng(0)
    x = np.repeat(np.logspace(0, 2, 8), 5)
    y = 2.0 * x**0.3 * np.exp(0.1 * rng.standard_normal(len(x)))
    fit = fit_power_law(x, y)
    assert fit.ci_low < 0.3 < fit.ci_high
    assert 0 < fit.ci_high - fit.ci_low < 0.2


def test_too_few_points_give_no_fit():
    assert fit_power_law([1, 2], [1, 2]) is None
    assert fit_power_law([2, 2, 2], [1, 2, 3]) is None


def test_law_fit_uses_only_runs_that_reached_their_target():
    rows = [{"status": "ok", "reached": True, "law_scale": s, "lip_lower": 2 * s} for s in (1.0, 2.0, 4.0)]
    rows.append({"status": "ok", "reached": False, "law_scale": 8.0, "lip_lower": 1000.0})
    rows.append({"status": "error"})
    fit = law_fit(rows)
    # Lip = 2 sqrt(nd/P): exponent 1 against the axis sqrt(nd/P)
    assert fit.points == 3 and abs(fit.exponent - 1.0) < 1e-9


def test_series_are_fitted_apart_never_pooled():
    from robustlaw.analysis import law_fits

    train = [{"status": "ok", "reached": True, "mode": "train", "law_scale": s, "lip_lower": 10 * s**0.4}
             for s in (1.0, 2.0, 4.0)]
    smooth = [{"status": "ok", "reached": True, "mode": "smooth", "law_scale": s, "lip_lower": 3 * s}
              for s in (1.0, 2.0, 4.0)]
    caps = [{"status": "ok", "reached": True, "mode": "construction", "construction": "caps", "law_scale": s,
             "lip_lower": 10.0} for s in (1.0, 2.0, 4.0)]
    fits = law_fits(train + smooth + caps)
    assert set(fits) == {"train", "smooth", "caps"}
    # Lip = C sqrt(nd/P)^e is exponent e against the axis sqrt(nd/P)
    assert abs(fits["train"].exponent - 0.4) < 1e-9
    assert abs(fits["smooth"].exponent - 1.0) < 1e-9
    assert abs(fits["caps"].exponent) < 1e-9


def test_bootstrap_interval_does_not_depend_on_point_order():
    rng = np.random.default_rng(1)
    x = np.repeat(np.logspace(0, 2, 6), 3)
    y = 2.0 * x**0.4 * np.exp(0.2 * rng.standard_normal(len(x)))
    y[4] = y[3]  # ties in x and y must not matter either
    x[4] = x[3]
    reference = fit_power_law(x, y)
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(len(x))
        assert fit_power_law(x[order], y[order]) == reference
    assert fit_power_law(np.append(x, np.nan), np.append(y, 1.0)) == reference  # unusable points dropped


def spec_row(n, k, mode="train", lip=None, P=None, **model):
    """A completed record with its spec JSON (as the store holds it): width-k two-layer net, d = 20."""
    import json

    spec = {"data": {"distribution": "sphere", "n": n, "d": 20}, "fit": {"mode": mode},
            "model": {"family": "two_layer", "options": {"width": k, **model}}}
    x = (n / k) ** 0.5
    return {"status": "ok", "reached": True, "spec": json.dumps(spec), "mode": mode, "n": n, "d": 20,
            "P": P or k * 22, "seed": 0, "depth": 2, "bln20": x, "law_scale": (n * 20 / (P or k * 22)) ** 0.5,
            "lip_lower": lip(n, x) if lip else 1.3 * x + 0.5, "lip_upper": 10 * x}


def test_bln20_line_fit_per_n_matches_numpy_polyfit_on_hand_data():
    from robustlaw.analysis import fit_line, law_fits

    rng = np.random.default_rng(3)
    noise = {}
    rows = []
    for n in (100, 400):
        for k in (5, 10, 20, 50, n):
            noise[n, k] = 0.2 * rng.standard_normal()
            rows.append(spec_row(n, k, lip=lambda n, x, e=noise[n, k]: (1 + n / 400) * x + 0.3 + e))
    fits = law_fits(rows, axis="bln20")
    assert set(fits) == {"train, n=100", "train, n=400"}
    for n in (100, 400):
        x = np.array([(n / k) ** 0.5 for k in (5, 10, 20, 50, n)])
        y = np.array([(1 + n / 400) * v + 0.3 + noise[n, k] for v, k in zip(x, (5, 10, 20, 50, n))])
        slope, intercept = np.polyfit(x, y, 1)
        r2 = 1 - np.sum((y - slope * x - intercept) ** 2) / np.sum((y - y.mean()) ** 2)
        fit = fits[f"train, n={n}"]
        assert fit.points == 5
        assert np.allclose([fit.slope, fit.intercept, fit.r2], [slope, intercept, r2], rtol=1e-10)
    exact = fit_line([1, 2, 3], [2.5, 4.5, 6.5])
    assert np.allclose([exact.slope, exact.intercept, exact.r2], [2.0, 0.5, 1.0])


def test_curves_collapse_only_when_one_line_fits_every_n():
    from robustlaw.analysis import collapses

    same = [spec_row(n, k) for n in (100, 200, 400) for k in (5, 10, 20, n)]
    [verdict] = collapses(same)
    assert verdict.collapsed and verdict.ns == (100, 200, 400) and abs(verdict.pooled.slope - 1.3) < 1e-9
    apart = [spec_row(n, k, lip=lambda n, x: n / 100 * x) for n in (100, 200, 400) for k in (5, 10, 20, n)]
    [verdict] = collapses(apart)
    assert not verdict.collapsed and "do not collapse" in verdict.describe()
    assert all(f.r2 > 0.999 for f in verdict.per_n.values())


def test_series_split_by_any_varying_option_but_not_by_the_size_knob():
    from robustlaw.analysis import by_series, split_fields

    # "channels" stands for any family's own option: a string option splits, the width (P changes) does not
    rows = [spec_row(100, k, channels=c) for k in (5, 10, 20) for c in ("rgb", "grey")]
    assert split_fields(rows) == ["model.channels"]
    assert sorted(by_series(rows)) == ["train, channels=grey", "train, channels=rgb"]
    # a numeric option that leaves P alone (a learning-rate-like knob) splits too
    rows = [spec_row(100, k, temperature=t) for k in (5, 10) for t in (0.5, 2.0)]
    assert split_fields(rows) == ["model.temperature"]
    # n, d and mode split; depth splits deep nets of equal widths
    rows = [spec_row(n, k, mode=m) for n in (100, 200) for k in (5, 10) for m in ("train", "smooth")]
    assert sorted(split_fields(rows)) == ["data.n", "fit.mode"] and len(by_series(rows)) == 4


def test_axes_are_drawn_only_when_their_columns_are_present():
    from robustlaw.analysis import present_axes

    rows = [spec_row(100, k) for k in (5, 10, 20)]
    assert [a.name for a in present_axes(rows)] == ["bs21", "bln20"]
    dense = [{**r, "nonzero": r["P"], "law_scale_deff": r["law_scale"] / 2} for r in rows]
    assert [a.name for a in present_axes(dense)] == ["bs21", "bln20", "deff"]  # nonzero = P repeats bs21
    pruned = [{**r, "nonzero": r["P"] // 4} for r in rows]
    assert [a.name for a in present_axes(pruned)] == ["bs21", "bln20", "nonzero"]
    assert abs(present_axes(pruned)[-1].value(pruned[0]) - (100 * 20 / (110 // 4)) ** 0.5) < 1e-12


def test_a_narrow_axis_gives_no_power_law():
    """x spanning less than MIN_SPREAD (an axis moving only through an estimate) is not fitted; the same
    points spread over a factor 4 are, with the exponent numpy's polyfit gives."""
    from robustlaw.analysis import MIN_SPREAD, fit_power_law

    y = [1.0, 2.0, 3.0, 5.0]
    assert fit_power_law([1.0, 1.05, 1.1, MIN_SPREAD * 0.99], y) is None
    x = [1.0, 2.0, 3.0, 4.0]
    fit = fit_power_law(x, y)
    assert abs(fit.exponent - np.polyfit(np.log(x), np.log(y), 1)[0]) < 1e-12


def test_a_pruned_nets_density_is_a_size_knob_not_a_series():
    """Density changes the non-zero count at a fixed P: the x axis shows it, so it does not split series
    (the mask source does)."""
    from robustlaw.analysis import split_fields

    def rec(mask, density, nonzero):
        spec = {"model": {"family": "pruned", "options": {"mask": mask, "density": density}}}
        return {"status": "ok", "spec": json.dumps(spec), "P": 2200, "nonzero": nonzero, "depth": 2}

    records = [rec(m, dens, int(2000 * dens) + 200) for m in ("random", "snip") for dens in (0.1, 0.4)]
    assert split_fields(records) == ["model.mask"]
