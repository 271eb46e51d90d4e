"""Executors: the registry, the conformance checks, and how `robustlaw run` stops.

The stop tests drive `python -m robustlaw.cli run` in a subprocess, signal it once a record is in
the database, and measure what happened: exit code, the driver's worker processes, the records.
Their time bounds are hang detectors, never speed requirements.
"""

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import robustlaw
from robustlaw.errors import RobustlawError
from robustlaw.executors import EXECUTORS, Executor, LocalExecutor, RayExecutor, make_executor
from robustlaw.testing.executors import check_executor

HAS_RAY = importlib.util.find_spec("ray") is not None
SRC = str(Path(robustlaw.__file__).resolve().parents[1])
HANG = 20  # seconds: a command that takes longer than this to stop is hanging

# runs of a few seconds each (most of it certification), one per task, more runs than workers
SLOW = textwrap.dedent("""
    name = "slow"
    seeds = [0, 1, 2, 3, 4, 5]
    batch_size = 1
    [data]
    n = 100
    d = 10
    [model]
    width = 64
    [fit]
    tol = 0.000001
    max_steps = 3000
""")

DOOMED = textwrap.dedent("""
    name = "doomed"
    seeds = [0, 1]
    [data]
    n = 30
    d = 5
    [model]
    family = "construction"
    construction = "single_neuron"
    size = 1
""")


# ----------------------------------------------------------------------------- registry, protocol


def test_registry_names_the_cli_choices_and_builds_each_executor():
    from robustlaw.cli import run

    choices = next(p for p in run.params if p.name == "executor").type.choices
    assert list(choices) == sorted(EXECUTORS) and {"local", "ray"} <= set(EXECUTORS)
    assert isinstance(make_executor("local", workers=3), LocalExecutor)
    assert isinstance(make_executor("ray", workers=2), RayExecutor)  # construction imports no Ray
    assert isinstance(make_executor("local"), Executor)


def test_make_executor_rejects_bad_choices():
    with pytest.raises(RobustlawError, match="--address"):
        make_executor("local", address="auto")
    with pytest.raises(RobustlawError, match=r"unknown executor 'dask' \(known: local, ray\)"):
        make_executor("dask")


def test_ray_addresses_are_checked_for_a_listener_before_ray_starts():
    import socket

    from robustlaw.executors import check_reachable

    for silent in ("127.0.0.1:9", "ray://127.0.0.1:9"):
        with pytest.raises(RobustlawError, match="no Ray cluster answers at 127.0.0.1:9"):
            check_reachable(silent)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    for unchecked in (None, "auto", "local"):
        check_reachable(unchecked)


def test_sweep_module_still_exports_the_executors():
    from robustlaw.sweep import LocalExecutor as Local, make_executor as make

    assert Local is LocalExecutor and make is make_executor


# ----------------------------------------------------------------------------- conformance


def test_local_executor_passes_the_conformance_checks():
    check_executor(lambda: LocalExecutor(workers=2))


@pytest.fixture
def ray_instance():
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_ray_executor_passes_the_conformance_checks(ray_instance):
    check_executor(lambda: RayExecutor(workers=2))  # one Ray instance for all checks: faster


class DropsFailures(LocalExecutor):
    """Broken: loses the tasks that raised."""

    def map_unordered(self, fn, tasks):
        return ((t, o) for t, o in super().map_unordered(fn, tasks) if not isinstance(o, BaseException))


class Repeats(LocalExecutor):
    """Broken: yields every outcome twice."""

    def map_unordered(self, fn, tasks):
        return (pair for pair in super().map_unordered(fn, tasks) for _ in range(2))


@pytest.mark.parametrize("make, promise", [
    (lambda: DropsFailures(workers=2), "exceptions come back"),
    (lambda: Repeats(workers=2), "each outcome once"),
    (lambda: LocalExecutor(workers=2, retries=0), "dead worker is retried"),
], ids=["drops-failures", "repeats", "never-retries"])
def test_broken_executors_fail_the_conformance_checks(make, promise):
    with pytest.raises(AssertionError, match=promise):
        check_executor(make)


def _die_once(marker, task):
    """Kill this worker process the first time it is called (for the retry test)."""
    from robustlaw.sweep import safe_run_group

    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return safe_run_group(task)


def test_local_worker_that_dies_has_its_run_retried(tmp_path):
    import functools

    from robustlaw.sweep import SweepSpec

    sweep = SweepSpec.from_dict({"seeds": [0, 1], "data": {"n": 24, "d": 6}, "model": {"width": 4},
                                 "fit": {"tol": 0.1, "max_steps": 300}})
    tasks = [[r] for r in sweep.runs]
    outcomes = list(LocalExecutor(2).map_unordered(functools.partial(_die_once, str(tmp_path / "died")), tasks))
    assert (tmp_path / "died").exists()
    assert sorted(t[0].key() for t, _ in outcomes) == sorted(r.key() for r in sweep.runs)
    assert all(isinstance(out, list) and out[0]["status"] == "ok" for _, out in outcomes)


