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
    # Lip = 2 sqrt(nd/P) is exponent 1/2 in n d / P
    assert fit.points == 3 and abs(fit.exponent - 0.5) < 1e-9


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
    # Lip = C sqrt(nd/P)^e is exponent e / 2 in n d / P
    assert abs(fits["train"].exponent - 0.2) < 1e-9
    assert abs(fits["smooth"].exponent - 0.5) < 1e-9
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
