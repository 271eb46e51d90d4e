"""Conformance suites for plug-ins, shipped with the package (the analogue of scikit-learn's
``check_estimator`` / ``parametrize_with_checks``). Run them on your own method before you trust it;
robustlaw's tests run them on every built-in one.

- :func:`check_upper_bound` (``fn(model, domain) -> float``), :func:`check_lower_bound`
  (``fn(model, domain) -> (value, witness)``), :func:`check_deterministic`, :func:`check_method`
  (a registered Lipschitz method by name), over the fixed family :func:`cases`;
- :func:`check_executor` (a factory of executors): every outcome once, exceptions returned, a task whose
  worker dies retried, closing stops the workers.
"""

from robustlaw.testing.executors import check_executor

from robustlaw.testing.lipschitz import (
    Case,
    cases,
    check_deterministic,
    check_lower_bound,
    check_method,
    check_upper_bound,
    steepest_found,
)

__all__ = ["Case", "cases", "check_deterministic", "check_executor", "check_lower_bound", "check_method", "check_upper_bound",
           "steepest_found"]