# ----------------------------------------------------------------------------- stopping `robustlaw run`


def start_run(tmp_path: Path, spec: str = SLOW, *args: str) -> tuple[subprocess.Popen, Path]:
    (tmp_path / "spec.toml").write_text(spec)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "robustlaw.cli", "run", str(tmp_path / "spec.toml"), "--out", str(out), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), out / "results.db"


def records(db: Path) -> dict[str, str]:
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return dict(con.execute("SELECT key, record FROM runs"))
    except sqlite3.OperationalError:  # not created yet
        return {}


def wait_for_records(driver: subprocess.Popen, db: Path, at_least: int = 1, timeout: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"the sweep ended before it could be interrupted: {driver.communicate()}"
        found = records(db)
        if len(found) >= at_least:
            return found
        time.sleep(0.2)
    driver.kill()
    pytest.fail(f"no record in {db} after {timeout} s")


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    return [p for p in _pids() if _stat(p)[1] == pid]


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat(pid: int) -> tuple[str, int]:
    """(state, parent pid) of ``pid``; ("X", 0) if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "X", 0
    return fields[0], int(fields[1])


def alive(pids: list[int]) -> list[int]:
    """The pids still running (a zombie has exited; only its parent has not reaped it yet)."""
    return [p for p in pids if _stat(p)[0] not in ("X", "Z")]


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def interrupt(tmp_path: Path, *signals: signal.Signals):
    """Start the slow sweep, send ``signals`` once a record is stored; return what happened."""
    driver, db = start_run(tmp_path, SLOW, "--workers", "2")
    before = wait_for_records(driver, db)
    workers = children(driver.pid)
    sent = time.monotonic()
    for number in signals:
        driver.send_signal(number)
        time.sleep(0.05)
    try:
        _, stderr = driver.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        driver.kill()
        pytest.fail(f"the driver did not exit within {HANG} s of {signals}")
    print(f"signal -> exit: {time.monotonic() - sent:.2f} s")
    return driver.returncode, stderr, before, workers, db


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_stops_driver_and_workers_and_keeps_finished_runs(tmp_path, number):
    code, stderr, before, workers, db = interrupt(tmp_path, number)
    assert code == 130, stderr
    assert len(workers) == 2, "the driver should have had two worker processes"
    assert not wait_gone(workers, 5), "worker processes outlived their driver"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustlaw: interrupted; ") and "finished runs are kept in" in lines[0]
    after = records(db)
    assert all(after.get(k) == v for k, v in before.items()), "a finished run was lost or rewritten"
    assert int(lines[0].split()[2]) == len(after)
    if number == signal.SIGINT:  # a re-run completes the sweep, each run once, keeping the old records
        rerun, _ = start_run(tmp_path, SLOW, "--workers", "2")
        _, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, err
        final = records(db)
        assert len(final) == 6 and all(final[k] == v for k, v in after.items())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_second_sigint_exits_at_once_quietly(tmp_path):
    code, stderr, _, workers, _ = interrupt(tmp_path, signal.SIGINT, signal.SIGINT)
    assert code == 130
    assert "Traceback" not in stderr, stderr
    assert not wait_gone(workers, 10), "worker processes outlived their driver"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_driver(tmp_path):
    driver, db = start_run(tmp_path, SLOW, "--workers", "2")
    wait_for_records(driver, db)
    workers = children(driver.pid)
    assert len(workers) == 2
    driver.kill()
    driver.wait(timeout=HANG)
    assert not wait_gone(workers, 10), "worker processes outlived their SIGKILLed driver"


@pytest.mark.skipif(not HAS_RAY, reason="needs Ray")
def test_an_unreachable_ray_address_fails_fast_with_one_line(tmp_path):
    start = time.monotonic()
    driver, db = start_run(tmp_path, SLOW, "--executor", "ray", "--address", "127.0.0.1:9")
    _, stderr = driver.communicate(timeout=60)
    took = time.monotonic() - start
    assert driver.returncode == 2, stderr
    assert took < HANG, f"took {took:.0f} s to give up on a closed port"
    assert len(stderr.strip().splitlines()) == 1 and "127.0.0.1:9" in stderr
    assert not db.exists()


def test_a_sweep_where_every_run_fails_exits_1(tmp_path):
    driver, db = start_run(tmp_path, DOOMED, "--workers", "1")
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 1, stderr
    assert "every run of sweep doomed failed (2 runs)" in stderr
    assert len(records(db)) == 2
