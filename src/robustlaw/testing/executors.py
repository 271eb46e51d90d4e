"""Conformance checks for executors, the analogue of scikit-learn's ``check_estimator``.

``check_executor(make)`` runs small tasks through executors built by ``make`` and raises an
AssertionError naming the broken promise of the :class:`robustlaw.executors.Executor` contract:

- every task's outcome comes back exactly once;
- an exception raised by a task comes back as that exception, and the other tasks go on;
- a task whose worker process dies (it calls ``os._exit``, the first time only) is retried and
  then succeeds;
- closing the iterator early returns promptly, without waiting for a long task still running.

The task functions are module-level, so any executor that pickles them can run them. The
worker-death check marks the first death with a file in a temporary folder, so workers must see
the driver's file system (true of local workers and of a local Ray instance). It kills a worker
process, so the executor must run tasks in processes other than the caller's (LocalExecutor with
workers >= 2, not inline).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from robustlaw.executors import Executor

Task = tuple[str, object]

#: Closing the iterator must return within this many seconds (a hang detector, not a speed test).
CLOSE_WITHIN = 30.0
LONG_TASK_SECONDS = 300.0


class TaskFailed(ValueError):
    """What the ``fail`` task raises."""


def run_task(task: Task):
    """The one task function: ``("square", x)`` returns x * x; ``("fail", x)`` raises
    :class:`TaskFailed`; ``("die_once", path)`` kills its process unless ``path`` exists (creating
    it first), else returns "survived"; ``("sleep", s)`` sleeps s seconds and returns s."""
    kind, arg = task
    if kind == "square":
        return arg * arg
    if kind == "fail":
        raise TaskFailed(f"task {arg} fails on purpose")
    if kind == "die_once":
        marker = Path(str(arg))
        if not marker.exists():
            marker.touch()
            os._exit(3)
        return "survived"
    if kind == "sleep":
        time.sleep(float(arg))
        return arg
    raise ValueError(f"unknown task kind {kind!r}")


def _collect(executor: Executor, tasks: list[Task], check: str) -> dict[Task, object]:
    """Run ``tasks``; assert each comes back exactly once; return outcome by task."""
    seen: Counter = Counter()
    outcomes: dict[Task, object] = {}
    for task, outcome in executor.map_unordered(run_task, tasks):
        seen[tuple(task)] += 1
        outcomes[tuple(task)] = outcome
    missing = [t for t in tasks if seen[t] == 0]
    repeated = [t for t in tasks if seen[t] > 1]
    unknown = [t for t in seen if t not in set(tasks)]
    assert not (missing or repeated or unknown), (
        f"{check}: every task's outcome must come back exactly once; missing {missing}, repeated {repeated}, "
        f"unknown {unknown}")
    return outcomes


def check_each_outcome_once(executor: Executor) -> None:
    tasks = [("square", i) for i in range(8)]
    outcomes = _collect(executor, tasks, "each outcome once")
    wrong = {t: o for t, o in outcomes.items() if o != t[1] * t[1]}
    assert not wrong, f"each outcome once: wrong results {wrong} (expected fn(task))"


def check_exceptions_come_back(executor: Executor) -> None:
    tasks = [("square", 1), ("fail", 7), ("square", 2), ("fail", 8)]
    outcomes = _collect(executor, tasks, "exceptions come back")
    for task in tasks[1::2]:
        outcome = outcomes[task]
        assert isinstance(outcome, TaskFailed) and f"task {task[1]} fails" in str(outcome), (
            f"exceptions come back: task {task} raised TaskFailed, but its outcome is {outcome!r}")
    assert outcomes[("square", 1)] == 1 and outcomes[("square", 2)] == 4, (
        f"exceptions come back: the other tasks must go on, got {outcomes}")


def check_dead_worker_is_retried(executor: Executor) -> None:
    with tempfile.TemporaryDirectory(prefix="robustlaw-check-") as folder:
        marker = os.path.join(folder, "died")
        tasks = [("die_once", marker), ("square", 3), ("square", 4)]
        outcomes = _collect(executor, tasks, "dead worker is retried")
        assert os.path.exists(marker), "dead worker is retried: the die_once task never ran"
    bad = {t: o for t, o in outcomes.items() if isinstance(o, BaseException)}
    assert not bad, f"dead worker is retried: tasks whose worker died must be retried and succeed, got {bad}"
    assert outcomes[tasks[0]] == "survived", f"dead worker is retried: got {outcomes[tasks[0]]!r}"


def check_close_stops_promptly(executor: Executor) -> None:
    iterator = iter(executor.map_unordered(run_task, [("square", 5), ("sleep", LONG_TASK_SECONDS)]))
    first = next(iterator)
    assert first == (("square", 5), 25), f"close stops promptly: expected the quick task first, got {first!r}"
    start = time.monotonic()
    close = getattr(iterator, "close", None)
    assert close is not None, "close stops promptly: map_unordered must return a closable iterator (a generator)"
    close()
    took = time.monotonic() - start
    assert took < CLOSE_WITHIN, (
        f"close stops promptly: closing the iterator took {took:.0f} s; it must stop the workers, not wait for them")


CHECKS: tuple[Callable[[Executor], None], ...] = (
    check_each_outcome_once, check_exceptions_come_back, check_dead_worker_is_retried, check_close_stops_promptly)


def check_executor(make: Callable[[], Executor], checks: Iterable[Callable[[Executor], None]] = CHECKS) -> None:
    """Run each check on a fresh executor from ``make``; raise AssertionError at the first broken promise."""
    for check in checks:
        executor = make()
        assert isinstance(executor, Executor), (
            f"{type(executor).__name__} is not an Executor (needs map_unordered(fn, tasks) and retries)")
        check(executor)
